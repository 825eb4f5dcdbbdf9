"""Tracking cost per frame for 1, 4 and 8 objects, steady state (each object's memory window full).

    .venv/bin/python benchmarks/track.py                 # random hiera-tiny, the node's default dtype
    .venv/bin/python benchmarks/track.py --model DIR --dtype float32 --objects 1 2 4 8
    .venv-ref/bin/python benchmarks/track.py --configs tiny@1024 tiny@512 edgetam@1024 edgetam@512
                                                         # one run, one table of per-frame costs

Drives the real Tracker and streaming model, as the node does: objects prompted on frame 0, then
tracked from memory. Times the frames after the memory window has filled (num_maskmem frames), best of
`--repeats`, and prints the cost split (encode, memory attention + decoding, memory encoding) with the
FLOPs SAM2's memory attention needs per object. Writes benchmarks/results/track.json and track.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from run import machine, model_at_size, random_tiny, save  # noqa: E402

WIDTH, HEIGHT = 640, 480


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3, help="steady-state frames timed per object count")
    parser.add_argument("--image-size", type=int, default=0, help="IMAGE_SIZE (0: the checkpoint's own)")
    parser.add_argument("--configs", nargs="+", metavar="MODEL@SIZE",
                        help="per-frame cost for each (tiny, edgetam: random weights; or a directory), one table")
    args = parser.parse_args()
    if args.configs:
        return save("track-configs", *configs_table(args))

    model_dir = args.model or str(random_tiny())
    streaming = load(model_dir, args.image_size, args)
    backend = streaming.backend
    rows = {n: cost_per_frame(streaming, n, args.repeats) for n in args.objects}
    base = rows[min(rows)]["total_ms"]
    for row in rows.values():
        row["x_of_fewest"] = row["total_ms"] / base
    result = {"model": model_dir, "dtype": str(backend.dtype), "device": str(backend.device),
              "input_size": backend.input_size,
              "machine": machine(), "flops": flops(streaming), "objects": rows}
    save(f"track-{backend.input_size}", result, markdown(result))


def load(model_dir: str, image_size: int, args):
    from dora_sam2.model import Sam2Backend
    from dora_sam2.video import Sam2StreamingModel

    return Sam2StreamingModel(Sam2Backend.load(model_dir, dtype=args.dtype, device=args.device,
                                               image_size=image_size, video=True))


def configs_table(args) -> tuple[dict, str]:
    """Per MODEL@SIZE, per object count: the steady-state cost of a frame, as ratios to the first config."""
    rows = {}
    for config in args.configs:
        print(f"{config} ...", flush=True)
        streaming = load(*model_at_size(config), args)
        rows[config] = {n: cost_per_frame(streaming, n, args.repeats) for n in args.objects}
        dtype = str(streaming.backend.dtype).removeprefix("torch.")
    first = rows[args.configs[0]]
    lines = [f"Tracking, steady state, {dtype}, {WIDTH}x{HEIGHT}; {machine()}. `x` is the cost against "
             f"{args.configs[0]} with as many objects.", "",
             "| model @ input | " + " | ".join(f"{n} object{'s' * (n > 1)} | x" for n in args.objects) + " |",
             "|---|" + "---|---|" * len(args.objects)]
    for config, row in rows.items():
        cells = [f"{row[n]['total_ms']:.0f} ms | {row[n]['total_ms'] / first[n]['total_ms']:.2f}x" for n in args.objects]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    lines += ["", "| model @ input | objects | encode | memory attention + decode | memory encode |", "|---|---|---|---|---|"]
    for config, row in rows.items():
        for n, r in row.items():
            lines.append(f"| {config} | {n} | {r['encode_ms']:.0f} ms | {r['memory_ms']:.0f} ms | {r['remember_ms']:.0f} ms |")
    return {"machine": machine(), "dtype": dtype, "configs": rows}, "\n".join(lines) + "\n"


def cost_per_frame(streaming, objects: int, repeats: int) -> dict:
    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.tracking import LostAfter, Tracker, TrackPolicy

    never_lost = TrackPolicy(objects, LostAfter(10**9, frames=True), detector_misses=0, revive_seconds=0)
    tracker = Tracker(streaming, never_lost)
    rng = np.random.default_rng(0)
    boxes = [[40 + 140 * (i % 4), 40 + 200 * (i // 4), 160 + 140 * (i % 4), 200 + 200 * (i // 4)] for i in range(objects)]
    steady_after = streaming.num_maskmem  # by then every object reads a full memory window
    times = []
    for index in range(steady_after + repeats):
        frame = Frame("image", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8), None, "rgb8")
        prompt = Prompt.from_boxes("bbox", np.array(boxes, np.float32)) if index == 0 else None
        before = {stage: tracker.stages.seconds[stage] for stage in ("encode", "memory", "remember", "postprocess")}
        started = time.perf_counter()
        masks = tracker.step(frame, prompt)
        total = time.perf_counter() - started
        if index >= steady_after:
            times.append({"total": total, **{s: tracker.stages.seconds[s] - before[s] for s in before}})
    assert len(masks) == objects, (len(masks), objects)
    best = min(times, key=lambda t: t["total"])
    return {f"{stage}_ms": 1e3 * seconds for stage, seconds in best.items()}


def flops(streaming) -> dict:
    """Multiply-adds x2 of memory attention's attention products, per object and frame, window full: as
    SAM2 computes them, and as we do (the memory averaged 64 wide before its value projection)."""
    config = streaming.config
    tokens = streaming.size[0] * streaming.size[1]
    width = config.memory_attention_hidden_size
    pointer_tokens = (streaming.max_pointers) * (config.vision_config.fpn_hidden_size // streaming.model.mem_dim)
    frame_tokens = (getattr(config, "perceiver_resampler_num_latents", 0)  # EdgeTAM remembers latents
                    + getattr(config, "perceiver_resampler_num_latents_2d", 0)) or tokens
    memory_tokens = streaming.num_maskmem * frame_tokens + pointer_tokens
    layers = config.memory_attention_num_layers
    self_attention = layers * 4 * tokens * tokens * width
    cross_attention = layers * 4 * tokens * memory_tokens * width
    ours = layers * 2 * tokens * memory_tokens * (width + streaming.model.mem_dim)
    return {"memory_attention_gflop_per_object": (self_attention + cross_attention) / 1e9,
            "of_which_cross_attention_gflop": cross_attention / 1e9, "memory_tokens": memory_tokens,
            "ours_gflop_per_object": (self_attention + ours) / 1e9}


def markdown(result: dict) -> str:
    lines = [
        f"Tracking, steady state: {Path(result['model']).name} at {result['input_size']}, "
        f"{result['dtype'].removeprefix('torch.')} on "
        f"{result['device']}, {WIDTH}x{HEIGHT}; {result['machine']}.",
        "",
        "| objects | per frame | x of 1 object | encode | memory attention + decode | memory encode | post-process |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, row in result["objects"].items():
        lines.append(f"| {n} | {row['total_ms']:.0f} ms | {row['x_of_fewest']:.2f}x | {row['encode_ms']:.0f} ms | "
                     f"{row['memory_ms']:.0f} ms | {row['remember_ms']:.0f} ms | {row['postprocess_ms']:.0f} ms |")
    f = result["flops"]
    lines += ["", f"Memory attention per object and frame: {f['memory_attention_gflop_per_object']:.0f} GFLOP in its "
                  f"attention products as SAM2 computes them ({f['of_which_cross_attention_gflop']:.0f} GFLOP of them "
                  f"over {f['memory_tokens']} memory tokens); {f['ours_gflop_per_object']:.0f} GFLOP as this node "
                  "computes them (the memory averaged before its value projection).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
