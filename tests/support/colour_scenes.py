"""A stand-in for trained SAM 2 weights, shared by the tracker's and the schedulers' tests.

SAM2's masks only follow objects with trained weights, and none can be downloaded here. `ColourSegmenter`
has the streaming model's interface and really segments: a prompt picks the colour under it, tracking
finds that colour's pixels in each new frame. `render` draws coloured squares, `detect` boxes them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import torch

from dora_sam2.domain import FOREGROUND, Frame, Prompt
from dora_sam2.video import FrameAnswer, Step

W, H, SIZE = 120, 90, 14
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


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

    def remember(self, frame, step, prompted):
        return [tuple(int(c) for c in colour) for colour in step.pointers.numpy()]

    def postprocess(self, step, frame):
        return FrameAnswer(step.logits.numpy() > 0, step.scores.numpy(), step.object_score_logits.numpy() > 0)

    @staticmethod
    def _segment(frame, colours):
        masks = np.stack([(frame.rgb == colour).all(axis=-1) & (np.array(colour) > 0).any() for colour in colours])
        seen = masks.reshape(len(masks), -1).any(axis=1)
        return Step(torch.from_numpy(np.where(masks, 1.0, -1.0)), torch.ones(len(masks)),
                    torch.from_numpy(np.where(seen, 1.0, -1.0)), torch.tensor(colours, dtype=torch.float32))


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
