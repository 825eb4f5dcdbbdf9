"""What a CPU run sets for its whole process (devices.prepare_cpu): a frame's freed memory serves the next
frame, so no page is faulted in afresh once the node runs steadily; and subnormal floats are zero on
every thread that computes."""

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


# In a fresh process: a subnormal times one, computed on two threads, and how many products are not zero;
# after loading a model as the node loads it where sys.argv[2] says so.
SUBNORMALS = textwrap.dedent("""
    import sys, torch
    from dora_sam2.model import Sam2Backend

    if sys.argv[2] == "load":
        Sam2Backend.load(sys.argv[1], device="cpu", dtype="float32", threads=2)
    else:
        torch.set_num_threads(2)
    products = torch.full((1 << 22,), 1e-39) * 1.0  # split between the two threads
    print(int((products != 0).sum()))
""")


def nonzero_subnormal_products(model_dir, load: bool) -> int:
    done = subprocess.run([sys.executable, "-c", SUBNORMALS, str(model_dir), "load" if load else "no"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="torch flushes subnormals on x86 alone")
def test_subnormals_are_zero_on_every_thread_once_a_model_is_loaded(model_dir):
    assert nonzero_subnormal_products(model_dir, load=False) == 1 << 22  # 1e-39 is a subnormal, kept
    assert nonzero_subnormal_products(model_dir, load=True) == 0  # on the pool's thread as on the caller's
