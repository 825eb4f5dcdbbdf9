"""The GPU check: segment mode, track mode and the speed benchmark on CUDA, through real dataflows.

    .venv/bin/python benchmarks/gpu_check.py              # random-weight hiera-tiny on cuda
    .venv/bin/python benchmarks/gpu_check.py --model DIR  # real weights
    .venv/bin/python benchmarks/gpu_check.py --device cpu --seconds 3   # the script's own plumbing, here

For the day a GPU is there (the CPU suite checks the GPU paths on fake CUDA tensors, tests/test_cuda.py,
but cannot time them). Asserts that each dataflow answers, with masks of the frame's size and, in track
mode, with track ids; then times the model alone and tracking for 1, 4 and 8 objects. Exits non-zero
when anything fails. Then SAM 3 (full size, random weights unless --sam3 DIR; --no-sam3 skips it): the
finder per frame with 1 and 3 phrases and its tracker for 1 and 4 objects, at 1008 and 504 (benchmarks/sam3.py).
Writes benchmarks/results/gpu_check.json and gpu_check.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import BIN, HEIGHT, WIDTH, machine, model_cost, path_env, pipeline, random_tiny, save  # noqa: E402
from sam3 import random_sam3, sam3_costs  # noqa: E402
from track import cost_per_frame  # noqa: E402


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SAM2 checkpoint directory (default: a random-weight hiera-tiny)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--sam3", help="a SAM 3 checkpoint directory (default: full-size random weights)")
    parser.add_argument("--no-sam3", action="store_true", help="skip SAM 3")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: this torch sees no CUDA GPU; run it on a GPU machine with a CUDA build of torch.")

    model_dir = args.model or str(random_tiny())
    result = {"machine": machine(), "model": model_dir, "device": args.device}
    for mode in ("segment", "track"):
        print(f"dataflow: {mode} mode, 3 boxes ...", flush=True)
        result[mode] = check_dataflow(model_dir, mode, args)
    print("model alone ...", flush=True)
    result["model_alone"] = {dtype: model_cost(model_dir, dtype, args.device) for dtype in ("float32", "auto")}
    print("tracking cost ...", flush=True)
    result["tracking"] = tracking_cost(model_dir, args.device)
    if not args.no_sam3:
        print("SAM 3 ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            sam3_dir = args.sam3 or str(random_sam3(Path(tmp)))
            result["sam3"] = {size: sam3_costs(sam3_dir, args.device, "auto", size, (1, 4), 5) for size in (1008, 504)}
    save("gpu_check", result, markdown(result))


def check_dataflow(model_dir: str, mode: str, args) -> dict:
    """camera -> detector (3 boxes) -> dora-sam2 on the GPU -> collector; every answer checked."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stats, probe = tmp / "stats.json", tmp / "latency.json"
        env = {"DEVICE": args.device, "MODE": mode, "STATS_FILE": str(stats), "STATS_EVERY": "0"}
        yaml = pipeline(model_dir, "dora-sam2", 3, frames=int(args.fps * args.seconds), fps=args.fps, probe=probe,
                        sam2_env=env, outputs=("mask", "masks"))
        yaml += f"""
  - id: out
    path: {ROOT}/tests/nodes/collector.py
    inputs: {{masks: sam2/masks}}
    env: {{OUT_DIR: "{tmp / 'out'}"}}
"""
        (tmp / "dataflow.yml").write_text(yaml)
        run = subprocess.run([str(BIN / "dora"), "run", str(tmp / "dataflow.yml")], cwd=tmp, capture_output=True,
                             text=True, timeout=args.seconds * 20 + 300,
                             env=path_env())
        log = run.stdout + run.stderr
        assert run.returncode == 0, f"{mode} dataflow failed:\n{log[-3000:]}"
        assert "failed on this frame" not in log, f"{mode}: frames failed on the GPU:\n{log[-3000:]}"
        events = [json.loads(line) for line in (tmp / "out" / "events.jsonl").read_text().splitlines()]
        latencies = json.loads(probe.read_text())["latencies_ms"][1:]
        counts = json.loads(stats.read_text())
    assert events, f"{mode}: no answer"
    for event in events:
        meta = event["metadata"]
        assert (meta["width"], meta["height"]) == (WIDTH, HEIGHT), meta
        if mode == "track":
            assert len(meta["track_ids"]) == meta["num_masks"], meta
    latencies.sort()
    return {"answers": len(events), "skipped": counts["skipped"], "stages_ms": counts["stages_ms"],
            "latency_p50_ms": latencies[len(latencies) // 2] if latencies else None}


def tracking_cost(model_dir: str, device: str) -> dict:
    from dora_sam2.model import Sam2Backend
    from dora_sam2.video import Sam2StreamingModel

    streaming = Sam2StreamingModel(Sam2Backend.load(model_dir, device=device, video=True))
    return {n: cost_per_frame(streaming, n, repeats=5) for n in (1, 4, 8)}


def markdown(result: dict) -> str:
    lines = [f"GPU check on {result['machine']}; model {Path(result['model']).name}.", "",
             "| dataflow | answers | skipped | latency p50 | encode | prompt decode | memory |", "|---|---|---|---|---|---|---|"]
    for mode in ("segment", "track"):
        r, s = result[mode], result[mode]["stages_ms"]
        p50 = f"{r['latency_p50_ms']:.0f} ms" if r["latency_p50_ms"] is not None else "-"
        lines.append(f"| {mode} | {r['answers']} | {r['skipped']} | {p50} | {s.get('encode', 0):.1f} ms | "
                     f"{s.get('prompt_decode', 0):.1f} ms | {s.get('memory', 0):.1f} ms |")
    lines += ["", "| dtype | encode | decode 1 box | decode 16 boxes |", "|---|---|---|---|"]
    for dtype, a in result["model_alone"].items():
        lines.append(f"| {dtype} | {a['encode_ms']:.1f} ms | {a['decode_ms'][1]:.1f} ms | {a['decode_ms'][16]:.1f} ms |")
    lines += ["", "| tracked objects | per frame |", "|---|---|"]
    lines += [f"| {n} | {row['total_ms']:.1f} ms |" for n, row in result["tracking"].items()]
    if "sam3" in result:
        lines += ["", "| SAM 3 input | dtype | finder, 1 phrase | finder, 3 phrases | tracking 1 object | 4 objects |",
                  "|---|---|---|---|---|---|"]
        for size, r in result["sam3"].items():
            lines.append(f"| {size} | {r['dtype']} | {r['finder_ms'][1]:.1f} ms | {r['finder_ms'][3]:.1f} ms | "
                         f"{r['tracking'][1]['total_ms']:.1f} ms | {r['tracking'][4]['total_ms']:.1f} ms |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
