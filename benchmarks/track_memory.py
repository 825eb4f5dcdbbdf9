"""Track mode's memory over a long stream: resident memory (RSS) sampled across N tracked frames.

    .venv/bin/python benchmarks/track_memory.py                    # 10,000 frames, a random `micro` model
    .venv/bin/python benchmarks/track_memory.py --frames 2000 --model DIR

Every frame goes through the real Tracker and streaming model, and is answered as the node answers it
(the `mask` and `masks` messages built and the overlay drawn). A detector reports three drifting objects
every `--detect-every` frames, and a `reset` every `--reset-every` frames ends every track, so tracks
start and end all along. The dataflow soak (`soak.py --mode track`) shows the node's pace. This shows
what that pace hides. At hiera-tiny's 2 s or more a frame, 10,000 frames would take 6 hours here, and in a
dataflow most camera frames are skipped and never reach the tracker. So by default it runs the `micro` random
model (SAM2's architecture, shrunk, at a 256-pixel input). The tracker's state has the same shape for
any model. Only the bytes per memory scale, and the bank sizes at the end show how many memories are kept.

Prints and writes benchmarks/results/track-memory.json and track-memory.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine, save  # noqa: E402

WIDTH, HEIGHT = 640, 480
OBJECTS = 3
WARMUP_FRAMES = 100  # allocator and caches settle, every memory window fills, the first tracks come and go


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SAM2 checkpoint directory (default: a random `micro` model)")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--detect-every", type=int, default=15)
    parser.add_argument("--max-objects", type=int, default=16)
    parser.add_argument("--lost-frames", type=int, default=30)
    parser.add_argument("--reset-every", type=int, default=500, help="frames between resets (0: never)")
    parser.add_argument("--sample-every", type=int, default=50, help="frames between RSS samples")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(_micro_model(Path(tmp)))
        result = run(model_dir, args)
    save("track-memory", result, markdown(result))


def run(model_dir: str, args) -> dict:
    from dora_sam2 import codecs, overlay
    from dora_sam2.model import Sam2Backend
    from dora_sam2.tracking import LostAfter, Tracker, TrackPolicy
    from dora_sam2.video import Sam2StreamingModel

    streaming = Sam2StreamingModel(Sam2Backend.load(model_dir, dtype=args.dtype, video=True))
    lost = LostAfter(args.lost_frames, frames=True)
    tracker = Tracker(streaming, TrackPolicy(args.max_objects, lost, detector_misses=0, revive_seconds=0))
    samples, live, started = [], [], time.perf_counter()
    for index, (frame, detections) in enumerate(scene(args.frames, args.detect_every)):
        if args.reset_every and index and index % args.reset_every == 0:
            tracker.reset()
        masks = tracker.step(frame, detections)
        codecs.encode_mask(masks), codecs.encode_masks(masks)
        overlay.draw(frame, masks)
        live.append(len(masks))
        if index % args.sample_every == 0 or index == args.frames - 1:
            samples.append((index, rss_mb()))
            print(f"frame {index}: RSS {samples[-1][1]:.0f} MB, {len(masks)} tracks", flush=True)
    seconds = time.perf_counter() - started

    banks = [(len(t.memory.prompted), len(t.memory.recent), len(t.memory.recent_pointers)) for t in tracker.tracks]
    return {
        "model": model_dir, "dtype": str(streaming.backend.dtype), "machine": machine(),
        "frames": args.frames, "detect_every": args.detect_every, "reset_every": args.reset_every, "seconds": seconds,
        "tracks_started": tracker.started, "tracks_ended": tracker.ended, "tracks_live_mean": float(np.mean(live)),
        "memory_banks_at_end": banks, "rss_samples": samples, **summarize(samples),
    }


def summarize(samples: list) -> dict:
    """RSS after warm-up: medians of the first and last 1000 frames (one sample can fall in a trough or
    on a peak of the allocator's oscillation), the range, and the least-squares trend."""
    steady = np.array([(i, mb) for i, mb in samples if i >= WARMUP_FRAMES] or samples)
    frames, mb = steady[:, 0], steady[:, 1]
    first, last = mb[frames < frames[0] + 1000], mb[frames > frames[-1] - 1000]
    return {
        "rss_mb_first_1000_median": float(np.median(first)), "rss_mb_last_1000_median": float(np.median(last)),
        "rss_mb_min": float(mb.min()), "rss_mb_max": float(mb.max()),
        "rss_mb_per_1000_frames": float(np.polyfit(frames, mb, 1)[0] * 1000) if len(steady) > 2 else float("nan"),
    }


def scene(frames: int, detect_every: int):
    """Three coloured boxes drifting over a gradient; a detector that sees them every Nth frame."""
    from dora_sam2.domain import Frame, Prompt

    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 90)], -1).astype(np.uint8)
    colours = [(230, 40, 40), (40, 230, 40), (40, 40, 230)]
    for index in range(frames):
        rgb = background.copy()
        boxes = []
        for k, colour in enumerate(colours[:OBJECTS]):
            x = int(60 + 160 * k + 40 * np.sin(index / 40 + k))
            y = int(120 + 80 * np.cos(index / 55 + 2 * k))
            rgb[y : y + 120, x : x + 100] = colour
            boxes.append([x, y, x + 100, y + 120])
        frame = Frame("image", rgb, None, "rgb8")
        detections = Prompt.from_boxes("bbox", np.array(boxes, np.float32)) if index % detect_every == 0 else None
        yield frame, detections


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmRSS")


def _micro_model(directory: Path) -> Path:
    from dora_sam2.random_model import make_random_model

    return make_random_model(directory / "sam2-random-micro", size="micro", seed=0)


def markdown(r: dict) -> str:
    return (
        f"Track-mode memory: {r['frames']} frames tracked, {OBJECTS} objects detected every {r['detect_every']}th "
        f"frame, a reset every {r['reset_every']} frames, {Path(r['model']).name}, "
        f"{r['dtype'].removeprefix('torch.')}; {r['seconds'] / 60:.0f} min; {r['machine']}.\n\n"
        f"| RSS, median of the first 1000 frames after frame {WARMUP_FRAMES} | of the last 1000 | lowest | highest | "
        "trend | tracks started / ended | live, mean |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {r['rss_mb_first_1000_median']:.0f} MB | {r['rss_mb_last_1000_median']:.0f} MB | {r['rss_mb_min']:.0f} MB | "
        f"{r['rss_mb_max']:.0f} MB | {r['rss_mb_per_1000_frames']:+.1f} MB per 1000 frames | "
        f"{r['tracks_started']} / {r['tracks_ended']} | "
        f"{r['tracks_live_mean']:.1f} |\n\n"
        f"Memory banks of the live tracks at the end (prompted, recent, pointers): {r['memory_banks_at_end']}.\n"
    )


if __name__ == "__main__":
    main()
