"""Soak: thousands of frames with prompts on every frame; does the node leak, drift or stall?

    .venv/bin/python benchmarks/soak.py                   # 3000 frames at 15 fps, random hiera-tiny
    .venv/bin/python benchmarks/soak.py --frames 20000    # longer
    .venv/bin/python benchmarks/soak.py --model DIR
    .venv/bin/python benchmarks/soak.py --mode track --detect-every 15   # tracking, sparse detections

Samples the node's resident memory (RSS, from /proc) every 2 s and records every mask's latency, then
reports RSS after warm-up and at the end (means of 10 samples), its trend (a least-squares slope), the
latency of the first and last fifths of the run, and the answer count. Writes benchmarks/results/soak.json and soak.md.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import BIN, path_env, pipeline, random_tiny, save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--boxes", type=int, default=3)
    parser.add_argument("--mode", choices=("segment", "track"), default="segment")
    parser.add_argument("--detect-every", type=int, default=1, help="the detector answers every Nth frame")
    parser.add_argument("--max-objects", type=int, default=16, help="track mode's MAX_OBJECTS")
    args = parser.parse_args()
    model_dir = args.model or str(random_tiny())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        probe = tmp / "latency.json"
        (tmp / "soak.yml").write_text(pipeline(model_dir, "dora-sam2", args.boxes, args.frames, args.fps, probe,
                                               sam2_env={"STATS_EVERY": "20", "MODE": args.mode,
                                                         "MAX_OBJECTS": str(args.max_objects)},
                                               outputs=("mask", "masks", "overlay"),
                                               detector_env={"EVERY": str(args.detect_every)}))
        env = path_env()
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
        lines = (tmp / "dora.log").read_text().splitlines()
        final_stats = [l for l in lines if "final: answered" in l]
        periodic = [l for l in lines if "dora-sam2: answered" in l and "tracks:" in l]

    latencies = np.array(measured["latencies_ms"])
    fifth = max(len(latencies) // 5, 1)
    # After model load and warm-up, and before the last sample (taken while the node shuts down).
    steady = np.array([(t, mb) for t, mb in rss[:-1] if t > rss[0][0] + 30] or rss)
    slope = np.polyfit(steady[:, 0], steady[:, 1], 1)[0] * 60 if len(steady) > 2 else float("nan")
    result = {
        "frames": args.frames, "fps": args.fps, "boxes": args.boxes, "model": model_dir, "mode": args.mode,
        "detect_every": args.detect_every,
        "duration_s": time.time() - started, "answers": len(latencies),
        "rss_mb_after_warmup": float(steady[:10, 1].mean()), "rss_mb_end": float(steady[-10:, 1].mean()),
        "rss_mb_max": float(steady[:, 1].max()), "rss_mb_per_min": float(slope),
        "latency_ms_first_fifth_p50": float(np.median(latencies[:fifth])),
        "latency_ms_last_fifth_p50": float(np.median(latencies[-fifth:])),
        "latency_ms_p99": float(np.percentile(latencies, 99)),
        "rss_samples": rss, "node_final_line": final_stats[-1].split("INFO", 1)[-1] if final_stats else "",
        # track mode: the node's line every 20 s -> (live tracks, mean memory-attention ms so far)
        "tracks_over_time": [(int(re.search(r"tracks: (\d+) live", l).group(1)),
                              int(re.search(r"memory attention (\d+) ms", l).group(1))) for l in periodic],
    }
    prompts = "on every frame" if args.detect_every == 1 else f"every {args.detect_every}th frame"
    table = (
        f"Soak, MODE={args.mode}: {args.frames} frames at {args.fps:g} fps, {args.boxes} boxes {prompts}, outputs "
        f"mask + masks + overlay, {Path(model_dir).name}; {result['duration_s']:.0f} s, {result['answers']} answers.\n\n"
        "| RSS after warm-up | RSS at end | RSS max | RSS trend | latency p50, first fifth | p50, last fifth | p99 |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {result['rss_mb_after_warmup']:.0f} MB | {result['rss_mb_end']:.0f} MB | {result['rss_mb_max']:.0f} MB | "
        f"{result['rss_mb_per_min']:+.1f} MB/min | "
        f"{result['latency_ms_first_fifth_p50']:.0f} ms | {result['latency_ms_last_fifth_p50']:.0f} ms | "
        f"{result['latency_ms_p99']:.0f} ms |\n"
    )
    if result["tracks_over_time"]:
        table += ("\nLive tracks every 20 s: " + ", ".join(str(n) for n, _ in result["tracks_over_time"])
                  + "; memory attention per frame (running mean, ms): "
                  + ", ".join(str(ms) for _, ms in result["tracks_over_time"]) + "\n")
    save("soak" if args.mode == "segment" else "soak-track", result, table)


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
