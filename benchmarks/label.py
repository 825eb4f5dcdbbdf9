"""Labelling throughput: examples/label.yml as a user runs it, frames labelled per second, per model.

    .venv/bin/python benchmarks/label.py                        # random hiera-tiny at 1024 and 512
    .venv/bin/python benchmarks/label.py --video clip.mp4 --configs tiny edgetam@512   # (edgetam: .venv-ref)

A clip (synthetic 640x480 unless --video) goes through the camera, a fixed detector with two boxes,
dora-sam2 in track mode with EVERY_FRAME=1 and dora-sam2-dataset. The rate is the answers after the
first (which includes start-up) over the time between the first and the last answer; the dataset is read
back and must hold every frame of the clip. Writes benchmarks/results/label.json and label.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import BIN, machine, model_at_size, path_env, save  # noqa: E402
from support.dataflows import label_flow, read_events, write_clip, write_dataflow  # noqa: E402

BOXES = [[100, 80, 300, 300, "cup"], [350, 150, 600, 420, "ball"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", help="a clip to label (default: a synthetic 640x480 one)")
    parser.add_argument("--frames", type=int, default=30, help="frames of the synthetic clip")
    parser.add_argument("--configs", nargs="+", default=["tiny", "tiny@512"], metavar="MODEL@SIZE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(args.video).resolve() if args.video else Path(tmp) / "clip.mp4"  # the dataflow runs elsewhere
        frames = write_clip(video, args.frames, 640, 480) if not args.video else None
        runs = [label_run(config, video, frames) for config in args.configs]
    result = {"machine": machine(), "video": args.video or f"synthetic, {args.frames} frames of 640x480", "runs": runs}
    save("label", result, markdown(result))


def label_run(config: str, video: Path, frames: int | None) -> dict:
    model_dir, image_size = model_at_size(config)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {"IMAGE_SIZE": str(image_size)} if image_size else {}
        dataflow = write_dataflow(tmp, label_flow(model_dir, video, tmp / "dataset", BOXES, env))
        run = subprocess.run([str(BIN / "dora"), "run", str(dataflow)], cwd=tmp, env=path_env(), capture_output=True,
                             text=True, timeout=7200)
        if run.returncode != 0:
            raise SystemExit(f"label dataflow failed:\n{(run.stdout + run.stderr)[-3000:]}")
        answers = read_events(tmp / "out" / "out")
        written = len(json.loads((tmp / "dataset" / "annotations.json").read_text())["images"])
        stages = json.loads((tmp / "out" / "stats.json").read_text()).get("stages_ms", {})
    received = [datetime.fromisoformat(a["received"]) for a in answers]
    span = (received[-1] - received[0]).total_seconds() if len(received) > 1 else float("nan")
    if frames is not None and written != frames:
        raise SystemExit(f"{config}: the dataset holds {written} of the clip's {frames} frames")
    return {"config": config, "frames": written, "answers": len(answers),
            "frames_per_s": (len(received) - 1) / span if span > 0 else float("nan"), "stages_ms": stages}


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; clip: {result['video']}; track mode, 2 boxes, EVERY_FRAME=1.", "",
             "| model | frames in the dataset | frames labelled / s |", "|---|---|---|"]
    lines += [f"| {r['config']} | {r['frames']} | {r['frames_per_s']:.2f} |" for r in result["runs"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
