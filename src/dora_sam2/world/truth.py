"""What each frame shows, exactly: every object's visible pixels, how much of it is seen, where it is."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .render import Footage, Silhouette, render
from .scene import Scene


@dataclass(frozen=True)
class ObjectTruth:
    track_id: int
    label: str
    mask: np.ndarray  # (H, W) bool: the pixels where this object is seen (after occlusion)
    silhouette: Silhouette | None  # its pixels in the frame had nothing been in front; None: out of the frame

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def visibility(self) -> float:
        """The share of its pixels in the frame that are seen: 1 in plain view, 0 wholly hidden (or out of
        the frame, where `silhouette` is None)."""
        return self.area / self.silhouette.area if self.silhouette else 0.0


@dataclass(frozen=True)
class FrameTruth:
    index: int
    rgb: np.ndarray  # (H, W, 3) uint8
    ids: np.ndarray  # (H, W) int16: render.Rendered.ids
    objects: tuple[ObjectTruth, ...]  # every object of the scene, in track id order, seen or not


def frames(scene: Scene, footage: Footage | None = None) -> Iterator[FrameTruth]:
    """The scene's frames, each with the truth about every object on it."""
    things = sorted(scene.objects, key=lambda thing: thing.track_id)
    for index, frame in enumerate(render(scene, footage)):
        objects = tuple(ObjectTruth(t.track_id, t.look.shape, frame.ids == t.track_id,
                                    frame.silhouettes.get(t.track_id)) for t in things)
        yield FrameTruth(index, frame.rgb, frame.ids, objects)
