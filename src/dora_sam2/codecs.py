"""Arrow messages <-> Frame, Prompt, Masks.

Every decoder either returns a valid domain object or raises InputError naming the input and the
problem; nothing else escapes (the fuzz tests hold it to that).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import cv2
import numpy as np
import pyarrow as pa

from .domain import BACKGROUND, FOREGROUND, Frame, InputError, Masks, Prompt
from .geometry import BOX_FORMATS, mask_boxes, to_xyxy

RAW_ENCODINGS = {"bgr8": 3, "rgb8": 3, "gray8": 1, "mono8": 1}
COMPRESSED_ENCODINGS = {"jpeg", "jpg", "png", "bmp", "webp"}


# ---------------------------------------------------------------------------- frames


def decode_frame(input_id: str, value, metadata: dict) -> Frame:
    encoding = str(metadata.get("encoding", "bgr8")).lower()
    data = _uint8_buffer(input_id, value)
    if encoding in RAW_ENCODINGS:
        rgb = _decode_raw(input_id, data, encoding, metadata)
    elif encoding in COMPRESSED_ENCODINGS:
        rgb = _decode_compressed(input_id, data, encoding)
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


def _decode_raw(input_id: str, data: np.ndarray, encoding: str, metadata: dict) -> np.ndarray:
    width, height = _positive_int(input_id, metadata, "width"), _positive_int(input_id, metadata, "height")
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


def _decode_compressed(input_id: str, data: np.ndarray, encoding: str) -> np.ndarray:
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InputError(input_id, f"could not decode {data.size} bytes as {encoding} (truncated or corrupt)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _positive_int(input_id: str, metadata: dict, key: str) -> int:
    raw = metadata.get(key)
    if raw is None:
        raise InputError(input_id, f"metadata '{key}' is missing (needed for raw pixel encodings)")
    try:
        number = int(raw)
    except (TypeError, ValueError):
        raise InputError(input_id, f"metadata '{key}' is {raw!r}, not an integer") from None
    if number <= 0 or number != float(raw):
        raise InputError(input_id, f"metadata '{key}' is {raw!r}, not a positive integer")
    return number


def timestamp_of(metadata: dict) -> datetime | None:
    """A message's `timestamp`. dora's timestamps are UTC; one without a timezone (a node that built its own) is read as UTC, so it
    compares with the others."""
    ts = metadata.get("timestamp")
    if not isinstance(ts, datetime):
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------- prompts


def decode_boxes(input_id: str, value, metadata: dict) -> Prompt:
    """dora-yolo's length-1 struct (bbox, conf?, labels?) or a flat numeric N*4 array."""
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
    return Prompt.from_boxes(input_id, boxes, _class_names(input_id, class_names, len(boxes)),
                             confidences=confidences, **_routing(metadata))


def decode_track_ids(input_id: str, value) -> tuple[int, ...]:
    """`remove`: a flat integer array of track ids."""
    if not isinstance(value, pa.Array) or not pa.types.is_integer(value.type) or value.null_count:
        kind = value.type if isinstance(value, pa.Array) else type(value).__name__
        raise InputError(input_id, f"expected a flat integer array of track ids, got {kind}")
    return tuple(int(v) for v in value.to_numpy(zero_copy_only=False))


def decode_points(input_id: str, value, metadata: dict) -> Prompt:
    """Flat x,y pairs (labels in metadata) or a length-1 struct with `points` and `labels`; one object."""
    flat, point_labels = _values_and_labels(input_id, value, metadata, "points")
    coords = _finite_floats(input_id, flat, "point coordinates")
    if coords.size == 0 or coords.size % 2:
        raise InputError(input_id, f"expected x,y pairs, got {coords.size} numbers")
    points = coords.reshape(-1, 2)
    point_labels = _point_labels(input_id, point_labels, len(points))
    object_id = metadata.get("object_id")
    routing = _routing(metadata)
    if isinstance(object_id, int) and not isinstance(object_id, bool):
        routing["object_ids"] = (object_id,)
    class_name = metadata.get("label")
    return Prompt.from_points(input_id, points, point_labels, str(class_name) if class_name is not None else "",
                              **routing)


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
    return tuple("" if label is None else str(label) for label in labels)


def _point_labels(input_id: str, raw, count: int) -> np.ndarray:
    if raw is None:
        return np.full(count, FOREGROUND, np.int64)
    labels = raw.to_pylist() if isinstance(raw, pa.Array) else raw
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (list, tuple)):
        raise InputError(input_id, f"point labels should be a list of 1 (foreground) / 0 (background), got {labels!r}")
    if len(labels) != count:
        raise InputError(input_id, f"{len(labels)} point labels for {count} points")
    try:
        values = [int(label) for label in labels]
    except (TypeError, ValueError):
        raise InputError(input_id, f"point labels should be 1 or 0, got {labels!r}") from None
    if any(v not in (FOREGROUND, BACKGROUND) for v in values) or any(
        isinstance(label, float) and not math.isfinite(label) for label in labels
    ):
        raise InputError(input_id, f"point labels should be 1 (foreground) or 0 (background), got {labels!r}")
    return np.array(values, np.int64)


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
    ids = masks.track_ids or [None] * len(masks)
    labels = [" ".join(p for p in (f"#{i}" if i is not None else "", name) if p) for i, name in zip(ids, masks.class_names)]
    value = pa.array([{"bbox": metadata["boxes"], "conf": metadata["scores"], "labels": labels}],
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


def decode_answer(input_id: str, value, metadata: dict) -> Masks:
    """One of dora-sam2's own `mask` / `masks` messages back into its Masks (a union `mask` as one mask
    standing for all its objects), for nodes that draw them."""
    try:
        width, height = int(metadata["width"]), int(metadata["height"])
        flat = _uint8_buffer(input_id, value) if value.type == pa.uint8() else value.to_numpy(zero_copy_only=False)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(input_id, f"not a dora-sam2 mask message ({error})") from None
    if width <= 0 or height <= 0 or flat.size % (width * height):
        raise InputError(input_id, f"{flat.size} mask values are not a whole number of {width}x{height} masks")
    masks = flat.reshape(-1, height, width).astype(bool, copy=False)
    names = tuple(str(n) for n in metadata.get("labels", []))
    scores = np.asarray(metadata.get("scores", []), np.float32)
    track_ids = metadata.get("track_ids")
    if metadata.get("mask_layout") == "union":
        masks, names, scores, track_ids = masks[:1], (", ".join(filter(None, names)),), scores[:1], None
    ids = tuple(int(t) for t in track_ids) if track_ids is not None else None
    if not len(names) == len(scores) == len(masks) == len(ids if ids is not None else masks):
        raise InputError(input_id, f"{len(names)} labels and {len(scores)} scores for {len(masks)} masks")
    return Masks(masks, scores, names, str(metadata.get("image_id", "image")), timestamp_of(metadata), ids)


def encode_overlay(frame: Frame, rgb):
    """A drawn frame as an `image` message: rgb8 back to an rgb8 camera, bgr8 otherwise."""
    encoding = "rgb8" if frame.encoding == "rgb8" else "bgr8"
    pixels = rgb if encoding == "rgb8" else rgb[..., ::-1]
    metadata = {"encoding": encoding, "width": frame.width, "height": frame.height, "primitive": "image",
                "image_id": frame.image_id}
    if frame.timestamp is not None:
        metadata["timestamp"] = frame.timestamp
    return pa.array(np.ascontiguousarray(pixels).reshape(-1)), metadata
