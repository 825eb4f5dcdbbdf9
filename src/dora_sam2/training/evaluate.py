"""How well a model segments a dataset's objects from their boxes: the figure a fine-tuning run watches
(`dora-sam2-train --val`). benchmarks/quality.py measures the rest (clicks, tracking, peers)."""

from __future__ import annotations

import numpy as np

from ..domain import Frame, Prompt
from ..model import Sam2Backend
from .data import MIN_AREA, Dataset
from .prompts import box


def box_miou(backend: Sam2Backend, dataset: Dataset, frames: int = 50) -> float:
    """Mean IoU of the mask each object's tight box gives, with its true mask, over up to `frames`
    frames spread evenly through the dataset (the same frames every time)."""
    records = dataset.prompted_frames
    chosen = [records[i] for i in np.linspace(0, len(records) - 1, min(frames, len(records))).astype(int)]
    ious = []
    for record in chosen:
        truth = np.stack([record.mask(i) for i in record.instances if i.area >= MIN_AREA])
        frame = Frame("val", record.rgb(), None, "rgb8")
        masks, _ = backend.predict(backend.encode(frame), Prompt.from_boxes("val", np.stack([box(m) for m in truth])))
        union = (masks | truth).sum(axis=(1, 2))
        ious.extend((masks & truth).sum(axis=(1, 2)) / np.maximum(union, 1))
    return float(np.mean(ious))
