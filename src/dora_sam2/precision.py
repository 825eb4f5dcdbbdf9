"""How a checkpoint's models compute: one device and one dtype for all of them (SAM 3's tracker and its
finder read one ViT, so they switch together), the autocast that applies the dtype, the check that an
answer holds numbers, and the one way out when float16 overflows: the rest of the run in float32.

Holders of what depends on the dtype (the decoder's copy, kept features) compare the dtype they made it
in with `Precision.dtype` and make it again when that changed, whichever holder changed it.

torch is imported where it is used: the engine and the phrase search, which hold no torch, retry
through `retried_in_float32` here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

log = logging.getLogger("dora_sam2")

R = TypeVar("R")


class Precision:
    """The device and dtype (applied as autocast) that the models of one checkpoint share."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device = device
        self.dtype = dtype

    def use(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def autocast(self):
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def fall_back_to_float32(self) -> bool:
        """After float16 gave NaN or infinity (its range ends at 65504; bf16's does not): the rest of the
        run in float32, said once. False when not in float16, where a retry would not help."""
        import torch

        if self.dtype != torch.float16:
            return False
        log.warning("float16 overflowed (NaN or infinite outputs) on %s: running in float32 from now on. "
                    "Set DTYPE=float32 to start that way.", self.device)
        self.dtype = torch.float32
        return True


def check_finite(what: str, *tensors: torch.Tensor) -> None:
    """FloatingPointError when any of `tensors` holds NaN or infinity (float16 overflow, a broken
    checkpoint): one reduction and one wait for the device, however many tensors."""
    import torch

    finite = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
    if not bool(finite.cpu()):
        raise FloatingPointError(f"{what} produced NaN or infinite outputs")


def retried_in_float32(compute: Callable[[], R], fall_back: Callable[[], bool],
                       forget: Callable[[], None] = lambda: None) -> R:
    """`compute()`; where it overflowed and `fall_back` (a model's `fall_back_to_float32`) switched to
    float32, what was computed in the old dtype is `forget`-ed and it is computed again. A failure that
    float32 would not mend is raised as it came."""
    try:
        return compute()
    except FloatingPointError:
        if not fall_back():
            raise
        forget()
        return compute()
