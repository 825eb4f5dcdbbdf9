"""Coordinate maths between the camera frame and SAM2's square model frame. Pure numpy."""

from __future__ import annotations

import numpy as np

BOX_FORMATS = ("xyxy", "xywh")


def to_xyxy(boxes: np.ndarray, fmt: str) -> np.ndarray:
    """(N, 4) boxes in `fmt` to corner form.

    `xywh` is centre x, centre y, width, height: what ultralytics and dora-yolo write.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if fmt == "xyxy":
        return boxes.copy()
    if fmt == "xywh":
        cx, cy, w, h = boxes.T
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    raise ValueError(f"unknown box format {fmt!r}")


def clip_points(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clamp (..., 2) pixel coordinates into the frame, so a box partly outside keeps its inside part."""
    out = np.array(points, np.float32, copy=True)
    np.clip(out[..., 0], 0, width, out=out[..., 0])
    np.clip(out[..., 1], 0, height, out=out[..., 1])
    return out


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy boxes around (N, H, W) masks, in pixel edges as a detector's boxes are: a mask
    covering columns 2..4 spans x 2 to 5 (right and bottom exclusive). NaN rows for empty masks.

    >>> mask_boxes(np.pad(np.ones((1, 2, 3), bool), ((0, 0), (1, 0), (2, 0))))
    array([[2., 1., 5., 3.]])
    """
    cols, rows = masks.any(axis=1), masks.any(axis=2)  # (N, W), (N, H)
    boxes = np.full((len(masks), 4), np.nan)
    present = cols.any(axis=1)
    width, height = cols.shape[1], rows.shape[1]
    boxes[present, 0] = np.argmax(cols[present], axis=1)
    boxes[present, 1] = np.argmax(rows[present], axis=1)
    boxes[present, 2] = width - np.argmax(cols[present][:, ::-1], axis=1)
    boxes[present, 3] = height - np.argmax(rows[present][:, ::-1], axis=1)
    return boxes


def to_model_frame(points: np.ndarray, width: int, height: int, model_size: int) -> np.ndarray:
    """Scale (..., 2) pixel coordinates of a WxH frame into the model's square input.

    SAM2 resizes the whole frame to model_size x model_size without padding, so x and y scale apart.
    """
    scale = np.array([model_size / width, model_size / height], np.float32)
    return np.asarray(points, np.float32) * scale
