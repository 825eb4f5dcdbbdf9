"""A stand-in for trained SAM 2 weights, shared by the tracker's and the schedulers' tests.

SAM2's masks only follow objects with trained weights, and none can be downloaded here. `ColourSegmenter`
has the streaming model's interface and really segments: a prompt picks the colour under it, tracking
finds that colour's pixels in each new frame. `render` draws coloured squares, `detect` boxes them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dataclasses import dataclass

import numpy as np

from dora_sam2.domain import FOREGROUND, Frame, Prompt
from dora_sam2.streaming import FrameAnswer

W, H, SIZE = 120, 90, 14
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class ColourStep:
    """N objects on one frame: their masks, whether each is seen, the colour each is."""

    masks: np.ndarray  # (N, H, W) bool
    seen: np.ndarray  # (N,) bool
    colours: list

    def __len__(self):
        return len(self.masks)


class ColourMemory:
    def __init__(self):
        self.colour = None

    def add(self, frame_index, colour, prompted):
        self.colour = colour


class ColourSegmenter:
    """Segments by colour: the prompt's colour on the prompted frame, then that colour's pixels."""

    def new_memory(self):
        return ColourMemory()

    def encode(self, frame):
        return frame

    def prompt(self, frame, prompt):
        colours = []
        for points, labels in zip(prompt.points, prompt.point_labels):
            real = points[labels != Prompt.PAD]
            x, y = real.mean(axis=0).astype(int) if (labels != FOREGROUND).all() else real[0].astype(int)
            colours.append(tuple(frame.rgb[y, x]))
        return self._segment(frame, colours)

    def track(self, frame, memories, frame_index):
        return self._segment(frame, [m.colour for m in memories])

    def join(self, steps, order):
        masks = np.concatenate([s.masks for s in steps])[order]
        seen = np.concatenate([s.seen for s in steps])[order]
        colours = [c for s in steps for c in s.colours]
        return ColourStep(masks, seen, [colours[i] for i in order])

    def remember(self, frame, step, prompted, apart=False):  # colours never overlap: apart changes nothing
        return [tuple(int(c) for c in colour) for colour in step.colours]

    def postprocess(self, step, frame, apart=False):
        return FrameAnswer(step.masks, np.ones(len(step)), step.seen)

    @staticmethod
    def _segment(frame, colours):
        masks = np.stack([(frame.rgb == colour).all(axis=-1) & (np.array(colour) > 0).any() for colour in colours])
        seen = masks.reshape(len(masks), -1).any(axis=1)
        return ColourStep(masks, seen, list(colours))


def render(index: int, objects: dict) -> Frame:
    """objects: colour -> (x, y) top-left, or None when hidden."""
    rgb = np.zeros((H, W, 3), np.uint8)
    for colour, at in objects.items():
        if at is not None:
            x, y = at
            rgb[y : y + SIZE, x : x + SIZE] = colour
    return Frame("image", rgb, T0 + timedelta(seconds=index), "rgb8")


def detect(frame: Frame, objects: dict, labels: dict | None = None) -> Prompt:
    shown = [(c, at) for c, at in objects.items() if at is not None]
    boxes = np.array([[x, y, x + SIZE, y + SIZE] for _, (x, y) in shown], np.float32).reshape(-1, 4)
    names = [(labels or {}).get(c, "thing") for c, _ in shown]
    return Prompt.from_boxes("bbox", boxes, names, timestamp=frame.timestamp)
