"""SAM 3's cost: the finder per frame (its ViT once, then the detector per phrase) and the tracker per object,
at SAM 3's own 1008-pixel input and smaller ones.

    .venv/bin/python benchmarks/sam3.py                      # full-size SAM 3 with random weights, on the CPU
    .venv/bin/python benchmarks/sam3.py --model DIR --device cuda --sizes 1008
    .venv-ref/bin/python benchmarks/sam3.py --pair          # examples/text-cpu.yml, SAM 3 finding, EdgeTAM following

Random weights cost what the real ones cost (the same layers and shapes); their masks are noise, and every
one of SAM 3's 200 queries is kept (a score threshold of 0), the most work a frame can give the
post-processing. Writes benchmarks/results/sam3.json and sam3.md (`--pair`: sam3_pair.json and .md: the
two-node CPU dataflow as the example wires it, its frames answered and mask latency; the follower is EdgeTAM
where timm imports, the side environment, else hiera-tiny).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import BIN, HEIGHT, WIDTH, machine, path_env, random_edgetam, random_tiny, save  # noqa: E402
from track import cost_per_frame  # noqa: E402

PHRASES = ("cup", "bottle", "person's hand")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a SAM 3 checkpoint directory (default: full-size random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1008, 504])
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pair", action="store_true", help="run examples/text-cpu.yml instead")
    parser.add_argument("--seconds", type=float, default=30.0, help="--pair: the camera's length at its 10 fps")
    parser.add_argument("--threads", type=int, help="--pair: THREADS of each node (default: unset, all cores each)")
    parser.add_argument("--max-objects", type=int, default=8, help="--pair: MAX_OBJECTS of each node (the example's 8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(random_sam3(Path(tmp)))
        if args.pair:
            result = pair(model_dir, Path(tmp), args.seconds, args.threads, args.max_objects)
            name = "sam3_pair" + (f"_threads{args.threads}" if args.threads else "")
            save(name + (f"_{args.max_objects}" if args.max_objects != 8 else ""), result, pair_markdown(result))
            return
        result = {"machine": machine(), "model": model_dir if args.model else "sam3 (random weights)",
                  "device": args.device, "sizes": {}}
        for size in args.sizes:
            print(f"SAM 3 at {size} ...", flush=True)
            result["sizes"][size] = sam3_costs(model_dir, args.device, args.dtype, size, args.objects, args.repeats)
            save("sam3", result, markdown(result))  # after each size: a long run keeps what it measured


def random_sam3(directory: Path) -> Path:
    from dora_sam2.random_model import make_random_model

    print("writing a full-size random-weight SAM 3 (3.4 GB) ...", flush=True)
    return make_random_model(directory / "sam3", size="sam3")


def sam3_costs(model_dir: str, device: str, dtype: str, size: int, objects, repeats: int) -> dict:
    from dora_sam2.domain import Frame, Phrases
    from dora_sam2.model import Sam2Backend
    from dora_sam2.video import Sam2StreamingModel

    backend = Sam2Backend.load(model_dir, device=device, dtype=dtype, image_size=size if size != 1008 else 0)
    finder, rng = backend.finder, np.random.default_rng(0)

    def find(count: int) -> float:
        runs = []
        for _ in range(repeats + 1):  # the first pays for lazy set-up
            frame = Frame("image", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8), None, "rgb8")
            started = time.perf_counter()
            finder.find(frame, Phrases(PHRASES[:count]), 0.0, 1000)
            _sync(device)
            runs.append(time.perf_counter() - started)
        return 1e3 * min(runs[1:])

    finder_ms = {count: find(count) for count in (1, 3)}
    streaming = Sam2StreamingModel(backend)
    tracking = {n: cost_per_frame(streaming, n, repeats) for n in objects}
    return {"dtype": str(backend.dtype).removeprefix("torch."), "finder_ms": finder_ms,
            "per_phrase_ms": (finder_ms[3] - finder_ms[1]) / 2, "tracking": tracking}


def pair(sam3_dir: str, tmp: Path, seconds: float, threads: int | None = None, max_objects: int = 8) -> dict:
    """examples/text-cpu.yml as written, but the weights (random), the camera's length, and what random
    weights need to give the follower a busy real scene's work: a low MIN_CONFIDENCE for the finder (they
    score every instance near 0.25, under SAM 3's own 0.5), so it sends MAX_OBJECTS boxes, and a high
    LOST_FRAMES for the follower (their masks come and go), so it carries all. The follower's `boxes2d`,
    collected, says when each frame's objects arrived."""
    try:
        import timm  # noqa: F401

        follower, follower_dir = "edgetam@512", random_edgetam()
    except Exception:  # noqa: BLE001 - no timm here (.venv): the SAM 2 follower the example also names
        follower, follower_dir = "hiera-tiny@512", random_tiny()
    frames = int(10 * seconds)
    yaml = (ROOT / "examples" / "text-cpu.yml").read_text()
    yaml = yaml.replace("path: nodes/", f"path: {ROOT}/examples/nodes/").replace('FRAMES: "100"', f'FRAMES: "{frames}"')
    yaml = yaml.replace("MODEL: facebook/sam3", f"MODEL: {sam3_dir}\n      STATS_FILE: {tmp / 'finder.json'}\n"
                        '      MIN_CONFIDENCE: "0.01"')
    yaml = yaml.replace("MODEL: yonigozlan/EdgeTAM-hf", f"MODEL: {follower_dir}\n      STATS_FILE: "
                        f"{tmp / 'follower.json'}" '\n      LOST_FRAMES: "100000"')
    yaml = yaml.replace("outputs: [mask, masks, overlay]", "outputs: [mask, masks, overlay, boxes2d]")
    threads_line = f'\n      THREADS: "{threads}"' if threads else ""
    yaml = yaml.replace('MAX_OBJECTS: "8"', f'MAX_OBJECTS: "{max_objects}"{threads_line}')
    yaml += (f"\n  - id: timing\n    path: {ROOT}/tests/nodes/collector.py\n    inputs: {{boxes: follower/boxes2d}}\n"
             f"    env: {{OUT_DIR: {tmp / 'timing'}}}\n")
    (tmp / "pair.yml").write_text(yaml)
    run = subprocess.run([str(BIN / "dora"), "run", str(tmp / "pair.yml")], cwd=tmp, capture_output=True, text=True,
                         timeout=seconds * 20 + 900, env=path_env(OUT_DIR=str(tmp / "frames")))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    stats = {name: json.loads((tmp / f"{name}.json").read_text()) for name in ("finder", "follower")}
    return {"machine": machine(), "frames": frames, "follower_model": follower, "threads": threads,
            "objects": max_objects, "tracked": tracked_latency(tmp / "timing"), **stats}


def tracked_latency(directory: Path) -> dict:
    """The follower's answers that carried objects: how many, and their age on arrival (ms, camera to here)."""
    from datetime import datetime

    from support.dataflows import event_time, read_events

    ages = sorted((datetime.fromisoformat(e["received"]) - event_time(e)).total_seconds() * 1e3
                  for e in read_events(directory, values=True) if len(e["value"][0]["labels"]))
    if not ages:
        return {"frames": 0}
    return {"frames": len(ages), "p50": ages[len(ages) // 2], "p90": ages[int(len(ages) * 0.9)]}


def pair_markdown(result: dict) -> str:
    finder, follower = result["finder"], result["follower"]
    nan = {"p50": float("nan"), "p90": float("nan")}  # a node that answered nothing has no latency to show
    found, tracked = {**nan, **finder["latency_ms"]}, {**nan, **result["tracked"]}
    threads = f"THREADS={result['threads']} each" if result.get("threads") else "THREADS unset (all cores each)"
    stages = follower["stages_ms"]
    return "\n".join([
        f"examples/text-cpu.yml: SAM 3 at 504 finding, {result['follower_model']} following {result['objects']} "
        f"objects, {result['frames']} camera frames at 10 fps, {threads}; {result['machine']}.", "",
        "| node | answers | with objects | skipped | mask age p50 | p90 | per answer |",
        "|---|---|---|---|---|---|---|",
        f"| finder (SAM 3) | {finder['answers']} | - | {finder['skipped']} | {found['p50']:.0f} ms | "
        f"{found['p90']:.0f} ms | find {finder['stages_ms']['find']:.0f} ms |",
        f"| follower | {follower['answers']} | {tracked['frames']} | {follower['skipped']} | {tracked['p50']:.0f} ms | "
        f"{tracked['p90']:.0f} ms | encode {stages['encode']:.0f} ms, memory {stages['memory']:.0f} ms |"]) + "\n"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def markdown(result: dict) -> str:
    lines = [f"SAM 3, {result['model']}, on {result['device']}, {WIDTH}x{HEIGHT} frames; {result['machine']}.", "",
             "| input | dtype | finder, 1 phrase | finder, 3 phrases | each phrase more | tracking, "
             + " | ".join(f"{n} object{'s' * (n > 1)}" for n in next(iter(result["sizes"].values()))["tracking"])
             + " |", "|---|---|---|---|---|" + "---|" * len(next(iter(result["sizes"].values()))["tracking"])]
    for size, r in result["sizes"].items():
        tracking = " | ".join(f"{t['total_ms']:.0f} ms (encode {t['encode_ms']:.0f})" for t in r["tracking"].values())
        lines.append(f"| {size} | {r['dtype']} | {r['finder_ms'][1]:.0f} ms | {r['finder_ms'][3]:.0f} ms | "
                     f"{r['per_phrase_ms']:.0f} ms | {tracking} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
