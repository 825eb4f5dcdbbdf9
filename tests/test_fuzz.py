"""Fuzzed input for every decoder: a valid domain object or the node's own InputError, nothing else.

Random metadata and arrays of every Arrow type the neighbours could send (and some they never
should), including near-valid ones: right sizes with wrong types, real JPEGs cut short, structs
shaped like dora-yolo's with odd contents.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dora_sam2 import codecs
from dora_sam2.domain import BACKGROUND, FOREGROUND, InputError

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.text(max_size=6), st.sampled_from(["xyxy", "xywh", "bgr8", "rgb8", "jpeg", "png", "mono8", "gray8", "webp"]),
)
metadata_values = st.one_of(scalars, st.lists(scalars, max_size=5))
metadata = st.dictionaries(
    st.sampled_from(["encoding", "width", "height", "format", "labels", "image_id", "timestamp", "object_id",
                     "label", "primitive", "other"]),
    metadata_values, max_size=8,
)

floats32 = st.floats(allow_nan=True, allow_infinity=True, width=32)
numeric_arrays = st.one_of(
    st.lists(floats32, max_size=40).map(lambda v: pa.array(v, pa.float32())),
    st.lists(st.floats(-1e4, 1e4, width=32), max_size=40).map(lambda v: pa.array(v, pa.float32())),
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.integers(0, 255), max_size=40).map(lambda v: pa.array(v, pa.uint8())),
    st.lists(st.one_of(st.none(), floats32), max_size=10).map(lambda v: pa.array(v, pa.float32())),
)
other_arrays = st.one_of(
    st.lists(st.text(max_size=4), max_size=6).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.booleans(), max_size=10).map(lambda v: pa.array(v, pa.bool_())),
    st.just(pa.array([], pa.null())),
    st.binary(max_size=64),
)
structs = st.builds(
    lambda rows, field_a, field_b, inner: pa.array(
        [{field_a: inner, field_b: [str(x) for x in inner]} for _ in range(rows)]
    ) if rows else pa.array([], pa.struct([(field_a, pa.list_(pa.float64()))])),
    st.integers(0, 2), st.sampled_from(["bbox", "points", "box", "conf"]), st.sampled_from(["labels", "conf"]),
    st.lists(st.floats(-1e3, 1e3), max_size=12),
)
any_value = st.one_of(numeric_arrays, other_arrays, structs)


def decoded_or_input_error(decoder, input_id, value, meta):
    try:
        return decoder(input_id, value, meta)
    except InputError as error:
        text = str(error)
        assert text.startswith(f"input '{input_id}': ") and "\n" not in text
        return None


@st.composite
def image_messages(draw):
    """Mostly near-valid raw or encoded images, plus anything at all."""
    kind = draw(st.sampled_from(["raw", "encoded", "anything"]))
    meta = draw(metadata)
    if kind == "raw":
        w, h = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        encoding = draw(st.sampled_from(list(codecs.RAW_ENCODINGS)))
        size = w * h * codecs.RAW_ENCODINGS[encoding] + draw(st.sampled_from([0, 0, 0, -1, 1, 7]))
        meta.update(encoding=encoding, width=w, height=h)
        return pa.array(np.frombuffer(draw(st.binary(min_size=max(size, 0), max_size=max(size, 0))), np.uint8)), meta
    if kind == "encoded":
        ext = draw(st.sampled_from([".png", ".jpg", ".bmp", ".webp"]))
        image = np.full((draw(st.integers(1, 20)), draw(st.integers(1, 20)), 3), draw(st.integers(0, 255)), np.uint8)
        data = cv2.imencode(ext, image)[1].ravel()
        cut = draw(st.integers(0, len(data)))
        meta["encoding"] = draw(st.sampled_from(["png", "jpeg", "jpg", "bmp", "webp"]))
        return pa.array(data[:cut] if draw(st.booleans()) else data), meta
    return draw(any_value), meta


@FUZZ
@given(image_messages())
def test_frame_decoder(message):
    value, meta = message
    frame = decoded_or_input_error(codecs.decode_frame, "image", value, meta)
    if frame is not None:
        assert frame.rgb.dtype == np.uint8 and frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3
        assert frame.width > 0 and frame.height > 0


@FUZZ
@given(any_value, metadata)
def test_box_decoder(value, meta):
    prompt = decoded_or_input_error(codecs.decode_boxes, "bbox", value, meta)
    if prompt is not None:
        corners = prompt.points
        assert np.isfinite(corners).all()
        assert (corners[:, 1] > corners[:, 0]).all()  # x2 > x1 and y2 > y1
        assert len(prompt.class_names) == prompt.num_objects


@FUZZ
@given(any_value, metadata)
def test_point_decoder(value, meta):
    prompt = decoded_or_input_error(codecs.decode_points, "points", value, meta)
    if prompt is not None:
        assert prompt.num_objects == 1 and np.isfinite(prompt.points).all()
        assert set(prompt.point_labels.ravel().tolist()) <= {FOREGROUND, BACKGROUND}
