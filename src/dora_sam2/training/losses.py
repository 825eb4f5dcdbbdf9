"""SAM 2's training losses (Meta's sam2 `training/loss_fns.py`, with its weights): sigmoid focal and dice
losses on the masks, L1 between the predicted IoU and the IoU the mask reaches, and binary cross-entropy
on the object score (is the object in the frame at all). Mask and IoU losses count only objects that are
there; for an ambiguous prompt (one click) only the best of the three candidate masks is trained, as an
ambiguous prompt has several right answers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

WEIGHTS = {"focal": 20.0, "dice": 1.0, "iou": 1.0, "object": 1.0}
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


@dataclass(frozen=True)
class Losses:
    focal: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    object: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return sum(WEIGHTS[name] * getattr(self, name) for name in WEIGHTS)

    def items(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in WEIGHTS}

    @staticmethod
    def mean(losses: list["Losses"]) -> "Losses":
        return Losses(*(torch.stack([getattr(x, name) for x in losses]).mean() for name in WEIGHTS))


def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., H, W) logits and 0/1 targets -> (...) mean focal loss per mask."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA).flatten(-2).mean(-1)


def dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (...) 1 - soft Dice coefficient per mask."""
    p = torch.sigmoid(logits).flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (p * target).sum(-1) + 1) / (p.sum(-1) + target.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (...) IoU of the thresholded mask with the target: what the IoU head predicts."""
    predicted = (logits > 0).flatten(-2).float()
    target = target.flatten(-2)
    union = ((predicted + target) > 0).float().sum(-1)
    return torch.where(union > 0, (predicted * target).sum(-1) / union.clamp(min=1), torch.ones_like(union))


def score(logits: torch.Tensor, predicted_iou: torch.Tensor, object_logits: torch.Tensor, target: torch.Tensor,
          present: torch.Tensor, ambiguous: torch.Tensor | None = None) -> Losses:
    """N objects' losses on one frame.

    logits: (N, M, H, W) candidate masks (M = 1, or 4 when `ambiguous` says which rows choose among the
    last three), at the target's size; predicted_iou (N, M); object_logits (N,); target (N, H, W) 0/1;
    present (N,) bool: the object is in the frame (its mask is not empty)."""
    target_m = target[:, None].expand_as(logits)
    focal_loss, dice_loss = focal(logits, target_m), dice(logits, target_m)
    iou_loss = (predicted_iou.float() - mask_iou(logits.detach(), target_m)).abs()
    if ambiguous is not None and logits.shape[1] == 4:
        # an ambiguous prompt is trained on its best candidate; the single-mask output on the others
        allowed = torch.zeros_like(focal_loss, dtype=torch.bool)
        allowed[:, 0] = ~ambiguous
        allowed[:, 1:] = ambiguous[:, None]
        combined = torch.where(allowed, WEIGHTS["focal"] * focal_loss + WEIGHTS["dice"] * dice_loss, torch.inf)
        best = combined.argmin(dim=1, keepdim=True)
        focal_loss, dice_loss = focal_loss.gather(1, best)[:, 0], dice_loss.gather(1, best)[:, 0]
        iou_loss = (iou_loss * allowed).sum(1) / allowed.sum(1)
    else:
        focal_loss, dice_loss, iou_loss = focal_loss[:, 0], dice_loss[:, 0], iou_loss[:, 0]
    weight = present.float()
    there = weight.sum().clamp(min=1)
    object_loss = F.binary_cross_entropy_with_logits(object_logits.float(), weight)
    return Losses((focal_loss * weight).sum() / there, (dice_loss * weight).sum() / there,
                  (iou_loss * weight).sum() / there, object_loss)
