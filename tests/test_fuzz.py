"""Fuzzed input for every decoder: a valid domain object or the node's own InputError, nothing else.

Random metadata of every type dora carries (and some it does not: None, ints past int64, infinities)
and arrays of every Arrow type the neighbours could send, including near-valid ones: right sizes with
wrong types, real JPEGs cut short, headers that declare huge images, structs shaped like dora-yolo's
with odd contents, dora-sam2's own answers with odd metadata, and the click page's JSON bodies.

FUZZ_EXAMPLES (default 500) sets the examples per decoder; BENCHMARKS.md gives the count of a long run.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections import Counter
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dora_sam2 import codecs, masks
from dora_sam2.click_requests import click_message, parse_body
from dora_sam2.domain import BACKGROUND, FOREGROUND, InputError
from dora_sam2.settings import Limits

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70), st.integers(-(2**40), 2**40), st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("inf"), -float("inf"), float("nan"), 1e300]),
    st.text(max_size=6), st.sampled_from(["xyxy", "xywh", "bgr8", "rgb8", "jpeg", "png", "mono8", "gray8", "webp",
                                          "union", "stack", "image", "image_left"]),
    st.datetimes(timezones=st.just(timezone.utc)), st.datetimes(),
)
metadata_values = st.one_of(scalars, st.lists(scalars, max_size=5), st.lists(st.lists(scalars, max_size=2), max_size=2))
metadata = st.dictionaries(
    st.sampled_from(["encoding", "width", "height", "format", "labels", "image_id", "timestamp", "object_id",
                     "label", "primitive", "other", "scores", "track_ids", "mask_layout", "num_masks"]),
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


def png_header(width: int, height: int) -> bytes:
    """A PNG that is all header: what a hostile neighbour sends to make a decoder allocate."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 8)) + chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    return b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + b"\x01\x22\x00" * 3


def bmp_header(width: int, height: int) -> bytes:
    return b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, width, height) + b"\x00" * 28


def on_event(reader):
    """A reader of whole dora events (masks.py's helpers) as a decoder of (input id, value, metadata)."""
    return lambda input_id, value, meta: reader({"id": input_id, "value": value, "metadata": meta})


def decoder_and_helpers(decoder, helpers, input_id, value, meta):
    """What the node's `decoder` and each of masks.py's helpers for consumers (readers of whole events)
    make of one message: each a value, or None where it refused with the node's InputError."""
    return (decoded_or_input_error(decoder, input_id, value, meta),
            [decoded_or_input_error(on_event(helper), input_id, value, meta) for helper in helpers])


@st.composite
def image_messages(draw):
    """Mostly near-valid raw or encoded images, headers that declare any size, plus anything at all."""
    kind = draw(st.sampled_from(["raw", "encoded", "header", "anything"]))
    if kind == "header":
        make = draw(st.sampled_from([png_header, jpeg_header, bmp_header]))
        size = st.integers(0, 65535) if make is jpeg_header else st.integers(0, 2**31 - 1)
        data = make(draw(size), draw(size))
        data = data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
        return pa.array(np.frombuffer(data, np.uint8)), {"encoding": draw(st.sampled_from(["png", "jpeg", "bmp"]))}
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
def test_frame_decoders(message):
    """The node's, the click page's and the rerun viewer's frame reader, and masks.frame_pixels."""
    frame, [pixels] = decoder_and_helpers(codecs.decode_frame, [masks.frame_pixels], "image", *message)
    if frame is not None:
        assert frame.rgb.dtype == np.uint8 and frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3
        assert frame.width > 0 and frame.height > 0
    assert (pixels is None) == (frame is None)


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
        assert prompt.points.shape[1] <= Limits().max_points


text_values = st.one_of(
    any_value,
    st.lists(st.text(max_size=40), max_size=30).map(lambda texts: pa.array(texts, pa.string())),
    st.lists(st.binary(max_size=40), max_size=5).map(lambda items: pa.array(items, pa.binary())),
    st.binary(max_size=60).map(lambda data: pa.array(np.frombuffer(data, np.uint8))),
)


@FUZZ
@given(text_values, st.one_of(metadata, st.fixed_dictionaries({"boxes": st.lists(st.floats(), max_size=12)})))
def test_text_decoder(value, meta):
    phrases = decoded_or_input_error(codecs.decode_text, "text", value, meta)
    if phrases is not None:
        assert len(phrases.texts) <= Limits().max_phrases and len(set(phrases.texts)) == len(phrases.texts)
        assert all(text and text == text.strip() and "," not in text and text.isprintable() for text in phrases.texts)
        if phrases.exemplars is not None:
            assert np.isfinite(phrases.exemplars).all() and len(phrases.exemplar_labels) == len(phrases.exemplars)


REMOVE_BOUND = Limits(max_remove=8)  # small, so that messages on both sides of it are common
id_arrays = st.one_of(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20).map(pa.array),
    st.lists(st.integers(0, 2**64 - 1), min_size=7, max_size=9).map(lambda v: pa.array(v, pa.uint64())),  # at the bound
    st.lists(st.one_of(st.none(), st.integers(0, 9)), max_size=10).map(lambda v: pa.array(v, pa.int8())),
)


@FUZZ
@given(st.one_of(any_value, id_arrays), metadata)
def test_track_id_decoder(value, meta):
    ids = decoded_or_input_error(lambda i, v, m: codecs.decode_track_ids(i, v, REMOVE_BOUND), "remove", value, meta)
    if ids is not None:
        assert all(isinstance(i, int) for i in ids) and len(ids) <= REMOVE_BOUND.max_remove


control_events = st.tuples(
    st.sampled_from(["remove", "reset", "text", "points"]),
    st.one_of(any_value, id_arrays, text_values, st.just(pa.array(np.arange(10**6)))),  # a million ids, 8 MB
    st.one_of(metadata, st.fixed_dictionaries({"boxes": st.lists(st.floats(), max_size=12)})),
).map(lambda e: {"type": "INPUT", "id": e[0], "value": e[1], "metadata": e[2]})


@FUZZ
@given(st.lists(control_events, max_size=8))
def test_track_mode_takes_any_run_of_remove_reset_and_text(events):
    """The track-mode node's path from dora event to its scheduler, for what steers its tracks: whatever a
    run of `remove`, `reset`, `text` and `points` messages holds, each is an item within its bounds or one
    bad-input line, and the scheduler takes the items without raising."""
    from dora_sam2.phrases import PhraseSearch
    from dora_sam2.node import Adapter
    from dora_sam2.scheduling import RESET, Remove, SchedulePolicy, TrackScheduler
    from dora_sam2.stats import Stages, Stats

    limits = Limits(max_remove=8, max_phrases=3, max_clicks=2)
    stats = Stats(Stages(), 0)
    scheduler = TrackScheduler(None, stats, ("image",), SchedulePolicy(every_frame=True), limits=limits,
                               search=PhraseSearch(None, "sam2-test"))
    adapter = Adapter(None, scheduler, stats, ["mask"], limits=limits)
    items = list(adapter.inputs(events))
    for item in items:
        if isinstance(item, Remove):
            assert len(item.track_ids) <= limits.max_remove
        elif item != RESET:
            assert len(getattr(item, "texts", ())) <= limits.max_phrases
    assert list(scheduler.handle(items)) == []  # no frame: nothing to answer
    waiting = Counter(camera for camera, _, _ in scheduler._clicks._items)
    assert all(count <= limits.max_clicks for count in waiting.values())


@st.composite
def answer_messages(draw):
    """dora-sam2's own `mask` / `masks` messages, mostly near-valid: right sizes, odd metadata."""
    n, w, h = draw(st.integers(0, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    meta = draw(metadata)
    if draw(st.booleans()):
        meta.update(width=w, height=h)
    values = draw(st.lists(st.booleans(), min_size=n * w * h, max_size=n * w * h + draw(st.sampled_from([0, 0, 1]))))
    value = pa.array(np.array(values, bool).astype(draw(st.sampled_from([np.bool_, np.uint8]))))
    if draw(st.booleans()):
        meta.update(labels=["x"] * n, scores=[0.5] * n, track_ids=list(range(n)))
    return draw(st.one_of(st.just(value), any_value)), meta


@FUZZ
@given(answer_messages())
def test_answer_decoders(message):
    """The rerun viewer's and the click page's reader, and the consumer helpers of masks.py."""
    answer, stack_and_union = decoder_and_helpers(codecs.decode_answer, [masks.decode_masks, masks.decode_union],
                                                  "masks", *message)
    if answer is not None:
        assert answer.masks.dtype == np.bool_ and len(answer.scores) == len(answer.class_names) == len(answer)
    assert all(decoded.dtype == np.bool_ for decoded in stack_and_union if decoded is not None)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([10**400, -(10**400)]),
              st.floats(allow_nan=True), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=20,
)
click_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={
        "points": st.one_of(json_values, st.lists(st.lists(json_values, min_size=3, max_size=3), max_size=70)),
        "object": json_values, "timestamp": st.one_of(json_values, st.datetimes().map(datetime.isoformat)),
    }).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 50_000 + b"]" * 50_000, b'{"points": [[1, 2, 1]], "object": Infinity}',
                     b'{"points": [[NaN, 2, 1]]}', b'{"points": [[1, 2, 1]], "object": 1e300}', b"\xff\xfe", b""]),
    st.binary(max_size=40),
)


@FUZZ
@given(click_bodies)
def test_click_bodies(data):
    """The click server's reader: a points message dora can carry, or a ValueError (a 400), nothing else."""
    try:
        value, meta = click_message(parse_body(data))
    except ValueError:
        return
    assert pa.types.is_float32(value.type) and np.isfinite(value.to_numpy()).all()
    assert set(meta["labels"]) <= {0, 1} and 0 <= meta["object_id"] < 2**31
    assert all(isinstance(v, (int, str, list, datetime)) for v in meta.values())


def test_images_declaring_more_than_max_pixels_are_dropped_undecoded():
    """74 bytes that declare 40000x40000 pixels (a 4.8 GB decode): refused on the header."""
    for data, fmt in [(png_header(40000, 40000), "png"), (jpeg_header(60000, 60000), "jpeg"),
                      (bmp_header(40000, -40000), "bmp")]:
        try:
            codecs.decode_frame("image", pa.array(np.frombuffer(data, np.uint8)), {"encoding": fmt})
        except InputError as error:
            assert "over MAX_PIXELS=8294400" in str(error) and "undecoded" in str(error)
        else:
            raise AssertionError(f"{fmt} header accepted")
    small = Limits(max_pixels=100)
    image = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].ravel()
    try:
        codecs.decode_frame("image", pa.array(image), {"encoding": "png"}, small)
    except InputError as error:
        assert "a 20x20 png image is 400 pixels, over MAX_PIXELS=100" in str(error)
    else:
        raise AssertionError("MAX_PIXELS not applied")
    raw = {"encoding": "rgb8", "width": 11, "height": 10}
    try:
        codecs.decode_frame("image", pa.array(np.zeros(330, np.uint8)), raw, small)
    except InputError as error:
        assert "over MAX_PIXELS=100" in str(error)
    else:
        raise AssertionError("MAX_PIXELS not applied to raw frames")


def test_timestamps_of_any_kind_are_read_or_ignored():
    naive, aware = datetime(2026, 1, 1), T0 + timedelta(days=3650)
    assert codecs.timestamp_of({"timestamp": naive}) == naive.replace(tzinfo=timezone.utc)
    assert codecs.timestamp_of({"timestamp": aware}) == aware
    assert codecs.timestamp_of({"timestamp": "2026-01-01"}) is None and codecs.timestamp_of({}) is None


@FUZZ
@given(st.lists(st.one_of(image_messages().map(lambda m: ("image", *m)), answer_messages().map(lambda m: ("masks", *m)),
                          st.tuples(st.sampled_from(["mask", "other"]), any_value, metadata)), max_size=6))
def test_dataset_writer_takes_any_run_of_messages(tmp_path_factory, messages):
    """The dataset writer's whole path from dora event to disk: any sequence of frames and answers is
    written, counted or said, never raised; the totals always add up."""
    from dora_sam2.dataset import CocoWriter, LabellingRun
    from dora_sam2.timeline import EachFrameOnce

    settled = []
    run = LabellingRun(CocoWriter(tmp_path_factory.mktemp("dataset")), EachFrameOnce(size=2, max_waiting=3),
                       send_done=lambda frame, written: settled.append(written))
    for input_id, value, meta in messages:
        run.on_input(input_id, value, meta)
    status = run.finish()
    assert len(settled) == run.read == run.writer.frames + sum(run.lost.values()) + run.skipped
    assert status == (1 if run.lost or run.frameless else 0)


# the ends of what rerun's timeline holds, a microsecond inside and outside each (1677 and 2262), and times
# of any year a datetime holds, as dora carries them
TIMELINE_EDGES = [datetime(1677, 9, 21, 0, 12, 43, us, timezone.utc) for us in (145224, 145225)] + [
    datetime(2262, 4, 11, 23, 47, 16, us, timezone.utc) for us in (854775, 854776)]
any_time = st.one_of(st.none(), st.sampled_from(TIMELINE_EDGES), st.datetimes(timezones=st.just(timezone.utc)),
                     st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.just(timezone.utc)))
track_ids = st.one_of(st.integers(-(2**80), 2**80), st.integers(65_530, 65_540), st.integers(-3, 3),
                      st.sampled_from([2**63 - 1, -(2**63), 2**16, 2**32]))


@st.composite
def viewer_events(draw):
    """What dora-sam2-rerun's loop is handed: a frame, its answer and a detector's boxes, mostly valid and
    paired, stamped at any time and with track ids of any sign and size, in any order; or anything at all."""
    kind = draw(st.sampled_from(["paired", "paired", "image", "answer", "boxes"]))
    if kind == "image":
        value, meta = draw(image_messages())
        return [{"id": "image", "value": value, "metadata": meta}]
    if kind == "answer":
        value, meta = draw(answer_messages())
        return [{"id": draw(st.sampled_from(["mask", "masks"])), "value": value, "metadata": meta}]
    if kind == "boxes":
        return [{"id": draw(st.sampled_from(["bbox", "boxes2d"])), "value": draw(any_value),
                 "metadata": draw(metadata)}]
    camera, when = draw(st.sampled_from(["image", "image_left"])), draw(any_time)
    stamp = {} if when is None else {"timestamp": when}
    n, w, h = draw(st.integers(0, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    rgb = np.full((h, w, 3), draw(st.integers(0, 255)), np.uint8)
    masks = np.array(draw(st.lists(st.booleans(), min_size=n * w * h, max_size=n * w * h)), bool)
    answer = {"width": w, "height": h, "image_id": camera, "labels": ["x"] * n, "scores": [0.5] * n, **stamp}
    if draw(st.booleans()):
        answer["track_ids"] = draw(st.lists(track_ids, min_size=n, max_size=n))
    if draw(st.booleans()):
        answer["num_masks"] = draw(st.one_of(st.integers(-(2**80), 2**80), st.just(n)))
    x, y = draw(st.floats(-1e6, 1e6)), draw(st.floats(-1e6, 1e6))
    corners = [x, y, x + draw(st.floats(1, 1e30)), y + draw(st.floats(1, 1e30))]
    events = [{"id": camera, "value": pa.array(rgb.ravel()),
               "metadata": {"encoding": "rgb8", "width": w, "height": h, **stamp}},
              {"id": draw(st.sampled_from(["mask", "masks"])), "value": pa.array(masks), "metadata": answer},
              {"id": "bbox", "value": pa.array(np.array(corners, np.float32)), "metadata": {"labels": ["b"], **stamp}}]
    return draw(st.permutations(events))


@pytest.fixture(scope="module")
def strict_rerun():
    """rerun recording to memory, strict: it raises what it would otherwise drop with a warning of its own."""
    rr = pytest.importorskip("rerun", reason="rerun-sdk is not installed")
    rr.init("fuzz", spawn=False)
    recording = rr.memory_recording()
    rr.set_strict_mode(True)
    yield rr, recording
    rr.set_strict_mode(False)
    recording.drain_as_bytes()


@FUZZ
@given(events=st.lists(viewer_events(), max_size=5).map(lambda groups: [event for group in groups for event in group]))
def test_rerun_viewer_takes_any_run_of_messages(strict_rerun, events):
    """dora-sam2-rerun's whole path from dora event to rerun, through the entry its loop calls: whatever the
    messages hold, nothing is raised, and rerun refuses nothing the viewer logs."""
    from dora_sam2.rerun_viewer import MaskLogger

    rr, recording = strict_rerun
    logger = MaskLogger(rr, frame_buffer=3, limits=Limits(max_waiting=4, max_cameras=2))
    for event in events:
        logger.on_input(event)
    recording.drain_as_bytes()
