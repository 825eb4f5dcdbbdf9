"""What the click page posts, checked before anything reaches dora: a request body as JSON of a sane size
and shape, and a click as the `points` message it stands for. Each check raises ValueError saying why."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pyarrow as pa

from . import codecs
from .settings import FixedLimits, Limits


def click_message(body: dict, limits: Limits = Limits()) -> tuple[pa.Array, dict]:
    """The page's JSON ({points: [[x, y, label]...], object, timestamp}) as a `points` message. Raises
    ValueError, saying why, for anything dora could not carry or SAM 2 could not use."""
    points = body.get("points")
    if not isinstance(points, list) or not points or not all(isinstance(p, list) and len(p) == 3 for p in points):
        raise ValueError("points should be a non-empty list of [x, y, label]")
    if len(points) > limits.max_points:
        raise ValueError(f"{len(points)} points for one object, over MAX_POINTS={limits.max_points}")
    if not all(_is_number(v) and abs(v) <= FixedLimits.MAX_COORDINATE for x, y, _ in points for v in (x, y)):
        raise ValueError(f"point coordinates should be finite numbers of at most {FixedLimits.MAX_COORDINATE:g} "
                         "pixels")
    if not all(_is_number(label) and codecs.is_point_label(label) for _, _, label in points):
        raise ValueError("point labels should be 1 (foreground) or 0 (background)")
    obj = body.get("object", 0)
    if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj <= FixedLimits.MAX_OBJECT_ID:
        raise ValueError(f"object should be an integer from 0 to {FixedLimits.MAX_OBJECT_ID}")
    metadata = {"labels": [int(p[2]) for p in points], "object_id": obj, "label": f"object {obj}"}
    timestamp = body.get("timestamp")
    if timestamp:
        if not isinstance(timestamp, str) or len(timestamp) > FixedLimits.TIMESTAMP_CHARS:
            raise ValueError("timestamp should be the frame's ISO 8601 time")
        metadata["timestamp"] = datetime.fromisoformat(timestamp)
    return pa.array(np.array([p[:2] for p in points], np.float32).ravel()), metadata


def _is_number(value) -> bool:
    """A finite JSON number: an int of any size (JSON allows 400 digits), or a float that is not inf/nan."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def parse_body(data: bytes) -> dict:
    """A request body as a JSON object of at most MAX_DEPTH levels; NaN and Infinity, which JSON does not
    have, are refused, as is nesting Python's parser would recurse on. Raises ValueError."""
    try:
        body = json.loads(data or b"{}", parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("the body should be a JSON object")
    level, depth = [body], 1
    while level:
        level = [v for item in level for v in (item.values() if isinstance(item, dict) else item)
                 if isinstance(v, (dict, list))]
        depth += bool(level)
        if depth > FixedLimits.MAX_DEPTH:
            raise ValueError(f"the body is nested more than {FixedLimits.MAX_DEPTH} levels deep")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON has")
