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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(random_sam3(Path(tmp)))
        if args.pair:
            result = pair(model_dir, Path(tmp), args.seconds)
            save("sam3_pair", result, pair_markdown(result))
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


def pair(sam3_dir: str, tmp: Path, seconds: float) -> dict:
    """examples/text-cpu.yml as written, but the weights (random) and the camera's length."""
    try:
        import timm  # noqa: F401

        follower, follower_dir = "edgetam@512", random_edgetam()
    except Exception:  # noqa: BLE001 - no timm here (.venv): the SAM 2 follower the example also names
        follower, follower_dir = "hiera-tiny@512", random_tiny()
    frames = int(10 * seconds)
    yaml = (ROOT / "examples" / "text-cpu.yml").read_text()
    yaml = yaml.replace("path: nodes/", f"path: {ROOT}/examples/nodes/").replace('FRAMES: "100"', f'FRAMES: "{frames}"')
    yaml = yaml.replace("MODEL: facebook/sam3", f"MODEL: {sam3_dir}\n      STATS_FILE: {tmp / 'finder.json'}")
    yaml = yaml.replace("MODEL: yonigozlan/EdgeTAM-hf", f"MODEL: {follower_dir}\n      STATS_FILE: {tmp / 'follower.json'}")
    (tmp / "pair.yml").write_text(yaml)
    run = subprocess.run([str(BIN / "dora"), "run", str(tmp / "pair.yml")], cwd=tmp, capture_output=True, text=True,
                         timeout=seconds * 20 + 900, env=path_env(OUT_DIR=str(tmp / "frames")))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    stats = {name: json.loads((tmp / f"{name}.json").read_text()) for name in ("finder", "follower")}
    return {"machine": machine(), "frames": frames, "follower_model": follower, **stats}


def pair_markdown(result: dict) -> str:
    finder, follower = result["finder"], result["follower"]
    for stats in (finder, follower):  # a node that answered nothing has no latency to show
        stats["latency_ms"] = {"p50": float("nan"), "p90": float("nan"), **stats["latency_ms"]}
    return "\n".join([
        f"examples/text-cpu.yml: SAM 3 at 504 finding, {result['follower_model']} following, {result['frames']} camera "
        f"frames at 10 fps; {result['machine']}.", "",
        "| node | answers | skipped | latency p50 | p90 | per answer |", "|---|---|---|---|---|---|",
        f"| finder (SAM 3) | {finder['answers']} | {finder['skipped']} | {finder['latency_ms']['p50']:.0f} ms | "
        f"{finder['latency_ms']['p90']:.0f} ms | find {finder['stages_ms']['find']:.0f} ms |",
        f"| follower | {follower['answers']} | {follower['skipped']} | {follower['latency_ms']['p50']:.0f} ms | "
        f"{follower['latency_ms']['p90']:.0f} ms | encode {follower['stages_ms']['encode']:.0f} ms, memory "
        f"{follower['stages_ms']['memory']:.0f} ms |"]) + "\n"


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
