"""How well masks fit by frames since the last detection round: where a track loses its object.

    .venv/bin/python benchmarks/after_rounds.py --model models/world-sam2 --clips 8

On `quality.py`'s held-out clips (seed 2000), the world's boxes every `--detect-every` frames, fp32, one
thread. Per frame since the round, the mean IoU of each object in view with the best-fitting mask answered
(ids aside: this is about the masks, not who holds them), and the share of objects under IoU 0.1. Rows:

- tracker: the node's tracker (quality.py's `ours`), SAM 2's memory (FORGET_ON_PROMPT=0), and with
  FORGET_ON_PROMPT=1;
- the model alone (`Sam2StreamingModel`, no lifecycle), every object in view prompted with its box at each
  round: memory kept across rounds as the tracker keeps it (`keep`), a round dropping the tracked frames
  before it (`forget`), or each round starting memory afresh, as a training clip starts (`fresh`).

A fall on the first frame after a round, rather than over the frames since, points at what the memory holds
after a new prompt, not at drift. Writes benchmarks/results/after-rounds.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402

BASE = {"DTYPE": "float32", "THREADS": "1"}
UNDER = 0.1  # an object under this IoU is counted as lost on that frame


def best_fits(masks: np.ndarray, clip: quality.Clip, t: int) -> list[float]:
    """Per object in view on frame t: its IoU with the answered mask that fits it best (0 with none)."""
    fits = []
    for obj in clip.present(t):
        truth = clip.frames[t].mask(obj)
        union = np.maximum((masks | truth).sum(axis=(1, 2)), 1)
        fits.append(float(((masks & truth).sum(axis=(1, 2)) / union).max(initial=0.0)))
    return fits


def tracker(clips, models, every: int, forget: bool) -> dict[int, list[float]]:
    setting = quality.Setting("t", tuple(sorted({**BASE, "FORGET_ON_PROMPT": str(int(forget))}.items())))
    by_age: dict[int, list[float]] = {k: [] for k in range(every)}
    for clip in clips:
        for t, answer, _ in quality.ours(clip, models, setting, every):
            by_age[t % every].extend(best_fits(answer.masks, clip, t))
    return by_age


def model_alone(clips, model, every: int, memory: str) -> dict[int, list[float]]:
    """Rounds of boxes for every object in view, the frames between tracked from memory: `keep`, `forget` or
    `fresh` at each round (module docstring)."""
    import torch

    from dora_sam2.domain import Frame, Prompt

    by_age: dict[int, list[float]] = {k: [] for k in range(every)}
    with torch.inference_mode():
        for clip in clips:
            banks: dict[int, object] = {}
            for start in range(0, len(clip.frames), every):
                detections = clip.detections(start)
                if not detections:
                    continue
                objects = [d.track_id for d in detections]
                if memory == "fresh":
                    banks = {}
                for obj in objects:
                    if obj not in banks:
                        banks[obj] = model.new_memory()
                    elif memory == "forget":
                        banks[obj].forget_tracked()
                memories = [banks[obj] for obj in objects]
                for t in range(start, min(start + every, len(clip.frames))):
                    frame = Frame("image", clip.frames[t].rgb, None, "rgb8")
                    features = model.encode(frame)
                    prompted = t == start
                    step = model.prompt(features, Prompt.from_boxes("image", np.array([d.box for d in detections]))) \
                        if prompted else model.track(features, memories, t)
                    for bank, remembered in zip(memories, model.remember(features, step, [prompted] * len(objects))):
                        bank.add(t, remembered, prompted)
                    by_age[t - start].extend(best_fits(model.postprocess(step, frame).masks, clip, t))
    return by_age


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a checkpoint directory (or hub id) as MODEL loads it")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--detect-every", type=int, default=10)
    parser.add_argument("--out", default=str(quality.RESULTS / "after-rounds.json"))
    args = parser.parse_args()
    if not 1 <= args.clips <= 1000 or not 2 <= args.frames <= 10_000 or not 2 <= args.detect_every <= args.frames:
        parser.error("--clips 1-1000, --frames 2-10000, --detect-every 2 to --frames")
    import torch

    from dora_sam2.model import Sam2Backend
    from dora_sam2.video import Sam2StreamingModel

    torch.set_num_threads(1)
    clips = quality.make_clips(argparse.Namespace(size=(320, 240), fps=30.0, frames=args.frames, clips=args.clips,
                                                  scenarios=list(quality.SCENARIO_CYCLE), seed=2000, min_area=16))
    models = quality.Models(args.model)
    alone = Sam2StreamingModel(Sam2Backend.load(args.model, video=True, device="cpu", dtype="float32", threads=1))
    rows = {"tracker, FORGET_ON_PROMPT=0": tracker(clips, models, args.detect_every, False),
            "tracker, FORGET_ON_PROMPT=1": tracker(clips, models, args.detect_every, True)}
    for memory in ("keep", "forget", "fresh"):
        rows[f"model alone, {memory}"] = model_alone(clips, alone, args.detect_every, memory)
    summary = {name: {age: {"mIoU": float(np.mean(fits)), "under": float(np.mean(np.array(fits) < UNDER))}
                      for age, fits in by_age.items() if fits} for name, by_age in rows.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "clips": args.clips, "frames": args.frames,
                               "detect_every": args.detect_every, "rows": summary}, indent=1))
    ages = range(args.detect_every)
    lines = ["| frames since the round | " + " | ".join(map(str, ages)) + " |", "|---|" + "---|" * len(ages)]
    for name, by_age in summary.items():
        lines.append(f"| {name} | " + " | ".join(f"{by_age[a]['mIoU']:.3f} ({by_age[a]['under']:.0%})"
                                                 if a in by_age else "" for a in ages) + " |")
    table = "\n".join(lines) + f"\n\nmIoU of each object's best mask (share under IoU {UNDER}); {args.model}.\n"
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
