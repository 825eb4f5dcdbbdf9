"""Which detection is which track: box overlap and a globally optimal assignment. Pure numpy.

A detector that runs now and then must not mint new ids for objects already tracked. Each detection
set is matched to the live tracks by the IoU of the detection box and the box of the track's mask;
the assignment maximises the total IoU over all pairs at once (SciPy's Hungarian solver), so two objects
crossing paths are not swapped the way greedy nearest-first matching swaps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class Association:
    matches: list[tuple[int, int]]  # (track index, detection index)
    new_detections: list[int]  # detections that match no track: they start tracks
    unmatched_tracks: list[int]  # tracks no detection landed on: they go on from memory


def associate(track_boxes, detection_boxes, min_iou: float, also=None) -> Association:
    """Match (T, 4) track boxes to (D, 4) detection boxes, xyxy. `also`: a second (T, 4) box per track;
    a pair overlaps by whichever of the two overlaps the detection more. A track box of NaNs matches
    nothing; a pair overlapping less than `min_iou` is never matched."""
    track_boxes = np.asarray(track_boxes, np.float64).reshape(-1, 4)
    detection_boxes = np.asarray(detection_boxes, np.float64).reshape(-1, 4)
    iou = box_iou(track_boxes, detection_boxes)
    if also is not None:
        iou = np.maximum(iou, box_iou(np.asarray(also, np.float64).reshape(-1, 4), detection_boxes))
    gain = np.where(iou >= min_iou, iou, 0.0)  # a pair below the bar is worth nothing
    rows, cols = linear_sum_assignment(gain, maximize=True)
    matches = [(int(t), int(d)) for t, d in zip(rows, cols) if gain[t, d] > 0]
    matched_tracks = {t for t, _ in matches}
    matched_detections = {d for _, d in matches}
    return Association(
        matches=sorted(matches),
        new_detections=[d for d in range(len(detection_boxes)) if d not in matched_detections],
        unmatched_tracks=[t for t in range(len(track_boxes)) if t not in matched_tracks],
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of xyxy boxes; 0 wherever either box is NaN or empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return np.where(np.isfinite(iou) & (union > 0), iou, 0.0)
