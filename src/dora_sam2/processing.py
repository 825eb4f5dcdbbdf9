"""Frames into SAM 2 and its masks back onto the frames, as transformers' Sam2Processor does it, without
torchvision (which has no build beside the CPU torch): resize, normalise, upsample, threshold."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .precision import check_finite

# SAM2's input normalisation (ImageNet statistics), applied after scaling pixels to [0, 1].
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
# SAM 3's (transformers' IMAGENET_STANDARD_MEAN / _STD): pixels to [-1, 1], for its detector and tracker alike.
SAM3_NORMALISATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def preprocess(rgb: np.ndarray, size: int, device: torch.device,
               normalisation: tuple = (PIXEL_MEAN, PIXEL_STD)) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) normalised, resized to the square model input.

    As the processor does it: the uint8 image is resized (bilinear, antialiased, on the CPU, where torch
    has a uint8 kernel) and only then scaled to [0, 1]. Resizing float pixels instead differs by up to
    0.017 after normalisation. The one transfer to the device is the resized uint8 image."""
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    resized = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    pixels = resized.to(device).float().div_(255.0)
    mean, std = _on_device(normalisation, device)
    return (pixels - mean) / std


@functools.lru_cache(maxsize=8)
def _on_device(normalisation: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics on the device, made once rather than per frame."""
    mean, std = normalisation
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


# What SAM 2's non-overlapping constraint leaves to an object at a pixel another object claims more
# strongly: at most this logit (sigmoid 4.5e-5), as Meta's `_apply_non_overlapping_constraints`.
OUTCLAIMED_LOGIT = -10.0


def non_overlapping(logits: torch.Tensor) -> torch.Tensor:
    """(N, ...) mask logits of the objects of one frame, each pixel left to the object with the highest
    logit there: the others' are clamped to at most OUTCLAIMED_LOGIT (Meta's SAM 2 video predictor, its
    `non_overlap_masks` and `non_overlap_masks_for_mem_enc`). Ties go to the first object, as argmax does."""
    if len(logits) < 2:
        return logits
    # argmax over the objects as the last, contiguous dimension: along the first, torch's CPU kernel takes a
    # strided path 3-4x slower (9 ms for 4 masks at 256x256 on one core, against 2-3 ms)
    owner = logits.movedim(0, -1).contiguous().argmax(dim=-1).unsqueeze(0)
    objects = torch.arange(len(logits), device=logits.device).view(-1, *[1] * (logits.dim() - 1))
    return torch.where(owner == objects, logits, logits.clamp(max=OUTCLAIMED_LOGIT))


def upsample(low_res_logits: torch.Tensor, width: int, height: int, apart: bool = False) -> torch.Tensor:
    """(N, h, w) mask logits -> (N, H, W) bool on their device: one batched bilinear upsample, then
    logit > 0. `apart`: at the frame's size, each pixel to one object at most (`non_overlapping`)."""
    upsampled = F.interpolate(low_res_logits[:, None].float(), size=(height, width), mode="bilinear",
                              align_corners=False)
    if apart:
        upsampled = non_overlapping(upsampled)
    return upsampled[:, 0] > 0


def to_frame(logits: torch.Tensor, scores: torch.Tensor, width: int, height: int,
             *extra: torch.Tensor, apart: bool = False) -> tuple[np.ndarray, ...]:
    """An answer brought to the frame and to the CPU, in the one transfer back per answer: (N, H, W) bool
    masks, (N,) scores, and any `extra` per-object tensors, as numpy. `apart`: no pixel in two masks.

    Raises FloatingPointError when the model produced NaN or infinity (fp16 overflow, a broken
    checkpoint): checked here, once, so the device is waited for once."""
    masks = upsample(logits, width, height, apart)
    check_finite("the model", logits, scores)
    return masks.cpu().numpy(), scores.float().cpu().numpy(), *(t.cpu().numpy() for t in extra)
