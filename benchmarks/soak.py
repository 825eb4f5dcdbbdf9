"""Soak: thousands of frames with prompts on every frame; does the node leak, drift or stall?

    .venv/bin/python benchmarks/soak.py                   # 3000 frames at 15 fps, random hiera-tiny
    .venv/bin/python benchmarks/soak.py --frames 20000    # longer
    .venv/bin/python benchmarks/soak.py --model DIR

Samples the node's resident memory (RSS, from /proc) every 2 s and records every mask's latency, then
reports RSS after warm-up and at the end, the latency of the first and last fifths of the run, and the
answer count. Writes benchmarks/results/soak.json and soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import random_tiny  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--boxes", type=int, default=3)
    args = parser.parse_args()
    model_dir = args.model or str(random_tiny())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probe = tmp / "latency.json"
        detections = [[40 + 150 * i, 60, 160 + 150 * i, 300, f"obj{i}"] for i in range(args.boxes)]
        (tmp / "soak.yml").write_text(f"""
nodes:
  - id: camera
    path: {ROOT}/examples/nodes/camera.py
    outputs: [image]
    env: {{FRAMES: "{args.frames}", FPS: "{args.fps}", WIDTH: "640", HEIGHT: "480"}}
  - id: yolo
    path: {ROOT}/examples/nodes/fixed_detector.py
    inputs: {{image: camera/image}}
    outputs: [bbox]
    env: {{BOXES: '{json.dumps(detections)}'}}
  - id: sam2
    path: dora-sam2
    inputs: {{image: camera/image, bbox: yolo/bbox}}
    outputs: [mask, masks, overlay]
    env: {{MODEL: "{model_dir}", STATS_EVERY: "60"}}
  - id: probe
    path: {ROOT}/benchmarks/nodes/latency_probe.py
    inputs: {{mask: sam2/mask}}
    env: {{OUT: "{probe}"}}
""")
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RUST_BACKTRACE="0")
        started = time.time()
        dora = subprocess.Popen([str(BIN / "dora"), "run", str(tmp / "soak.yml")], cwd=tmp, env=env,
                                stdout=open(tmp / "dora.log", "w"), stderr=subprocess.STDOUT)
        rss = []
        while dora.poll() is None:
            pid = _node_pid("dora-sam2")
            if pid:
                try:
                    rss.append((time.time() - started, _rss_mb(pid)))
                except OSError:
                    pass
            time.sleep(2)
        if dora.returncode != 0 or not probe.exists():
            raise SystemExit(f"soak dataflow failed:\n{(tmp / 'dora.log').read_text()[-3000:]}")
        measured = json.loads(probe.read_text())
        final_stats = [l for l in (tmp / "dora.log").read_text().splitlines() if "final: answered" in l]

    latencies = np.array(measured["latencies_ms"])
    fifth = max(len(latencies) // 5, 1)
    warm = [mb for t, mb in rss if t > rss[0][0] + 30] or [mb for _, mb in rss]  # after model load and warm-up
    result = {
        "frames": args.frames, "fps": args.fps, "boxes": args.boxes, "model": model_dir,
        "duration_s": time.time() - started, "answers": len(latencies),
        "rss_mb_after_warmup": warm[0], "rss_mb_end": rss[-1][1], "rss_mb_max": max(mb for _, mb in rss),
        "latency_ms_first_fifth_p50": float(np.median(latencies[:fifth])),
        "latency_ms_last_fifth_p50": float(np.median(latencies[-fifth:])),
        "latency_ms_p99": float(np.percentile(latencies, 99)),
        "rss_samples": rss, "node_final_line": final_stats[-1].split("INFO", 1)[-1] if final_stats else "",
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "soak.json").write_text(json.dumps(result, indent=2))
    table = (
        f"Soak: {args.frames} frames at {args.fps:g} fps, {args.boxes} boxes on every frame, outputs mask + masks + "
        f"overlay, {Path(model_dir).name}; {result['duration_s']:.0f} s, {result['answers']} answers.\n\n"
        "| RSS after warm-up | RSS at end | RSS max | latency p50, first fifth | p50, last fifth | p99 |\n"
        "|---|---|---|---|---|---|\n"
        f"| {result['rss_mb_after_warmup']:.0f} MB | {result['rss_mb_end']:.0f} MB | {result['rss_mb_max']:.0f} MB | "
        f"{result['latency_ms_first_fifth_p50']:.0f} ms | {result['latency_ms_last_fifth_p50']:.0f} ms | "
        f"{result['latency_ms_p99']:.0f} ms |\n"
    )
    (results / "soak.md").write_text(table)
    print(table)


def _node_pid(executable: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(executable.encode()) for part in cmdline[:2]):
                return int(entry.name)
    return None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmRSS")


if __name__ == "__main__":
    main()
