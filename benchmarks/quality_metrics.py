"""The figures benchmarks/quality.py reports, each held to its published definition.

- J and F: DAVIS's region similarity (mask IoU; a frame where both masks are empty scores 1) and
  boundary F-measure (boundaries matched within ceil(0.008 x the frame's diagonal) pixels), as
  `vos-benchmark` computes them, per object and frame, averaged over each object's frames and then over
  objects (DAVIS's J-Mean and F-Mean); J&F is their mean.
- HOTA (with DetA and AssA), IDF1, ID switches and MOTA: TrackEval's own code (`trackeval.metrics`), on
  mask IoU, one sequence per clip, combined over clips as TrackEval combines sequences.
- Frames to recover after an occlusion, ids kept through it, false and never-confirmed tracks: ours,
  defined in their functions below, on the same per-frame matching as CLEAR MOT (Hungarian on mask
  IoU, at least MATCH_IOU).

Inputs are plain arrays, so that tests can hold every figure to values worked out by hand
(tests/test_quality.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MATCH_IOU = 0.5  # a prediction and a true object are one when their masks overlap this much (CLEAR MOT's)
TRACKEVAL_QUIET = {"PRINT_CONFIG": False}


# ---------------------------------------------------------------------------- masks


def iou_matrix(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(G, P) mask IoU between (G, H, W) and (P, H, W) bool masks; 0 where both are empty."""
    if len(truth) == 0 or len(predicted) == 0:
        return np.zeros((len(truth), len(predicted)))
    t = truth.reshape(len(truth), -1).astype(np.float32)
    p = predicted.reshape(len(predicted), -1).astype(np.float32)
    inter = t @ p.T
    union = t.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float64)


def centre_click(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the visible pixel farthest from the object's edge, the frame's edge counting as one (a
    click a person would put in the middle of what they see)."""
    import cv2

    padded = np.pad(mask, 1).astype(np.uint8)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


# ---------------------------------------------------------------------------- J & F


class JAndF:
    """One object's J and F over the frames fed to it (vos-benchmark's Evaluator on its two-valued map)."""

    def __init__(self):
        from vos_benchmark.evaluator import Evaluator

        self._evaluator = Evaluator()

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        self._evaluator.feed_frame(predicted.astype(np.uint8), truth.astype(np.uint8))

    def result(self) -> tuple[float, float] | None:
        """(J, F) as fractions; None when the object was never seen on the frames fed (DAVIS leaves it out)."""
        j, f = self._evaluator.conclude()
        return (j[1] / 100, f[1] / 100) if 1 in j else None


def j_and_f(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """J and F of one object over frames of (H, W) bool masks."""
    score = JAndF()
    for p, t in zip(predicted, truth, strict=True):
        score.add(p, t)
    return score.result()


# ---------------------------------------------------------------------------- identities (TrackEval)


@dataclass(frozen=True)
class FrameMatch:
    """One frame as the identity metrics see it: the true objects present, the predictions shown (a
    non-empty mask) and the IoU of each pair."""

    truth_ids: np.ndarray  # (G,) int
    predicted_ids: np.ndarray  # (P,) int
    iou: np.ndarray  # (G, P)

    def matches(self, threshold: float = MATCH_IOU) -> dict[int, int]:
        """True id -> predicted id: the assignment that maximises total IoU among pairs of at least
        `threshold` (CLEAR MOT's per-frame matching, without its preference for last frame's pairs)."""
        from scipy.optimize import linear_sum_assignment

        if self.iou.size == 0:
            return {}
        rows, cols = linear_sum_assignment(-np.where(self.iou >= threshold, self.iou, 0))
        return {int(self.truth_ids[r]): int(self.predicted_ids[c]) for r, c in zip(rows, cols)
                if self.iou[r, c] >= threshold}


def trackeval_sequence(frames: Sequence[FrameMatch]) -> dict:
    """A clip as TrackEval's metrics read one sequence: ids renumbered from 0, similarity per frame."""
    truth = {i: n for n, i in enumerate(sorted({int(i) for f in frames for i in f.truth_ids}))}
    predicted = {i: n for n, i in enumerate(sorted({int(i) for f in frames for i in f.predicted_ids}))}
    return {
        "num_timesteps": len(frames),
        "num_gt_ids": len(truth),
        "num_tracker_ids": len(predicted),
        "num_gt_dets": sum(len(f.truth_ids) for f in frames),
        "num_tracker_dets": sum(len(f.predicted_ids) for f in frames),
        "gt_ids": [np.array([truth[int(i)] for i in f.truth_ids], int) for f in frames],
        "tracker_ids": [np.array([predicted[int(i)] for i in f.predicted_ids], int) for f in frames],
        "similarity_scores": [np.asarray(f.iou, float).reshape(len(f.truth_ids), len(f.predicted_ids))
                              for f in frames],
    }


def identity_scores(sequences: Sequence[Sequence[FrameMatch]]) -> dict:
    """HOTA, DetA, AssA (averaged over TrackEval's IoU thresholds 0.05 to 0.95), IDF1, ID switches and
    MOTA over clips, as TrackEval combines sequences."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    metrics = {"hota": HOTA(TRACKEVAL_QUIET), "identity": Identity(TRACKEVAL_QUIET), "clear": CLEAR(TRACKEVAL_QUIET)}
    per_clip = {name: {} for name in metrics}
    for n, frames in enumerate(sequences):
        data = trackeval_sequence(frames)
        for name, metric in metrics.items():
            per_clip[name][n] = metric.eval_sequence(data)
    combined = {name: metric.combine_sequences(per_clip[name]) for name, metric in metrics.items()}
    hota, identity, clear = combined["hota"], combined["identity"], combined["clear"]
    return {"HOTA": float(np.mean(hota["HOTA"])), "DetA": float(np.mean(hota["DetA"])),
            "AssA": float(np.mean(hota["AssA"])), "IDF1": float(identity["IDF1"]), "IDSW": int(clear["IDSW"]),
            "MOTA": float(clear["MOTA"])}


# ---------------------------------------------------------------------------- occlusions


@dataclass(frozen=True)
class Gap:
    """A true object not seen from frame `start` until frame `end` (seen again there), within a clip."""

    track_id: int
    start: int
    end: int
    outside: bool  # out of the frame on some of it (an exit), not only hidden behind something
    staged: bool = False  # hidden where its scene was built to hide it (an occlusion, crossing or exit)

    @property
    def frames(self) -> int:
        return self.end - self.start


def gaps(track_id: int, seen: Sequence[bool], outside: Sequence[bool] = (), staged: Sequence[bool] = ()) -> list[Gap]:
    """Runs of frames where the object is not seen, with frames where it is seen before and after.
    `outside`, `staged`: per frame, the object is out of the frame; its scene hides it on purpose."""
    outside = list(outside) or [False] * len(seen)
    staged = list(staged) or [False] * len(seen)
    found, start = [], None
    for t, visible in enumerate(seen):
        if not visible and start is None and t > 0 and seen[t - 1]:
            start = t
        elif visible and start is not None:
            found.append(Gap(track_id, start, t, any(outside[start:t]), any(staged[start:t])))
            start = None
    return found


@dataclass(frozen=True)
class Recovery:
    gap: Gap
    frames_to_recover: int | None  # frames from its return until a prediction matches it; None: never
    id_before: int | None  # the predicted id last matched in the run of frames in view before the gap; None: none was
    id_after: int | None  # ... on the first frame it is matched again

    @property
    def same_id(self) -> bool | None:
        """Whether the object came back under the id it had (None: it had none before). One never found
        again kept no id: judging only those found would score a method that drops every hidden object
        on none, and one that finds a few again on those few."""
        if self.id_before is None:
            return None
        return self.id_before == self.id_after


def recoveries(frames: Sequence[FrameMatch], clip_gaps: Sequence[Gap]) -> list[Recovery]:
    """For each gap: how many frames after the object's return a prediction matches it again, and
    whether that prediction has the id last matched on it while it was in view before the gap. Not only
    on its last frame: an object sliding behind something shows a sliver there, which no mask matches by
    half, and the gap would go unjudged (on 24 world occlusion clips, 2 of ours' 40 were judged)."""
    matched = [f.matches() for f in frames]
    found = []
    for gap in clip_gaps:
        in_view_from = max((g.end for g in clip_gaps if g.track_id == gap.track_id and g.end <= gap.start), default=0)
        before = next((matched[t][gap.track_id] for t in range(gap.start - 1, in_view_from - 1, -1)
                       if gap.track_id in matched[t]), None)
        back = next((t for t in range(gap.end, len(frames)) if gap.track_id in matched[t]), None)
        found.append(Recovery(gap, None if back is None else back - gap.end, before,
                              None if back is None else matched[back][gap.track_id]))
    return found


def recovery_summary(found: Sequence[Recovery], fps: float, up_to_seconds: float = 1.0) -> dict:
    """Per kind of gap (hidden in the frame: occlusions; out of it: exits), all of them, those up to
    `up_to_seconds`, and of those the staged ones (what the scene was built around, apart from objects
    that happen to pass behind one another): gaps recovered, median frames to recover, and the share of
    ids kept (over the gaps whose object was tracked before)."""
    def summary(items: list[Recovery]) -> dict:
        back = [r.frames_to_recover for r in items if r.frames_to_recover is not None]
        judged = [r.same_id for r in items if r.same_id is not None]
        return {"gaps": len(items), "recovered": len(back), "median_frames_to_recover":
                float(np.median(back)) if back else None, "same_id_share": float(np.mean(judged)) if judged else None,
                "same_id_judged": len(judged), "same_id_kept": sum(judged)}

    short = round(up_to_seconds * fps)
    kinds = {"occlusions": [r for r in found if not r.gap.outside], "exits": [r for r in found if r.gap.outside]}
    out = {"all": summary(list(found))}
    for kind, items in kinds.items():
        out[kind] = summary(items)
        out[f"staged_{kind}"] = summary([r for r in items if r.gap.staged])
        brief = [r for r in items if r.gap.frames <= short]
        out[f"{kind}_up_to_{up_to_seconds:g}s"] = summary(brief)
        out[f"staged_{kind}_up_to_{up_to_seconds:g}s"] = summary([r for r in brief if r.gap.staged])
    return out


# ---------------------------------------------------------------------------- tracks


@dataclass
class TrackLife:
    """One predicted id: where it was shown, whether it ever matched a true object, whether a detection
    round after its first frame ever landed on it."""

    first: int
    last: int
    matched: bool = False
    later_rounds: int = 0  # detection rounds (with boxes) after its first frame, while it was listed
    confirmed: bool = False


@dataclass
class TrackCensus:
    """False and never-confirmed tracks, from what a method answered and the detections it was fed.

    A false track: an id whose mask never matches a true object (IoU >= MATCH_IOU) on any frame.
    A never-confirmed track: an id that was listed through at least one detection round after its first
    frame, and on which no detection of those rounds landed (its mask's box and the detection box at
    IoU >= MATCH_IOU): a track no detector supports."""

    lives: dict[int, TrackLife] = field(default_factory=dict)

    def add(self, t: int, listed_ids: Sequence[int], boxes: np.ndarray, frame: FrameMatch,
            detections: np.ndarray | None) -> None:
        """Frame t: the ids the method listed (shown or not), their masks' boxes (NaN when empty), the
        frame's matching, and this frame's detection boxes (None when no round ran)."""
        matched = set(frame.matches().values())
        for i, box in zip(listed_ids, boxes):
            life = self.lives.setdefault(int(i), TrackLife(t, t))
            life.last = t
            life.matched |= int(i) in matched
            if detections is not None and len(detections) and life.first < t:
                life.later_rounds += 1
                life.confirmed |= bool(not np.isnan(box).any() and box_iou(box[None], detections).max() >= MATCH_IOU)

    def summary(self) -> dict:
        lives = self.lives.values()
        return {"ids": len(self.lives), "false_tracks": sum(not life.matched for life in lives),
                "never_confirmed": sum(life.later_rounds > 0 and not life.confirmed for life in lives)}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of xyxy boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
