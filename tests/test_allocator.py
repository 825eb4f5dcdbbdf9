"""A frame's freed memory serves the next frame: no page faulted in afresh once the node runs steadily."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Encodes of the suite's model at 1024 in a fresh process, loaded as the node loads it; prints each
# encode's minor page faults. `keep` False stands in a no-op for allocator.keep_freed_memory.
ENCODES = textwrap.dedent("""
    import resource, sys
    from dora_sam2 import allocator
    if sys.argv[2] == "False":
        allocator.keep_freed_memory = lambda: False
    from support.dataflows import random_frame
    from dora_sam2.model import Sam2Backend

    model = Sam2Backend.load(sys.argv[1], device="cpu", dtype="float32", threads=1)
    frame = random_frame(3, 640, 480)
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        model.encode(frame)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")

PAGES_PER_MB = 256


def page_faults_per_encode(model_dir, keep: bool) -> list[int]:
    done = subprocess.run([sys.executable, "-c", ENCODES, str(model_dir), str(keep)], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return [int(line) for line in done.stdout.split()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator is what this keeps")
def test_a_steady_node_faults_no_page_in_afresh(model_dir):
    without = page_faults_per_encode(model_dir, keep=False)
    if min(without[-3:]) < 10 * PAGES_PER_MB:
        pytest.skip(f"this machine faults in little even without keeping freed memory ({without})")
    kept = page_faults_per_encode(model_dir, keep=True)
    # An encode at 1024 frees tens of MB in blocks over glibc's mmap threshold; kept, they are reused. A
    # steady frame may still grow the heap by a block now and then (2,048 pages seen), never every frame.
    assert sum(kept[-5:]) < sum(without[-5:]) / 10, (kept, without)


def test_keeping_freed_memory_is_asked_of_glibc_alone():
    from dora_sam2.allocator import keep_freed_memory

    assert keep_freed_memory() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
