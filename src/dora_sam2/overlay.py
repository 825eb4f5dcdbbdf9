"""Drawing masks on their frame: tint, outline, label and score. Kept apart from the data it draws."""

from __future__ import annotations

import zlib
from typing import NamedTuple

import cv2
import numpy as np

from .domain import Frame, Masks

# Distinct, saturated colours (RGB) that read well on camera footage.
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
], np.uint8)
ALPHA = 0.5
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.5
STROKE = 3  # the dark stroke under each caption's letters, so they read on any colour
PAD = 1  # pixels around a caption's letters that no other caption may take
GAP = 2  # pixels between a caption and the top of its mask


def colour_keys(masks: Masks) -> list[int]:
    """A colour that stays with its object: per track id when tracking, else per label, else per slot."""
    if masks.track_ids is not None:
        return [int(t) for t in masks.track_ids]
    return [zlib.crc32(label.encode()) if label else i for i, label in enumerate(masks.class_names)]


def colours(masks: Masks) -> np.ndarray:
    """(N, 3) RGB: each object's colour. Keys wrap in Python ints: a track id a sender chose may not fit int64."""
    return PALETTE[[key % len(PALETTE) for key in colour_keys(masks)]].reshape(-1, 3)


def draw(frame: Frame, masks: Masks) -> np.ndarray:
    """The frame (RGB) with every mask tinted in its colour, outlined, and captioned; no caption on another."""
    out = frame.rgb.copy()
    if len(masks) == 0:
        return out
    object_colours = colours(masks)
    covered = masks.masks.any(axis=0)
    # Where masks overlap, the later one wins: argmax over the reversed stack finds the last True.
    top = len(masks) - 1 - np.argmax(masks.masks[::-1], axis=0)
    tint = object_colours[top[covered]].astype(np.float32)
    out[covered] = (out[covered] * (1 - ALPHA) + tint * ALPHA).astype(np.uint8)
    colour_of = [tuple(int(c) for c in colour) for colour in object_colours]
    corners = [_outline(out, mask, colour) for mask, colour in zip(masks.masks, colour_of)]
    # Captions after every outline, so no outline crosses one.
    for (caption, box), colour in zip(caption_boxes(masks.captions(scores=True), corners, out.shape[:2]), colour_of):
        if box is not None:
            _write(out, caption, box, colour)
    return out


class Box(NamedTuple):
    """A caption's rectangle in pixels: top-left corner and size (right and bottom exclusive)."""

    x: int
    y: int
    width: int
    height: int

    def overlaps(self, other: "Box") -> bool:
        return (self.x < other.x + other.width and other.x < self.x + self.width
                and self.y < other.y + other.height and other.y < self.y + self.height)


def caption_boxes(captions: list[str], corners: list[tuple[int, int] | None],
                  frame: tuple[int, int]) -> list[tuple[str, Box | None]]:
    """Each caption with where it goes: above its mask's top-left corner, moved clear of those placed
    before it; None for a mask with nothing to caption (empty mask, empty caption). Placed top to bottom,
    left to right, not in slot order: the same objects get the same captions whatever order they come in."""
    boxes: list[Box | None] = [None] * len(captions)
    taken: list[Box] = []
    shown = [i for i, (caption, corner) in enumerate(zip(captions, corners)) if corner is not None and caption]
    for i in sorted(shown, key=lambda i: (corners[i][1], corners[i][0], captions[i])):
        boxes[i] = place_caption(caption_size(captions[i]), corners[i], taken, frame)
        taken.append(boxes[i])
    return list(zip(captions, boxes))


def caption_size(caption: str) -> tuple[int, int]:
    """(width, height) of the caption as drawn, stroke, descenders and padding included."""
    (width, height), baseline = cv2.getTextSize(caption, FONT, FONT_SCALE, STROKE)
    return width + 2 * PAD, height + baseline + 2 * PAD


def place_caption(size: tuple[int, int], corner: tuple[int, int], taken: list[Box],
                  frame: tuple[int, int]) -> Box:
    """Where a caption of `size` goes in a `frame` (height, width): just above `corner` (its mask's top-left),
    inside the frame; where that hits a caption in `taken`, the nearest free place straight above or below.
    A free place nearest the wished one either is the wished one or touches an edge (a caption's or the
    frame's), so those are all the places to try. With none free, the wished one: overlap beats no caption."""
    width, height = size
    frame_height, frame_width = frame
    x = min(max(corner[0], 0), max(frame_width - width, 0))
    lowest = max(frame_height - height, 0)
    wished = min(max(corner[1] - GAP - height, 0), lowest)
    column = [box for box in taken if box.x < x + width and x < box.x + box.width]
    tries = {wished, 0, lowest}
    tries.update(edge for box in column for edge in (box.y + box.height, box.y - height) if 0 <= edge <= lowest)
    for y in sorted(tries, key=lambda y: (abs(y - wished), y)):
        if not any(Box(x, y, width, height).overlaps(box) for box in column):
            return Box(x, y, width, height)
    return Box(x, wished, width, height)


def _outline(image: np.ndarray, mask: np.ndarray, colour) -> tuple[int, int] | None:
    """Draws the mask's outline; its top-left corner, None for an empty mask."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    cv2.drawContours(image, contours, -1, colour, 2)
    x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
    return x, y


def _write(image: np.ndarray, caption: str, box: Box, colour) -> None:
    (_, text_height), _ = cv2.getTextSize(caption, FONT, FONT_SCALE, STROKE)
    origin = (box.x + PAD, box.y + PAD + text_height)  # putText's origin is the baseline's left end
    cv2.putText(image, caption, origin, FONT, FONT_SCALE, (0, 0, 0), STROKE, cv2.LINE_AA)
    cv2.putText(image, caption, origin, FONT, FONT_SCALE, colour, 1, cv2.LINE_AA)
