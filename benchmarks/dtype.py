"""What DTYPE=auto chooses on this CPU, and why: one encode in fp32 and in bf16, per model, as the node
times them at warm-up (Sam2Backend.choose_dtype_by_measuring, best of 3 after one untimed run).

    .venv/bin/python benchmarks/dtype.py                      # random hiera-tiny at 1024 and 512
    .venv/bin/python benchmarks/dtype.py --configs tiny DIR   # (edgetam: run in .venv-ref)

Writes benchmarks/results/dtype.json and dtype.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine, model_at_size, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "tiny@512"], metavar="MODEL@SIZE")
    args = parser.parse_args()
    import torch

    from dora_sam2.devices import cpu_has_fast_bf16
    from dora_sam2.model import Sam2Backend

    rows = []
    for config in args.configs:
        model_dir, image_size = model_at_size(config)
        backend = Sam2Backend.load(model_dir, device="cpu", dtype="float32", image_size=image_size)
        seconds = backend.choose_dtype_by_measuring(repeats=3)
        rows.append({"config": config, "float32_ms": seconds[torch.float32] * 1e3,
                     "bfloat16_ms": seconds[torch.bfloat16] * 1e3, "chosen": str(backend.dtype).removeprefix("torch.")})
    result = {"machine": machine(), "native_bf16_flags": cpu_has_fast_bf16(), "rows": rows}
    lines = [f"Machine: {result['machine']}; AMX/AVX512-BF16 in /proc/cpuinfo: {result['native_bf16_flags']}.", "",
             "| model | one encode, fp32 | bf16 | DTYPE=auto keeps |", "|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['float32_ms']:.0f} ms | {r['bfloat16_ms']:.0f} ms | {r['chosen']} |" for r in rows]
    save("dtype", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
