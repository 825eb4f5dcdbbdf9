"""The node's vocabulary: a camera `Frame`, a `Prompt` saying what to segment, the `Masks` that answer it.

Each is validated once, when it is built (by the codecs); past that, code trusts them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

import numpy as np

# Point labels as SAM2's prompt encoder reads them.
BACKGROUND, FOREGROUND, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 0, 1, 2, 3


class InputError(ValueError):
    """A message the node cannot use. Its text is the one log line the user sees."""

    def __init__(self, input_id: str, problem: str):
        super().__init__(f"input '{input_id}': {problem}")
        self.input_id = input_id
        self.problem = problem


@dataclass(frozen=True)
class Frame:
    """One camera image, decoded to RGB."""

    image_id: str  # the dataflow input it came from, e.g. "image" or "image_left"
    rgb: np.ndarray  # (H, W, 3) uint8
    timestamp: datetime | None  # the camera's, as dora forwards it; None on dora 0.5
    encoding: str  # what the camera sent, so drawings can be sent back in its channel order

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]


@dataclass(frozen=True)
class Prompt:
    """What to segment on one frame: N objects, each given by a few labelled points.

    A box is two points labelled BOX_TOP_LEFT and BOX_BOTTOM_RIGHT, which is how SAM2 itself
    encodes boxes, so boxes and clicks share one representation and one batched decoder call.
    `points` is (N, K, 2) in frame pixels, `point_labels` (N, K); objects with fewer than K points
    are padded with label PAD.
    """

    PAD = -10  # transformers' "ignore this point" label

    input_id: str
    points: np.ndarray  # (N, K, 2) float32, pixel coordinates of the source frame
    point_labels: np.ndarray  # (N, K) int64
    class_names: tuple[str, ...]  # one per object: the detector's label, or "" (metadata `labels`)
    image_id: str | None = None  # which camera; None means the only (or first) one
    timestamp: datetime | None = None  # the frame the prompt was computed on
    object_ids: tuple[int, ...] | None = None  # the click UI's object index, when it sends one
    confidences: np.ndarray | None = None  # (N,) the detector's confidence per box, when it sends one

    def __post_init__(self):
        n = self.points.shape[0]
        assert self.points.ndim == 3 and self.points.shape[2] == 2, self.points.shape
        assert self.point_labels.shape == self.points.shape[:2], (self.point_labels.shape, self.points.shape)
        assert len(self.class_names) == n, (len(self.class_names), n)

    @property
    def num_objects(self) -> int:
        return self.points.shape[0]

    def num_points(self) -> np.ndarray:
        """(N,) points given per object, padding aside (a box counts its two corners)."""
        return (self.point_labels != self.PAD).sum(axis=1)

    def by_point_count(self) -> list[tuple[np.ndarray, "Prompt"]]:
        """(object indices, their prompt without padding), one group per number of points. SAM2's mask
        decoder attends over every point token, padding too: a padded object's mask would depend on the
        objects it was batched with. Unpadded groups give each object the mask it gets alone."""
        counts = self.num_points()
        groups = []
        for count in np.unique(counts):
            members = counts == count
            group = self.keep(members)
            real_first = np.argsort(group.point_labels == self.PAD, axis=1, kind="stable")[:, :count]
            groups.append((np.flatnonzero(members), dataclasses.replace(
                group, points=np.take_along_axis(group.points, real_first[..., None], axis=1),
                point_labels=np.take_along_axis(group.point_labels, real_first, axis=1))))
        return groups

    @classmethod
    def from_boxes(cls, input_id: str, boxes_xyxy: np.ndarray, class_names=None, **kw) -> "Prompt":
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 2, 2)
        point_labels = np.tile(np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int64), (len(boxes), 1))
        class_names = tuple(class_names) if class_names else ("",) * len(boxes)
        return cls(input_id, boxes, point_labels, class_names, **kw)

    def keep(self, objects: np.ndarray) -> "Prompt":
        """This prompt with only the objects where `objects` (N,) is True."""
        return dataclasses.replace(self, points=self.points[objects], point_labels=self.point_labels[objects],
                                   class_names=_cut(self.class_names, objects),
                                   object_ids=_cut(self.object_ids, objects),
                                   confidences=_cut(self.confidences, objects))

    def most_confident(self, limit: int) -> "Prompt":
        """At most `limit` objects, in their order: the detector's most confident ones (without
        confidences, the first ones)."""
        if self.num_objects <= limit:
            return self
        keep = np.zeros(self.num_objects, bool)
        if self.confidences is None:
            keep[:limit] = True
        else:
            keep[np.argsort(-self.confidences, kind="stable")[:limit]] = True
        return self.keep(keep)

    def boxes_outside(self, width: int, height: int) -> np.ndarray:
        """(N,) True for each object that is a box lying wholly outside a width x height frame: clipped, it
        would be a line on the edge, and SAM2 would still answer it with a mask."""
        if self.points.shape[1] < 2:
            return np.zeros(self.num_objects, bool)
        box = (self.point_labels[:, :2] == (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT)).all(axis=1)
        (x1, y1), (x2, y2) = self.points[:, 0].T, self.points[:, 1].T
        return box & ((x2 <= 0) | (y2 <= 0) | (x1 >= width) | (y1 >= height))

    @classmethod
    def from_points(cls, input_id: str, points_xy: np.ndarray, point_labels, class_name: str = "", **kw) -> "Prompt":
        points = np.asarray(points_xy, np.float32).reshape(1, -1, 2)
        point_labels = np.asarray(point_labels, np.int64).reshape(1, -1)
        return cls(input_id, points, point_labels, (class_name,), **kw)


@dataclass(frozen=True)
class Masks:
    """The answer to one prompt: N binary masks over the source frame, parallel to class names and scores
    (metadata `labels` and `scores` on the wire).

    Indexed as supervision's `Detections` is: `masks[keep]`, with an (N,) bool array, indices, a slice or
    one index, is the answer with those objects only, every per-object field cut alike."""

    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,) float32: SAM2's predicted IoU per mask
    class_names: tuple[str, ...]
    image_id: str
    timestamp: datetime | None
    track_ids: tuple[int, ...] | None = None
    visible: np.ndarray | None = None  # (N,) bool: SAM2's object score above 0 (it sees the object)
    # (N, 4) xyxy frame pixels: the model's own box of each object, where it gives one (SAM 3's, which a
    # tracker is prompted with). The `boxes2d` output is drawn around the masks, whatever this holds.
    boxes: np.ndarray | None = None

    def __post_init__(self):
        assert self.masks.ndim == 3 and self.masks.dtype == np.bool_, (self.masks.shape, self.masks.dtype)
        assert len(self.scores) == len(self.class_names) == len(self.masks), (
            len(self.scores), len(self.class_names), len(self.masks))
        assert self.boxes is None or self.boxes.shape == (len(self.masks), 4), self.boxes.shape

    def __len__(self) -> int:
        return self.masks.shape[0]

    def __getitem__(self, objects) -> "Masks":
        """These objects only, in the order given; one index is a Masks of one, as in supervision."""
        if not isinstance(objects, slice):
            objects = np.atleast_1d(np.asarray(objects))
            if objects.size == 0:  # [] reads as floats, which numpy does not index with
                objects = objects.astype(np.intp)
        return dataclasses.replace(self, masks=self.masks[objects], scores=self.scores[objects],
                                   class_names=_cut(self.class_names, objects), track_ids=_cut(self.track_ids, objects),
                                   visible=_cut(self.visible, objects), boxes=_cut(self.boxes, objects))

    @property
    def height(self) -> int:
        return self.masks.shape[1]

    @property
    def width(self) -> int:
        return self.masks.shape[2]

    def captions(self, scores: bool = False) -> list[str]:
        """Per object, how every view names it: "#id label" (track mode) or "label", and its score if
        asked; the parts it has, so an unlabelled track is "#3" and an unlabelled mask "" ."""
        ids = self.track_ids or [None] * len(self)
        return [" ".join(part for part in (f"#{i}" if i is not None else "", label, f"{score:.2f}" if scores else "")
                         if part) for i, label, score in zip(ids, self.class_names, self.scores)]


@dataclass(frozen=True)
class Phrases:
    """Concepts to find by name (SAM 3): every instance of each phrase is an object, labelled by the phrase.
    Kept until the next `text` message replaces them; none (an empty message) clears them."""

    texts: tuple[str, ...]
    exemplars: np.ndarray | None = None  # (E, 4) xyxy frame pixels: boxes showing what the phrases mean
    exemplar_labels: np.ndarray | None = None  # (E,) 1 where an exemplar is an instance, 0 where it is not

    def __bool__(self) -> bool:
        return bool(self.texts)


def _cut(values, objects):
    """A per-object field (an array, a tuple or None) cut to `objects` as numpy cuts an array; a tuple stays
    a tuple of its own items (an object array, so that strings are not made numpy's)."""
    if values is None:
        return None
    if isinstance(values, np.ndarray):
        return values[objects]
    items = np.empty(len(values), object)
    items[:] = values
    return tuple(items[objects].tolist())
