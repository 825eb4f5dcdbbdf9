"""Which detection is which track: box overlap, then distance, each assigned globally. Pure numpy.

A detector that runs now and then must not mint new ids for objects already tracked. Each detection
set is matched to the live tracks in two stages. First by overlap: the IoU of the detection box and the
best of the track's boxes (its mask's, its last detection's, where that detection is heading), the
assignment maximising the total IoU over all pairs at once (SciPy's Hungarian solver), so two objects
crossing paths are not swapped the way greedy nearest-first matching swaps them. Then what overlap left
over, by distance: an object that moved further than its size between two rounds overlaps none of its
track's boxes, yet is still the nearest detection of its kind to that track. A detection of another
kind than the track's overlaps only the boxes the detector gave it: a weak mask strays onto a
neighbour while its object is hidden, and would take the neighbour's box and label.
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


def associate(track_boxes, detection_boxes, min_iou: float, reach=0.0, allowed=None,
              others_from: int = 0, sizes=None) -> Association:
    """Match tracks to (D, 4) detection boxes, xyxy. `track_boxes`: (T, 4), or (T, B, 4) for B boxes per
    track, of which the one nearer the detection counts; a box of NaNs matches nothing. A pair overlapping
    less than `min_iou` is not matched by overlap; of what is left, a pair whose centres lie within `reach`
    times their mean box diagonal is matched by distance (0: never), the nearest first. `reach`: one for
    all tracks, or (T,) one per track (further for a track out of sight longer). `allowed`: (T, D) bool, the
    pairs that may be matched by distance (the same label, say), and that overlap matches before the others;
    the others overlap on a track's boxes from `others_from` on (a box that may stray, such as a mask's,
    first: an object of another kind must overlap where the detector last saw the track). `sizes`: (T,)
    each track's object's diagonal, where its boxes may show less of it (see `centres_apart`)."""
    detections = np.asarray(detection_boxes, np.float64).reshape(-1, 4)
    tracks = np.asarray(track_boxes, np.float64)
    tracks = tracks.reshape(len(tracks), -1, 4) if tracks.size else np.zeros((0, 1, 4))
    shape = (len(tracks), len(detections))
    allowed = np.ones(shape, bool) if allowed is None else np.asarray(allowed, bool).reshape(shape)
    each = box_iou(tracks.reshape(-1, 4), detections).reshape(*tracks.shape[:2], len(detections))
    iou = np.where(allowed, each.max(axis=1), each[:, others_from:].max(axis=1, initial=0.0))
    # a pair below the bar is worth nothing; of those above it, a pair that `allowed` holds comes first
    matches = _assign(np.where((iou >= min_iou) & (iou > 0), iou + allowed, 0.0))
    reach = np.broadcast_to(np.asarray(reach, np.float64), (len(tracks),))
    if (reach > 0).any():
        tracks_left = [t for t in range(len(tracks)) if t not in {t for t, _ in matches}]
        left = [d for d in range(len(detections)) if d not in {d for _, d in matches}]
        sized = None if sizes is None else np.asarray(sizes, np.float64)[tracks_left]
        apart = centres_apart(tracks[tracks_left], detections[left], sized)
        near = (apart <= reach[tracks_left, None]) & allowed[np.ix_(tracks_left, left)]
        # the nearer, the more it is worth, whatever the track's own reach: a track out of sight longer may
        # reach further, but is not preferred for it
        nearness = np.where(near, reach.max() - apart + 1e-9, 0.0)
        matches += [(tracks_left[t], left[d]) for t, d in _assign(nearness)]
    matched_tracks = {t for t, _ in matches}
    matched_detections = {d for _, d in matches}
    return Association(
        matches=sorted(matches),
        new_detections=[d for d in range(len(detections)) if d not in matched_detections],
        unmatched_tracks=[t for t in range(len(tracks)) if t not in matched_tracks],
    )


def _assign(gain: np.ndarray) -> list[tuple[int, int]]:
    """The pairs of the assignment of greatest total gain, less those worth nothing."""
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(t), int(d)) for t, d in zip(rows, cols) if gain[t, d] > 0]


def centres_apart(tracks: np.ndarray, detections: np.ndarray, sizes=None) -> np.ndarray:
    """(T, D): the distance of each detection's centre from the nearest of each track's (B) boxes'
    centres, in their mean box diagonals; inf where a box is NaN or both boxes are points. `sizes`: (T,)
    the diagonal each track's boxes count as at least: an object going behind something, or coming out,
    is boxed by the sliver in view, and its move, measured in that sliver, would look many times longer."""
    t, d = tracks[:, :, None], detections[None, None]
    centres = np.linalg.norm((t[..., :2] + t[..., 2:]) / 2 - (d[..., :2] + d[..., 2:]) / 2, axis=-1)
    track_diagonals = np.linalg.norm(t[..., 2:] - t[..., :2], axis=-1)
    if sizes is not None:
        track_diagonals = np.fmax(track_diagonals, np.asarray(sizes, np.float64).reshape(-1, 1, 1))
    diagonals = (track_diagonals + np.linalg.norm(d[..., 2:] - d[..., :2], axis=-1)) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        apart = centres / diagonals
    return np.where(np.isfinite(apart), apart, np.inf).min(axis=1, initial=np.inf)


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
