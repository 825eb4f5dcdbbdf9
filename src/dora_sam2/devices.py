"""Which device and dtype the model runs on: the user's setting, or the fastest that is numerically safe."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .settings import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"DEVICE={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"DEVICE={name} but this torch build sees no CUDA GPU: set DEVICE=cpu (or auto), "
                "or install a CUDA build of torch."
            )
        if (device.index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"DEVICE={name} but only {torch.cuda.device_count()} CUDA device(s) exist.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("DEVICE=mps but Metal is not available here: set DEVICE=cpu (or auto).")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` picks the fastest dtype that is numerically safe on the device (applied as autocast)."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        # bf16 where the chosen GPU computes it natively (Ampere, compute capability 8.0, and later);
        # is_bf16_supported() also says yes where it is only emulated (T4, V100), and asks the current
        # device, not the chosen one.
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def prepare_cpu(threads: int = 0) -> None:
    """What a CPU run sets before it computes anything: `threads` (0: the cores this process may run
    on; torch's default is every core of the machine, which oversubscribes a pinned container), freed
    memory kept for the next frame (allocator.py), and subnormal floats taken as zero.

    A subnormal (under 1.2e-38 in fp32) costs x86 cores a microcode assist per operation, and
    attention makes them: the softmax of scores spread wider than about 87 underflows there. With 7% of
    one block's weights subnormal, its softmax ran 9x and the product after it 13x slower on this
    project's 2-core VM (1 thread, fp32). A value that small changes no mask. torch sets this on the
    calling thread (numpy there computes under it too), and its pool's threads inherit it when they
    start: so here, before the first parallel operation starts them."""
    from .allocator import keep_freed_memory

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    keep_freed_memory()
    torch.set_flush_denormal(True)


# The CPU features torch's kernels pick their paths by (x86, then Arm): two CPUs of one name that differ in
# these (a VM that hides AMX) can differ in which dtype is faster.
SPEED_FLAGS = frozenset({
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimdhp", "bf16", "i8mm", "sve", "sve2",
})


# What caps the instruction sets torch computes with (oneDNN: bf16 products and convolutions; MKL: fp32
# products; ATen's own kernels). Set, they make a CPU run the kernels of an older one, while /proc/cpuinfo
# still lists every flag: what was measured under them holds only under them.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16, and torch's oneDNN computes bf16 with them: bf16 matmuls run natively (2.5x
    faster than fp32 on our 2-core machine). oneDNN's own answer honours ONEDNN_MAX_CPU_ISA, under which
    bf16 is emulated hundreds of times slower; the flags alone would still say yes."""
    flags = _cpuinfo()
    if "amx_bf16" not in flags and "avx512_bf16" not in flags:
        return False
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return native is None or bool(native())


def cpu_kernels() -> dict:
    """The instruction sets torch's kernels run with here, as far as the caps set by hand change them."""
    caps = {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), **({"isa_caps": caps} if caps else {})}


def cpu_identity() -> dict:
    """This CPU as far as speed goes: its name and the features its kernels choose by (SPEED_FLAGS)."""
    name, flags = "", set()
    for line in _cpuinfo().splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Hardware") and not name:
            name = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return {"cpu": name or platform.processor() or platform.machine(), "machine": platform.machine(),
            "cpu_flags": sorted(flags & SPEED_FLAGS)}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""
