"""The streaming protocol between the tracker and a model: what tracking.Tracker asks of a model that
follows objects through a video (`StreamingModel`), the masks it answers with (`FrameAnswer`), and the
bounded memory it keeps per object (`ObjectMemory`). No torch here: video.py's Sam2StreamingModel is the
model we ship; the tests' colour segmenter (tests/support/colour_scenes.py) is another.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .domain import Frame, Prompt


@dataclass(frozen=True)
class FrameAnswer:
    """A step's masks at the frame's size, on the CPU."""

    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,) predicted IoU
    visible: np.ndarray  # (N,) bool: SAM2's object score above 0


class ObjectMemory:
    """One object's memory bank, bounded as SAM2 reads it.

    SAM2 attends to the object's prompted frames, its last `num_maskmem - 1` tracked frames, and the
    pointers of its last `max_object_pointers - 1` tracked frames. Prompted frames are capped too: the
    first (often a person's careful click) and the newest (`prompted_kept` in all), so a detector that
    re-prompts every few frames does not grow cost or memory. A memory is the model's own; it has a
    `pointer` (SAM 2's object pointer), which SAM 2 keeps for longer than the rest.
    """

    def __init__(self, recent: int, pointers: int, prompted_kept: int = 2):
        self.prompted: dict[int, object] = {}
        self.recent: deque[tuple[int, object]] = deque(maxlen=recent)
        self.recent_pointers: deque[tuple[int, object]] = deque(maxlen=pointers)
        self._prompted_kept = prompted_kept

    def add(self, frame_index: int, memory, prompted: bool) -> None:
        if prompted:
            self.prompted[frame_index] = memory
            while len(self.prompted) > self._prompted_kept:
                del self.prompted[sorted(self.prompted)[1]]  # keep the first and the newest
        else:
            self.recent.append((frame_index, memory))
            self.recent_pointers.append((frame_index, memory.pointer))

    def forget_tracked(self) -> None:
        """Drops the tracked frames (and their pointers), keeping the prompted ones: what FORGET_ON_PROMPT does
        when a new prompt comes, so that the frames after it read the prompt and not the guesses before it."""
        self.recent.clear()
        self.recent_pointers.clear()

    def spatial(self, frame_index: int) -> list[tuple[int, object]]:
        """(temporal offset, memory) in SAM2's order: prompted frames (offset 0), then tracked, oldest first."""
        window = self.recent.maxlen
        tracked = [(frame_index - i, m) for i, m in self.recent if 1 <= frame_index - i <= window]
        return [(0, m) for i, m in self.prompted.items() if i <= frame_index] + sorted(tracked, key=lambda x: -x[0])

    def pointers(self, frame_index: int) -> list[tuple[int, object]]:
        """(frames ago, pointer): prompted frames first, then tracked frames, newest first."""
        window = self.recent_pointers.maxlen
        prompted = [(frame_index - i, m.pointer) for i, m in self.prompted.items() if i <= frame_index]
        tracked = [(frame_index - i, p) for i, p in self.recent_pointers if 1 <= frame_index - i <= window]
        return prompted + sorted(tracked, key=lambda x: x[0])

    def layout(self, frame_index: int) -> tuple[int, int]:
        """Objects with the same layout can share one batch through memory attention."""
        return len(self.spatial(frame_index)), len(self.pointers(frame_index))


class StreamingModel(Protocol):
    """What tracking.Tracker asks of a streaming model (Sam2StreamingModel is the one we ship; the tests'
    colour segmenter is another): per frame, its features once; then a step for the objects prompted on it
    and one for those followed from memory, joined in the tracks' order; their memories; the masks at the
    frame's size. Features, steps and memories are the model's own: the tracker only hands them back."""

    def new_memory(self) -> "ObjectMemory": ...

    def encode(self, frame: Frame) -> object: ...

    def prompt(self, features, prompt: Prompt) -> object: ...

    def track(self, features, memories: list["ObjectMemory"], frame_index: int) -> object: ...

    def join(self, steps: list, order: list[int]) -> object:
        """Steps of object groups as one, in `order` (indices into their concatenation)."""
        ...

    def remember(self, features, step: object, prompted: list[bool], apart: bool = False) -> list:
        """`apart`: each pixel remembered by one object only, the one that claims it most (NON_OVERLAP)."""
        ...

    def postprocess(self, step: object, frame: Frame, apart: bool = False) -> "FrameAnswer":
        """`apart`: no pixel in two objects' masks (NON_OVERLAP=all)."""
        ...

    def fall_back_to_float32(self) -> bool: ...
