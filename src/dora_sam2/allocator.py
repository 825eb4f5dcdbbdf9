"""Freed memory kept in the process for the next frame, not handed back to the kernel and faulted in again.

A frame of hiera-tiny@512 allocates and frees a few hundred MB in tensors of 1 to 40 MB (at 1024, up to
150 MB). glibc serves each block above its mmap threshold (at most 32 MB, and lower until blocks that
size have been freed) with a fresh mapping and unmaps it on free, and trims freed memory off the top of
its heap. So every frame the kernel zeroes those pages again and each first touch faults: on this
project's 2-core VM, 20,000-26,000 pages a frame, about 5% of an fp32 frame at 1 object and 4% at 4
(BENCHMARKS.md; the copies and GELUs of the encoder's first stage ran at a third of their speed). Asking
glibc to serve every block from its heap and to keep what is freed there makes later frames reuse the
same pages.

The cost: the process stays at its largest working set (the heap keeps the pages of the busiest frame)
instead of shrinking between frames, which a node that runs frame after frame reaches anyway.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("dora_sam2")

# mallopt(3) parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Larger than any block a frame allocates, and than the free memory worth keeping at the heap's top.
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask the C library to serve blocks up to KEEP_BYTES from its heap and to keep freed memory there.
    Process-wide, and idempotent. False where the C library is not glibc's (macOS, musl: their
    allocators make their own choices), or it refused."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc's alone: musl has a mallopt that does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    kept = mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    if not kept:
        log.debug("glibc declined to keep freed memory (mallopt)")
    return kept
