"""One training step's forward pass: the node's own streaming path (video.py's `Sam2StreamingModel` with
`learning` on), scored with SAM 2's losses against the true masks.

Image stage: one frame, every object prompted (losses on all four candidate masks, as losses.py picks).
Video stage: a short clip, its objects prompted on the first frame and followed through memory on the
rest exactly as the tracker follows them, a loss on every frame; in a share of clips, prompted again on a
later frame, as a detection round prompts the tracks it confirms.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..domain import Frame
from ..video import Sam2StreamingModel
from . import losses, prompts
from .data import ClipSample, ImageSample


def image_step(model: Sam2StreamingModel, sample: ImageSample, rng: np.random.Generator,
               box_share: float) -> losses.Losses:
    features = model.encode(_frame(sample.rgb))
    out, ambiguous = model.candidates(features, prompts.sample(sample.masks, rng, box_share))
    target = _targets(sample.masks, model)
    present = torch.ones(len(sample.masks), dtype=torch.bool, device=target.device)
    return losses.score(_at_input(out.masks, model), out.iou, out.object_score_logits[:, 0], target, present,
                        ambiguous)


def clip_step(model: Sam2StreamingModel, sample: ClipSample, rng: np.random.Generator,
              box_share: float, prompt_again: float = 0.0) -> losses.Losses:
    memories = [model.new_memory() for _ in range(sample.masks.shape[1])]
    again = _prompted_again(sample, rng, prompt_again)
    scored = []
    for t, rgb in enumerate(sample.frames):
        features = model.encode(_frame(rgb))
        target = _targets(sample.masks[t], model)
        present = torch.from_numpy(sample.masks[t].any(axis=(1, 2))).to(target.device)
        prompted = t in (0, again)
        if prompted:
            out, ambiguous = model.candidates(features, prompts.sample(sample.masks[t], rng, box_share))
            scored.append(losses.score(_at_input(out.masks, model), out.iou, out.object_score_logits[:, 0],
                                       target, present, ambiguous))
            step = model.choose(out, ambiguous)
        else:
            step = model.track(features, memories, t)
            scored.append(losses.score(_at_input(step.logits[:, None], model), step.scores[:, None],
                                       step.object_score_logits, target, present))
        for memory, remembered in zip(memories, model.remember(features, step, [prompted] * len(memories))):
            memory.add(t, remembered, prompted=prompted)
    return losses.Losses.mean(scored)


def _prompted_again(sample: ClipSample, rng: np.random.Generator, share: float) -> int | None:
    """The frame on which a clip's objects are prompted again (a `share` of clips), or None: one with a
    tracked frame before it and one after, so that the frame after reads what the tracker's memory holds after
    a round (both prompts and the older tracked frame), and with every object in view (a round prompts only
    what it sees; this keeps the batch whole). The generator is not drawn from at 0, so runs without it
    sample as before."""
    frames = len(sample.frames)
    if share <= 0 or frames < 4 or rng.random() >= share:
        return None
    again = int(rng.integers(2, frames - 1))
    return again if sample.masks[again].any(axis=(1, 2)).all() else None


def _frame(rgb: np.ndarray) -> Frame:
    return Frame("train", rgb, None, "rgb8")


def _at_input(logits: torch.Tensor, model: Sam2StreamingModel) -> torch.Tensor:
    """(N, M, h, w) low-resolution logits -> (N, M, S, S) at the model's square input, where the loss is taken."""
    size = model.backend.input_size
    n, m = logits.shape[:2]
    return F.interpolate(logits.float().flatten(0, 1)[:, None], size=(size, size), mode="bilinear",
                         align_corners=False).view(n, m, size, size)


def _targets(masks: np.ndarray, model: Sam2StreamingModel) -> torch.Tensor:
    """(N, H, W) bool masks -> (N, S, S) 0/1 at the model's input, squeezed as the frame is (area-weighted)."""
    size = model.backend.input_size
    resized = [cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) > 0.5 for m in masks]
    return torch.from_numpy(np.stack(resized).astype(np.float32)).to(model.device)
