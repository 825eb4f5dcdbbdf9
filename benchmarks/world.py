"""The synthetic world's cost: seconds to make a clip, by stage, and its size on disk.

    .venv/bin/python benchmarks/world.py                       # 3 random 10 s clips at 640x480, 30 fps
    .venv/bin/python benchmarks/world.py --size 320x240 --seconds 3 --clips 5

Per clip: building the scene, drawing its frames with their truth (masks, silhouettes), and writing it
as `dora-sam2-world` does, PNG frames and an mp4, then JPEG frames without video; bytes a frame on
disk. Backgrounds are cut from ../shared/data/cups.mp4 when it is there. Writes
benchmarks/results/world.json and world.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine, save  # noqa: E402

from dora_sam2.world import Footage, Format, frames, random_scene  # noqa: E402
from dora_sam2.world.writer import WorldWriter  # noqa: E402

CLIP = ROOT.parent / "shared" / "data" / "cups.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--clips", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.split("x"))
    fmt = Format(width, height, args.fps, round(args.seconds * args.fps))
    footage = Footage(CLIP) if CLIP.is_file() else None
    clips = [clip_cost(seed, fmt, footage) for seed in range(args.clips)]
    result = {"machine": machine(), "format": f"{width}x{height}, {fmt.frames} frames at {fmt.fps:g} fps",
              "footage": str(CLIP) if footage else None, "clips": clips}
    save("world", result, markdown(result))


def clip_cost(seed: int, fmt: Format, footage: Footage | None) -> dict:
    started = time.perf_counter()
    scene = random_scene((0, seed), fmt)
    built = time.perf_counter()
    for _ in frames(scene, footage):
        pass
    drawn = time.perf_counter()
    cost = {"objects": len(scene.objects), "build_s": built - started, "draw_s": drawn - built}
    for image_format, video in (("png", True), ("jpg", False)):
        with tempfile.TemporaryDirectory() as tmp:
            writer = WorldWriter(Path(tmp), image_format, video)
            cost[f"write_{image_format}_s"] = writer.add(scene, footage).seconds
            writer.finish("benchmark")
            files = list((Path(tmp) / "images").iterdir())
            cost[f"{image_format}_kb_per_frame"] = sum(f.stat().st_size for f in files) / len(files) / 1000
            cost["annotations_kb_per_frame"] = (Path(tmp) / "annotations.json").stat().st_size / fmt.frames / 1000
            if video:
                cost["mp4_kb"] = sum(f.stat().st_size for f in (Path(tmp) / "videos").iterdir()) / 1000
    return cost


def markdown(result: dict) -> str:
    clips = result["clips"]

    def mean(key):
        return statistics.mean(clip[key] for clip in clips)

    footage = "cut from cups.mp4" if result["footage"] else "procedural (no footage)"
    lines = [f"{len(clips)} random clips of {result['format']}, backgrounds {footage}; {result['machine']}", "",
             "| objects | scene built | frames and truth drawn | written: PNG + mp4 | written: JPEG, no video |",
             "|---|---|---|---|---|"]
    for clip in clips:
        lines.append(f"| {clip['objects']} | {clip['build_s'] * 1000:.0f} ms | {clip['draw_s']:.2f} s | "
                     f"{clip['write_png_s']:.2f} s | {clip['write_jpg_s']:.2f} s |")
    lines += ["", f"On disk a frame: PNG {mean('png_kb_per_frame'):.0f} kB, JPEG {mean('jpg_kb_per_frame'):.0f} kB, "
                  f"annotations {mean('annotations_kb_per_frame'):.1f} kB; the mp4 {mean('mp4_kb') / 1000:.1f} MB "
                  f"a clip.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
