"""Prompts sampled from an object's true mask: what a detector (a box, a little off) or a person (a few
clicks, inside the object or just outside it) would give. Meta's sam2 trains on the same kinds."""

from __future__ import annotations

import numpy as np

from ..domain import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, Prompt
from ..geometry import mask_boxes

BOX_NOISE = 0.1  # of the box's side: a detector's box is rarely tight
BOX_NOISE_MAX = 20.0  # pixels
MAX_CLICKS = 3


def box(mask: np.ndarray) -> np.ndarray:
    """(4,) xyxy in pixel edges around a non-empty (H, W) mask."""
    return mask_boxes(mask[None])[0].astype(np.float32)


def noisy_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = box(mask)
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], np.float32)
    noise = np.clip(rng.normal(0, BOX_NOISE, 4) * scale, -BOX_NOISE_MAX, BOX_NOISE_MAX)
    jittered = np.array([x0, y0, x1, y1], np.float32) + noise
    height, width = mask.shape
    jittered[[0, 2]] = np.clip(np.sort(jittered[[0, 2]]), 0, width)
    jittered[[1, 3]] = np.clip(np.sort(jittered[[1, 3]]), 0, height)
    return jittered


def clicks(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """1 to MAX_CLICKS clicks: the first inside the object, later ones inside (1) or just outside it (0),
    within its box grown by half. (K, 2) pixel centres and (K,) labels."""
    count = int(rng.integers(1, MAX_CLICKS + 1))
    inside = np.argwhere(mask)
    x0, y0, x1, y1 = box(mask)
    grow_x, grow_y = (x1 - x0) / 2, (y1 - y0) / 2
    near = np.zeros_like(mask)
    near[int(max(0, y0 - grow_y)) : int(y1 + grow_y), int(max(0, x0 - grow_x)) : int(x1 + grow_x)] = True
    outside = np.argwhere(near & ~mask)
    points, labels = [], []
    for k in range(count):
        positive = k == 0 or len(outside) == 0 or rng.random() < 0.5
        rows_cols = inside if positive else outside
        y, x = rows_cols[rng.integers(len(rows_cols))]
        points.append((x + 0.5, y + 0.5))
        labels.append(1 if positive else 0)
    return np.array(points, np.float32), np.array(labels, np.int64)


def sample(masks: np.ndarray, rng: np.random.Generator, box_share: float = 0.5) -> Prompt:
    """One prompt for each of N non-empty (N, H, W) masks: a noisy box (`box_share` of them) or clicks."""
    objects = []
    for mask in masks:
        if rng.random() < box_share:
            objects.append((noisy_box(mask, rng).reshape(2, 2), np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT])))
        else:
            objects.append(clicks(mask, rng))
    width = max(len(labels) for _, labels in objects)
    points = np.zeros((len(objects), width, 2), np.float32)
    labels = np.full((len(objects), width), Prompt.PAD, np.int64)
    for i, (p, lab) in enumerate(objects):
        points[i, : len(p)], labels[i, : len(lab)] = p, lab
    return Prompt("train", points, labels, ("",) * len(objects))
