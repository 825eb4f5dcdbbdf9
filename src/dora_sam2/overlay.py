"""Drawing masks on their frame: tint, outline, label and score. Kept apart from the data it draws."""

from __future__ import annotations

import zlib

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


def colour_keys(masks: Masks) -> list[int]:
    """A colour that stays with its object: per track id when tracking, else per label, else per slot."""
    if masks.track_ids is not None:
        return [int(t) for t in masks.track_ids]
    return [zlib.crc32(label.encode()) if label else i for i, label in enumerate(masks.class_names)]


def colours(masks: Masks) -> np.ndarray:
    """(N, 3) RGB: each object's colour. Keys wrap in Python ints: a track id a sender chose may not fit int64."""
    return PALETTE[[key % len(PALETTE) for key in colour_keys(masks)]].reshape(-1, 3)


def draw(frame: Frame, masks: Masks) -> np.ndarray:
    """The frame (RGB) with every mask tinted in its colour, outlined, and captioned."""
    out = frame.rgb.copy()
    if len(masks) == 0:
        return out
    object_colours = colours(masks)
    covered = masks.masks.any(axis=0)
    # Where masks overlap, the later one wins: argmax over the reversed stack finds the last True.
    top = len(masks) - 1 - np.argmax(masks.masks[::-1], axis=0)
    tint = object_colours[top[covered]].astype(np.float32)
    out[covered] = (out[covered] * (1 - ALPHA) + tint * ALPHA).astype(np.uint8)
    for mask, colour, caption in zip(masks.masks, object_colours, masks.captions(scores=True)):
        _outline_and_caption(out, mask, tuple(int(c) for c in colour), caption)
    return out


def _outline_and_caption(image: np.ndarray, mask: np.ndarray, colour, caption: str) -> None:
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return
    cv2.drawContours(image, contours, -1, colour, 2)
    x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
    origin = (x, max(y - 6, 12))
    cv2.putText(image, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
