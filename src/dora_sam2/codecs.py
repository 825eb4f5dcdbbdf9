"""Arrow messages <-> Frame, Prompt, Masks.

Every decoder either returns a valid domain object or raises InputError naming the input and the
problem; nothing else escapes (`boundary`, and the fuzz tests hold it to that). Sizes are checked
before anything is allocated for them: a raw frame's byte count, a compressed image's declared pixels,
a `remove`'s ids. What the image libraries print about a bad frame is taken into that one error (or, for
a frame they recovered, one throttled warning), never printed by them.
"""

from __future__ import annotations

import functools
import logging
import math
from datetime import datetime, timezone

import cv2
import numpy as np
import pyarrow as pa

from .domain import BACKGROUND, FOREGROUND, Frame, InputError, Masks, Phrases, Prompt
from .geometry import BOX_FORMATS, mask_boxes, to_xyxy
from .image_headers import declared_size
from .library_output import captured
from .quoting import first_line, shown
from .settings import FixedLimits, Limits
from .throttle import Throttle

LIMITS = Limits()  # the defaults, for callers that set none
# A frame the image library recovered from is used; what the library said is a warning, at most one line
# per camera input every 10 s, in whichever node decoded it.
_decoder_said = Throttle(logging.getLogger("dora_sam2"))

RAW_ENCODINGS = {"bgr8": 3, "rgb8": 3, "gray8": 1, "mono8": 1}
COMPRESSED_ENCODINGS = {"jpeg", "jpg", "png", "bmp", "webp"}


def boundary(decoder):
    """The one way out of a decoder: a valid object, or InputError naming the input. A failure no check
    foresaw (a value of a type nobody sends, a library's own error) becomes that error too, since no
    message may end a node."""

    @functools.wraps(decoder)
    def decode(input_id: str, *args, **kwargs):
        try:
            return decoder(input_id, *args, **kwargs)
        except InputError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the message held, it is one bad message
            raise InputError(input_id, f"unreadable message ({type(error).__name__}: {first_line(error)})") from None

    return decode


# ---------------------------------------------------------------------------- frames


@boundary
def decode_frame(input_id: str, value, metadata: dict, limits: Limits = LIMITS) -> Frame:
    encoding = str(metadata.get("encoding", "bgr8")).lower()
    data = _uint8_buffer(input_id, value)
    if encoding in RAW_ENCODINGS:
        rgb = _decode_raw(input_id, data, encoding, metadata, limits.max_pixels)
    elif encoding in COMPRESSED_ENCODINGS:
        rgb = _decode_compressed(input_id, data, encoding, limits.max_pixels)
    else:
        known = ", ".join([*RAW_ENCODINGS, *sorted(COMPRESSED_ENCODINGS)])
        raise InputError(input_id, f"unknown image encoding {encoding!r} (expected one of {known})")
    return Frame(input_id, rgb, timestamp_of(metadata), encoding)


def _uint8_buffer(input_id: str, value) -> np.ndarray:
    if isinstance(value, (bytes, bytearray)):
        return np.frombuffer(value, np.uint8)
    if not isinstance(value, pa.Array) or value.type != pa.uint8():
        kind = value.type if isinstance(value, pa.Array) else type(value).__name__
        raise InputError(input_id, f"expected a flat UInt8 array of pixels or encoded bytes, got {kind}")
    if value.null_count:
        raise InputError(input_id, "image array contains nulls")
    return value.to_numpy(zero_copy_only=False)


def _decode_raw(input_id: str, data: np.ndarray, encoding: str, metadata: dict, max_pixels: int) -> np.ndarray:
    width, height = _positive_int(input_id, metadata, "width"), _positive_int(input_id, metadata, "height")
    _check_pixels(input_id, width, height, encoding, max_pixels)
    channels = RAW_ENCODINGS[encoding]
    if data.size != width * height * channels:
        raise InputError(
            input_id,
            f"{data.size} bytes do not make a {width}x{height} {encoding} image "
            f"({width * height * channels} expected)",
        )
    image = data.reshape(height, width, channels)
    if encoding == "bgr8":
        return np.ascontiguousarray(image[..., ::-1])
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    return image.copy()  # the Arrow buffer is dora's shared memory: own the pixels


def _decode_compressed(input_id: str, data: np.ndarray, encoding: str, max_pixels: int) -> np.ndarray:
    header = declared_size(data[:65536].tobytes())  # a JPEG's size may follow its EXIF: look a little way in
    if header is None:
        raise InputError(input_id, f"could not decode {data.size} bytes as {encoding} (truncated or corrupt: "
                                   "no JPEG, PNG, BMP or WebP header with a size)")
    image_format, width, height = header
    _check_pixels(input_id, width, height, image_format, max_pixels)
    with captured() as said:  # libpng and libjpeg would print a line of their own for every bad frame
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    complaint = said.first_line
    if bgr is None:
        raise InputError(input_id, f"could not decode {data.size} bytes as {encoding} (truncated or corrupt"
                                   f"{': ' + complaint if complaint else ''})")
    if complaint:  # recovered from, as some webcams' JPEGs need on every frame: used, and said once a while
        _decoder_said.warning(f"{input_id} decoder", "input '%s': the %s decoder said %r; the frame is used as "
                              "decoded", input_id, image_format, complaint)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_pixels(input_id: str, width: int, height: int, what: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(input_id, f"a {width}x{height} {what} image is {width * height} pixels, over "
                                   f"MAX_PIXELS={max_pixels}; it is dropped undecoded")


def _positive_int(input_id: str, metadata: dict, key: str) -> int:
    raw = metadata.get(key)
    if raw is None:
        raise InputError(input_id, f"metadata '{key}' is missing (needed for raw pixel encodings)")
    try:
        number = int(raw)
        whole = number == float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise InputError(input_id, f"metadata '{key}' is {shown(raw)}, not an integer") from None
    if number <= 0 or not whole:
        raise InputError(input_id, f"metadata '{key}' is {shown(raw)}, not a positive integer")
    return number


def timestamp_of(metadata: dict) -> datetime | None:
    """A message's `timestamp`. dora's timestamps are UTC; one without a timezone (a node that built its own)
    is read as UTC, so it compares with the others."""
    ts = metadata.get("timestamp")
    if not isinstance(ts, datetime):
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------- prompts


@boundary
def decode_boxes(input_id: str, value, metadata: dict, limits: Limits | None = None) -> Prompt:
    """dora-yolo's length-1 struct (bbox, conf?, labels?) or a flat numeric N*4 array. With `limits`, at
    most MAX_BOXES of them, the most confident (a viewer draws those); without, all of them, for a caller
    that drops boxes by label or confidence before it keeps MAX_BOXES (the node's DetectionFilter)."""
    flat, class_names = _values_and_labels(input_id, value, metadata, "bbox")
    coords = _finite_floats(input_id, flat, "box coordinates")
    if coords.size % 4:
        raise InputError(input_id, f"{coords.size} box coordinates is not a multiple of 4")
    boxes = to_xyxy(coords, _box_format(input_id, metadata))
    reversed_ = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if reversed_.any():
        i = int(np.argmax(reversed_))
        raise InputError(input_id, f"box {i} {boxes[i].tolist()} has no area (reversed or empty corners)")
    confidences = None
    if isinstance(value, pa.StructArray) and value.type.get_field_index("conf") >= 0:
        confidences = _finite_floats(input_id, _struct_list(input_id, value, "conf", required=True), "confidences")
        if confidences.size != len(boxes):
            raise InputError(input_id, f"{confidences.size} confidences for {len(boxes)} boxes")
    prompt = Prompt.from_boxes(input_id, boxes, _class_names(input_id, class_names, len(boxes)),
                               confidences=confidences, **_routing(metadata))
    return prompt if limits is None else prompt.most_confident(limits.max_boxes)


@boundary
def decode_track_ids(input_id: str, value, limits: Limits = LIMITS) -> tuple[int, ...]:
    """`remove`: a flat integer array of track ids, counted before a single id is read: 4 million of them as
    Python ints took seconds and hundreds of MB, and every answer after them waited. A message over
    MAX_REMOVE is refused whole, not cut: which ids a sender meant most is not ours to guess, and `reset`
    ends them all."""
    if not isinstance(value, pa.Array) or not pa.types.is_integer(value.type) or value.null_count:
        kind = value.type if isinstance(value, pa.Array) else type(value).__name__
        raise InputError(input_id, f"expected a flat integer array of track ids, got {kind}")
    if len(value) > limits.max_remove:
        raise InputError(input_id, f"{len(value)} track ids in one message, over MAX_REMOVE={limits.max_remove}: "
                                   "none is removed (`reset` ends every track)")
    return tuple(int(v) for v in value.to_numpy(zero_copy_only=False))


@boundary
def decode_points(input_id: str, value, metadata: dict, limits: Limits = LIMITS) -> Prompt:
    """Flat x,y pairs (labels in metadata) or a length-1 struct with `points` and `labels`; one object."""
    flat, point_labels = _values_and_labels(input_id, value, metadata, "points")
    coords = _finite_floats(input_id, flat, "point coordinates")
    if coords.size == 0 or coords.size % 2:
        raise InputError(input_id, f"expected x,y pairs, got {coords.size} numbers")
    if coords.size // 2 > limits.max_points:
        raise InputError(input_id, f"{coords.size // 2} points for one object, over MAX_POINTS={limits.max_points}")
    points = coords.reshape(-1, 2)
    point_labels = _point_labels(input_id, point_labels, len(points))
    object_id = metadata.get("object_id")
    routing = _routing(metadata)
    if isinstance(object_id, int) and not isinstance(object_id, bool) and 0 <= object_id <= FixedLimits.MAX_OBJECT_ID:
        routing["object_ids"] = (object_id,)
    class_name = metadata.get("label")
    return Prompt.from_points(input_id, points, point_labels,
                              str(class_name)[:FixedLimits.LABEL_CHARS] if class_name is not None else "", **routing)


def _values_and_labels(input_id: str, value, metadata: dict, field: str):
    """A message's numbers and its `labels` (class names on boxes, 1/0 on points): a length-1 struct with
    `field` and `labels`, or a flat array with `labels` in the metadata."""
    if isinstance(value, pa.StructArray):
        return (_struct_list(input_id, value, field, required=True),
                _struct_list(input_id, value, "labels", required=False))
    return value, metadata.get("labels")


def _struct_list(input_id: str, value: pa.StructArray, field: str, required: bool):
    if len(value) != 1:
        raise InputError(input_id, f"expected a struct array of length 1, got length {len(value)}")
    if value.type.get_field_index(field) < 0:
        if required:
            raise InputError(input_id, f"struct has no field '{field}' (fields: {[f.name for f in value.type]})")
        return None
    column = value.field(field)
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise InputError(input_id, f"struct field '{field}' should be a list, got {column.type}")
    return column[0].values if column[0].is_valid else pa.array([], column.type.value_type)


def _finite_floats(input_id: str, value, what: str) -> np.ndarray:
    if isinstance(value, pa.Array):
        if not (pa.types.is_integer(value.type) or pa.types.is_floating(value.type)):
            raise InputError(input_id, f"{what} should be numbers, got {value.type}")
        if value.null_count:
            raise InputError(input_id, f"{what} contain nulls")
        array = value.to_numpy(zero_copy_only=False).astype(np.float32)
    else:
        raise InputError(input_id, f"expected a numeric Arrow array of {what}, got {type(value).__name__}")
    if not np.isfinite(array).all():
        raise InputError(input_id, f"{what} contain NaN or infinity")
    return array


def _box_format(input_id: str, metadata: dict) -> str:
    fmt = metadata.get("format")
    if fmt is None:
        # The upstream node put the box format in `encoding`; dora-yolo's `encoding` is the image's (bgr8).
        encoding = str(metadata.get("encoding", "")).lower()
        fmt = encoding if encoding in BOX_FORMATS else "xyxy"
    fmt = str(fmt).lower()
    if fmt not in BOX_FORMATS:
        raise InputError(input_id, f"unknown box format {fmt!r} (expected one of {', '.join(BOX_FORMATS)})")
    return fmt


def _class_names(input_id: str, raw, count: int) -> tuple[str, ...]:
    if raw is None:
        return ("",) * count
    labels = raw.to_pylist() if isinstance(raw, pa.Array) else raw
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise InputError(input_id, f"labels should be a list of strings, got {type(labels).__name__}")
    if len(labels) == 0:
        return ("",) * count
    if len(labels) != count:
        raise InputError(input_id, f"{len(labels)} labels for {count} boxes")
    return tuple("" if label is None else str(label)[:FixedLimits.LABEL_CHARS] for label in labels)


def _point_labels(input_id: str, raw, count: int) -> np.ndarray:
    if raw is None:
        return np.full(count, FOREGROUND, np.int64)
    labels = raw.to_pylist() if isinstance(raw, pa.Array) else raw
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (list, tuple)):
        raise InputError(input_id, f"point labels should be a list of 1 (foreground) / 0 (background), got {labels!r}")
    if len(labels) != count:
        raise InputError(input_id, f"{len(labels)} point labels for {count} points")
    if not all(is_point_label(label) for label in labels):
        raise InputError(input_id, f"point labels should be 1 (foreground) or 0 (background), got {shown(labels)}")
    return np.array([int(label) for label in labels], np.int64)


def is_point_label(value) -> bool:
    """1 (foreground) or 0 (background), exactly: 1.9 and -0.5 are not rounded into labels. Compared as
    they are, never converted: an int of 400 digits does not fit a float."""
    return isinstance(value, (int, float)) and value in (FOREGROUND, BACKGROUND)


@boundary
def decode_text(input_id: str, value, metadata: dict, limits: Limits = LIMITS) -> Phrases:
    """`text`: concept phrases as strings (one, or a list), UTF-8 bytes, or a comma-separated line of them;
    blank ones are skipped, repeats kept once, and none at all clears. Metadata `boxes` (flat xyxy pixels)
    and `box_labels` (1 / 0 per box) add exemplars: boxes showing what the phrases mean."""
    texts = []
    for raw in _text_values(input_id, value):
        texts += [part.strip() for part in raw.split(",")]
    texts = list(dict.fromkeys(t for t in texts if t))
    if len(texts) > limits.max_phrases:
        raise InputError(input_id, f"{len(texts)} phrases, over MAX_PHRASES={limits.max_phrases}; the phrases "
                                   "in use are kept")
    for i, text in enumerate(texts):
        if len(text) > FixedLimits.PHRASE_CHARS:
            raise InputError(input_id, f"phrase {i} is {len(text)} characters long, over "
                                       f"{FixedLimits.PHRASE_CHARS}; SAM 3 reads a short noun phrase (its first 32 "
                                       "tokens)")
        if not text.isprintable():
            raise InputError(input_id, f"phrase {i} {shown(text)} holds control characters")
    exemplars, labels = _exemplars(input_id, metadata, limits)
    return Phrases(tuple(texts), exemplars, labels)


def _text_values(input_id: str, value) -> list[str]:
    if isinstance(value, pa.ChunkedArray):
        value = value.combine_chunks()
    if not isinstance(value, pa.Array):
        raise InputError(input_id, f"expected an Arrow array of strings, got {type(value).__name__}")
    if value.null_count:
        raise InputError(input_id, "phrases contain nulls")
    if pa.types.is_string(value.type) or pa.types.is_large_string(value.type):
        return value.to_pylist()
    if pa.types.is_binary(value.type) or pa.types.is_large_binary(value.type):
        return [_utf8(input_id, item) for item in value.to_pylist()]
    if pa.types.is_uint8(value.type) or pa.types.is_int8(value.type):  # one phrase as its UTF-8 bytes
        return [_utf8(input_id, value.to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())]
    raise InputError(input_id, f"phrases should be strings (or UTF-8 bytes), got {value.type}")


def _utf8(input_id: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(input_id, f"the phrase is not UTF-8 text (byte {error.start} is "
                                   f"0x{data[error.start]:02x})") from None


def _exemplars(input_id: str, metadata: dict, limits: Limits):
    raw = metadata.get("boxes")
    if raw is None:
        return None, None
    if not isinstance(raw, (list, tuple)) or not all(isinstance(v, (int, float)) for v in raw):
        raise InputError(input_id, f"metadata 'boxes' should be a flat list of xyxy numbers, got {shown(raw)}")
    with np.errstate(over="ignore"):  # past float32's range is infinite: said below, as any infinity
        boxes = np.array(raw, np.float64).astype(np.float32)
    if boxes.size % 4 or not np.isfinite(boxes).all():
        raise InputError(input_id, f"metadata 'boxes' should be finite x1, y1, x2, y2 per box, got {boxes.size} "
                                   "numbers")
    boxes = boxes.reshape(-1, 4)
    if len(boxes) > limits.max_boxes:
        raise InputError(input_id, f"{len(boxes)} exemplar boxes, over MAX_BOXES={limits.max_boxes}")
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise InputError(input_id, "an exemplar box has no area (reversed or empty corners)")
    labels = metadata.get("box_labels")
    if labels is None:
        labels = [FOREGROUND] * len(boxes)
    if not isinstance(labels, (list, tuple)) or len(labels) != len(boxes) or not all(map(is_point_label, labels)):
        raise InputError(input_id, f"metadata 'box_labels' should be 1 (an instance) or 0 (not one) per "
                                   f"exemplar box, got {shown(labels)}")
    return boxes, np.array([int(v) for v in labels], np.int64)


def _routing(metadata: dict) -> dict:
    image_id = metadata.get("image_id")
    return {
        "image_id": str(image_id) if image_id is not None else None,
        "timestamp": timestamp_of(metadata),
    }


# ---------------------------------------------------------------------------- masks


def masks_metadata(masks: Masks) -> dict:
    """What the answer is made of, for `mask` and `masks` alike. Python types only: dora turns numpy
    scalars, dicts and None into strings.

    `boxes`: xyxy in pixel edges around each mask, 4 per mask (0, 0, 0, 0 for an empty one); `visible`:
    1 where SAM 2 sees the object (its object score above 0) and its mask is not empty, else 0."""
    boxes = np.nan_to_num(mask_boxes(masks.masks), nan=0.0)
    seen = masks.masks.reshape(len(masks), masks.height * masks.width).any(axis=1)
    if masks.visible is not None:
        seen &= masks.visible
    metadata = {
        "width": int(masks.width),
        "height": int(masks.height),
        "num_masks": len(masks),
        "labels": list(masks.class_names),
        "scores": [float(s) for s in masks.scores],
        "boxes": [float(v) for v in boxes.ravel()],
        "visible": [int(v) for v in seen],  # 1/0: dora turns a list of bools into a string
        "image_id": masks.image_id,
        "primitive": "masks",
    }
    if masks.timestamp is not None:
        metadata["timestamp"] = masks.timestamp
    if masks.track_ids is not None:
        metadata["track_ids"] = [int(t) for t in masks.track_ids]
    return metadata


def encode_boxes2d(masks: Masks) -> tuple[pa.Array, dict]:
    """`boxes2d`: the masks' boxes as dora-yolo's struct (bbox xyxy, conf = SAM 2's score, labels; "#id label"
    in track mode), so opencv-plot and other box viewers draw the objects, and their ids."""
    metadata = masks_metadata(masks)
    value = pa.array([{"bbox": metadata["boxes"], "conf": metadata["scores"], "labels": masks.captions()}],
                     type=pa.struct([("bbox", pa.list_(pa.float32())), ("conf", pa.list_(pa.float32())),
                                     ("labels", pa.list_(pa.string()))]))
    extra = {k: metadata[k] for k in ("width", "height", "image_id", "timestamp") if k in metadata}
    return value, {**extra, "format": "xyxy", "primitive": "boxes2d"}


def encode_mask(masks: Masks, layout: str = "union") -> tuple[pa.Array, dict]:
    """The seed's `mask`: one H*W UInt8 mask, 1 wherever any object is (all zeros for none), which the
    seed's consumer code reshapes to (height, width) whatever the number of objects. `stack` instead
    sends the N*H*W masks as UInt8. Metadata `mask_layout` says which."""
    metadata = dict(masks_metadata(masks), mask_layout=layout)
    if layout == "stack":
        return pa.array(masks.masks.reshape(-1).view(np.uint8)), metadata
    return pa.array(masks.masks.any(axis=0).reshape(-1).view(np.uint8)), metadata


def encode_masks(masks: Masks) -> tuple[pa.Array, dict]:
    """`masks`: the per-object N*H*W BooleanArray the upstream node, dora-rerun and dora-object-to-pose read."""
    return pa.array(masks.masks.reshape(-1), type=pa.bool_()), masks_metadata(masks)


@boundary
def decode_answer(input_id: str, value, metadata: dict, limits: Limits = LIMITS) -> Masks:
    """One of dora-sam2's own `mask` / `masks` messages back into its Masks (a union `mask` as one mask
    standing for all its objects), for nodes that draw them."""
    masks = _mask_stack(input_id, value, metadata, limits)
    # another node's masks may come without labels or scores: unnamed, unscored
    names = tuple(name[:FixedLimits.LABEL_CHARS]
                  for name in _metadata_list(input_id, metadata, "labels", (str,), [""] * len(masks)))
    scores = np.asarray(_metadata_list(input_id, metadata, "scores", (int, float), [np.nan] * len(masks)),
                        np.float64).astype(np.float32)
    track_ids = metadata.get("track_ids")
    ids = None if track_ids is None else tuple(_metadata_list(input_id, metadata, "track_ids", (int,)))
    if metadata.get("mask_layout") == "union":  # one mask for all its objects (none, for an empty answer)
        scores = scores[:1] if len(scores) else np.full(1, np.nan, np.float32)
        masks, names, ids = masks[:1], (", ".join(filter(None, names)),), None
    if not len(names) == len(scores) == len(masks) == len(ids if ids is not None else masks):
        raise InputError(input_id, f"{len(names)} labels, {len(scores)} scores and "
                                   f"{'no' if ids is None else len(ids)} track ids for {len(masks)} masks")
    image_id = metadata.get("image_id", "image")
    if not isinstance(image_id, str):
        raise InputError(input_id, f"metadata 'image_id' should be a camera's input id, got {shown(image_id)}")
    return Masks(masks, scores, names, image_id, timestamp_of(metadata), ids)


@boundary
def decode_mask_stack(input_id: str, value, metadata: dict, limits: Limits = LIMITS) -> np.ndarray:
    """(N, H, W) bool: the masks of any of the node's mask messages as they travel (a union `mask` is one)."""
    return _mask_stack(input_id, value, metadata, limits)


def _mask_stack(input_id: str, value, metadata: dict, limits: Limits) -> np.ndarray:
    width, height = _positive_int(input_id, metadata, "width"), _positive_int(input_id, metadata, "height")
    _check_pixels(input_id, width, height, "mask", limits.max_pixels)
    if not isinstance(value, pa.Array) or not (value.type == pa.uint8() or value.type == pa.bool_()):
        kind = value.type if isinstance(value, pa.Array) else type(value).__name__
        raise InputError(input_id, f"expected dora-sam2's UInt8 or Boolean masks, got {kind}")
    if value.null_count:
        raise InputError(input_id, "mask array contains nulls")
    if len(value) % (width * height):
        raise InputError(input_id, f"{len(value)} mask values are not a whole number of {width}x{height} masks")
    if len(value) // (width * height) > limits.max_masks:  # said before a single mask is read
        raise InputError(input_id, f"{len(value) // (width * height)} masks in one message, over "
                                   f"MAX_MASKS={limits.max_masks}")
    return value.to_numpy(zero_copy_only=False).reshape(-1, height, width).astype(bool, copy=False)


def _metadata_list(input_id: str, metadata: dict, key: str, kinds: tuple[type, ...], default=()) -> list:
    """A metadata list whose items are all of `kinds` (bools are not numbers here); `default` when absent."""
    if key not in metadata:
        return list(default)
    raw = metadata[key]
    if not isinstance(raw, (list, tuple)) or not all(
            isinstance(item, kinds) and not isinstance(item, bool) for item in raw):
        names = " or ".join(k.__name__ for k in kinds)
        raise InputError(input_id, f"metadata '{key}' should be a list of {names}, got {shown(raw)}")
    if not all(math.isfinite(item) for item in raw if isinstance(item, float)):  # ints are finite, of any size
        raise InputError(input_id, f"metadata '{key}' holds NaN or infinity")
    return list(raw)


def encode_overlay(frame: Frame, rgb):
    """A drawn frame as an `image` message: rgb8 back to an rgb8 camera, bgr8 otherwise."""
    encoding = "rgb8" if frame.encoding == "rgb8" else "bgr8"
    pixels = rgb if encoding == "rgb8" else rgb[..., ::-1]
    metadata = {"encoding": encoding, "width": frame.width, "height": frame.height, "primitive": "image",
                "image_id": frame.image_id}
    if frame.timestamp is not None:
        metadata["timestamp"] = frame.timestamp
    return pa.array(np.ascontiguousarray(pixels).reshape(-1)), metadata
