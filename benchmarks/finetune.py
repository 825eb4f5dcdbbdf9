"""The user's loop, run whole on the synthetic world: record, label with `dora-sam2-dataset`, correct
where SAM 2 is wrong, fine-tune with `dora-sam2-train`, and measure whether the masks got better.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/finetune.py                 # models/world-sam2, 5 minutes
    .venv/bin/python benchmarks/finetune.py --model DIR --minutes 10 --clips 4 --train-arg=--learning-rate=1e-4

1. Record: `--clips` new world clips (`dora-sam2-world --seed --seed`, 320x240 like the fixture's data,
   a seed no training run here uses: the fixture trained on 0, watched 1000, was measured on 2000).
2. Label: each clip's first `--label-frames` frames through examples/label.yml as a user runs it
   (`dora run`): the examples' camera plays the clip's video, examples/nodes/world_detector.py sends the world's true boxes on every frame (a
   detector that is right), dora-sam2 (MODE=track, EVERY_FRAME=1, MODEL=--model) masks them and
   dora-sam2-dataset writes the dataset. What is trained on is what the writer wrote.
3. Correct: this stands in for a person with the click page fixing what SAM 2 got wrong. On each frame
   the written masks are matched to the world's true ones (Hungarian, on mask IoU); a mask under
   `--fix-below` IoU with its object is replaced by the true mask, one that overlaps no object is
   deleted, and an object the detector saw (visibility 0.5 or more) that has no mask is added (its
   track id the node's for that object, when the node tracked it elsewhere). The counts are reported.
4. Fine-tune: `dora-sam2-train OUT --from --model --data <each corrected dataset> --minutes --threads`;
   with `--keep-clips N`, also `--data` N clips of the world the fixture learnt from (what it knew).
5. Measure, before (--model) and after (the fine-tuned model), with the trainer's own scorer
   (training/evaluate.py: each object's tight box, mask IoU with its truth): on the labelled frames, on
   the rest of the same clips (the same scenes later, never trained on: what a robot meets again), and
   on `--held-out-clips` clips of `--held-out-seed` (other scenes, never trained on); and box and
   one-click mIoU on those held-out clips with benchmarks/quality.py's segment mode.

Run it alone on the machine's cores (it trains for --minutes). Writes benchmarks/results/finetune.json
and finetune.md; the work (world, datasets, model) goes under --work, kept for a look afterwards.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))  # the dataflows the tests run, written once (tests/support)
from run import machine, save  # noqa: E402
from support.dataflows import BIN, path_env, world_label_flow, write_dataflow  # noqa: E402

SIZE = "320x240"  # the fixture's training data (scripts/make-fixture.sh)
MIN_VISIBILITY = 0.5  # what world_detector.py sees by default: the objects a person labels
TRACK_IDS_ADDED = 10_000  # plus the world's id: an object a person added that the node never tracked
KEPT_SEED, KEPT_FRAMES = 0, 60  # the fixture's own training world (scripts/make-fixture.sh), for --keep-clips
EVAL_FRAMES = 150  # frames spread through each evaluation set (training/evaluate.py's box_miou)


def main() -> None:
    args = parser().parse_args()
    work = Path(args.work).resolve()
    started = time.monotonic()
    labelled, corrections = labelled_data(work, args)
    model = work / "model"
    shutil.rmtree(model, ignore_errors=True)  # a rerun trains afresh, not from the last run's model
    train = [str(BIN / "dora-sam2-train"), str(model), "--from", args.model, "--minutes", str(args.minutes),
             "--threads", str(args.threads), "--seed", "0",
             *[a for d in labelled + kept_data(work, args.keep_clips) for a in ("--data", str(d))], *args.train_arg]
    trained = subprocess.run(train, cwd=ROOT, env=path_env(HF_HUB_OFFLINE="1"), capture_output=True, text=True)
    if trained.returncode != 0:
        raise SystemExit(f"dora-sam2-train failed:\n{trained.stderr[-3000:]}")
    card = json.loads(model.joinpath("README.md").read_text().split("```json\n", 1)[1].split("```", 1)[0])
    figures = {name: measure(path, work, args) for name, path in (("before", args.model), ("after", str(model)))}
    result = {"machine": machine(), "model": args.model, "seed": args.seed, "clips": args.clips,
              "frames": args.frames, "label_frames": args.label_frames, "held_out_seed": args.held_out_seed, "held_out_clips": args.held_out_clips,
              "held_out_frames": args.held_out_frames, "fix_below": args.fix_below, "corrections": corrections,
              "train_command": "dora-sam2-train " + shlex.join(train[1:]).replace(str(work), "WORK"),
              "training": {k: card[k] for k in ("steps", "minutes", "last losses")}, "figures": figures,
              "minutes_in_all": round((time.monotonic() - started) / 60, 1)}
    save("finetune", result, markdown(result))


def labelled_data(work: Path, args) -> tuple[list[Path], dict]:
    """Steps 1-3: the corrected datasets and what was corrected; with --reuse-labels, those of the last
    run in --work (to try other training arguments on the same data)."""
    done = work / "labelling.json"
    if args.reuse_labels and done.is_file():
        saved = json.loads(done.read_text())
        if saved["arguments"] == labelling_arguments(args):
            return [Path(p) for p in saved["datasets"]], saved["corrections"]
        print("--reuse-labels: the last run labelled other clips; labelling afresh", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    world(work / "world", args.seed, args.clips, args.frames)
    world(work / "held-out", args.held_out_seed, args.held_out_clips, args.held_out_frames, video=False)
    labelled, corrections = [], Counter()
    for clip in [c["camera"] for c in unique_cameras(work / "world")]:
        raw = label(args.model, work / "world", clip, work / "labelled" / clip, args.label_frames, args.threads)
        fixed = work / "corrected" / clip
        corrections.update(correct(raw, work / "world", clip, args.label_frames, fixed, args.fix_below))
        labelled.append(fixed)
    print(f"labelled {len(labelled)} clips; corrections: {dict(corrections)}", flush=True)
    done.write_text(json.dumps({"arguments": labelling_arguments(args), "datasets": [str(p) for p in labelled],
                                "corrections": dict(corrections)}))
    return labelled, dict(corrections)


def kept_data(work: Path, clips: int) -> list[Path]:
    """--keep-clips: the first clips of the world the fixture was trained on (seed 0, 60 frames, as
    scripts/make-fixture.sh draws them), trained on beside the new data: what the model knew, kept."""
    if clips <= 0:
        return []
    kept = work / f"kept-{clips}"
    if not (kept / "annotations.json").is_file():
        world(kept, KEPT_SEED, clips, KEPT_FRAMES, video=False)
    return [kept]


def labelling_arguments(args) -> dict:
    return {k: getattr(args, k) for k in ("model", "seed", "clips", "frames", "label_frames", "held_out_seed", "held_out_clips",
                                          "held_out_frames", "fix_below", "threads")}


# -- the loop's steps


def world(out: Path, seed: int, clips: int, frames: int, video: bool = True) -> None:
    """Random world clips at the fixture's size, frames as JPEG (as the dataset writer writes them)."""
    command = [str(BIN / "dora-sam2-world"), str(out), "--seed", str(seed), "--size", SIZE, "--clips", str(clips),
               "--frames", str(frames), "--image-format", "jpg", *([] if video else ["--no-video"])]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=1800)  # footage: ../shared/data


def unique_cameras(dataset: Path) -> list[dict]:
    images = json.loads((dataset / "annotations.json").read_text())["images"]
    return list({i["camera"]: i for i in images if i["frame"] == 0}.values())


def label(model: str, world_dir: Path, clip: str, out: Path, frames: int, threads: int) -> Path:
    """examples/label.yml on the clip's first `frames` frames with the world's boxes as the detector: the
    dataset written."""
    run_dir = out.parent / f"{clip}-run"
    run_dir.mkdir(parents=True)
    env = {"THREADS": str(threads), "DTYPE": "float32"}  # the trainer's dtype: before and after alike
    dataflow = write_dataflow(run_dir, world_label_flow(str(Path(model).resolve()), world_dir, clip, out, env, frames))
    run = subprocess.run([str(BIN / "dora"), "run", str(dataflow)], cwd=run_dir, env=path_env(HF_HUB_OFFLINE="1"),
                         capture_output=True, text=True, timeout=3600)
    (run_dir / "dora.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        raise SystemExit(f"the labelling dataflow of {clip} failed ({run_dir / 'dora.log'}):\n"
                         f"{(run.stdout + run.stderr)[-3000:]}")
    return out


def correct(labelled: Path, world_dir: Path, clip: str, frames: int, out: Path, fix_below: float) -> Counter:
    """The labelled dataset with SAM 2's mistakes fixed from the world's truth, as a person would with
    clicks, written to `out` (its images linked); what was fixed, counted."""
    data = json.loads((labelled / "annotations.json").read_text())
    truth = Truth(world_dir, clip)
    images = sorted(data["images"], key=lambda i: i["id"])  # written in the clip's order, every frame
    if len(images) != min(truth.frames, frames):
        raise SystemExit(f"{labelled} holds {len(images)} frames, not the first {frames} of {clip}")
    by_image: dict[int, list[dict]] = {}
    for annotation in data["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    frames = [(image, by_image.get(image["id"], []), truth.objects(index)) for index, image in enumerate(images)]
    matched = [match(written, objects) for _, written, objects in frames]
    tracks = Tracks(frames, matched)
    categories = {c["name"]: c["id"] for c in data["categories"]}
    counts, kept = Counter(), []
    for (image, written, objects), pairs in zip(frames, matched):
        fixed = correct_frame(image, written, objects, pairs, tracks, categories, fix_below)
        counts.update(fixed.counts)
        kept.extend(fixed.annotations)
    for n, annotation in enumerate(kept, 1):
        annotation["id"] = n
    data["annotations"] = kept
    data["categories"] = [{"id": i, "name": n} for n, i in categories.items()]
    out.mkdir(parents=True)
    (out / "images").symlink_to(labelled / "images")
    (out / "annotations.json").write_text(json.dumps(data))
    return counts


class Tracks:
    """Which world object each of the node's track ids followed (the one it overlapped on most frames),
    and back: a person's correction keeps the node's id for its object, as the click page does."""

    def __init__(self, frames, matched):
        votes = Counter((written[a].get("track_id"), objects[o]["track_id"])
                        for (_, written, objects), pairs in zip(frames, matched) for a, (o, _) in pairs.items())
        self.world_of, self.node_of = {}, {}
        for (node, world), _ in votes.most_common():
            if node is not None and node not in self.world_of and world not in self.node_of:
                self.world_of[node], self.node_of[world] = world, node


@dataclass
class Fixed:
    annotations: list[dict]
    counts: Counter


def correct_frame(image, written, objects, pairs, tracks: Tracks, categories: dict, fix_below: float) -> Fixed:
    """One frame's annotations, corrected. An empty mask says that the object is out of view: right when
    its object is, a miss (its true mask added) when the object is in view."""
    from dora_sam2.dataset import mask_fields
    from dora_sam2.training.data import MIN_AREA

    counts, kept = Counter(), []
    done = {o for o, _ in pairs.values()}  # true objects already answered on this frame
    for a, annotation in enumerate(written):
        if annotation["area"] == 0:
            counts["empty (object said out of view)"] += 1
            world = tracks.world_of.get(annotation.get("track_id"))
            if not any(o["track_id"] == world for o in objects):
                kept.append(annotation)  # right: its object is out of view (or it never had one)
            continue  # else its object is in view: added below with its true mask
        counts["masks written"] += 1
        o, iou = pairs.get(a, (None, 0.0))
        counts["IoU sum"] += iou
        if o is None:
            counts["deleted (on no object)"] += 1
            continue
        if iou < fix_below:
            annotation.update(mask_fields(objects[o]["mask"]))
            counts["replaced by the true mask"] += 1
        kept.append(annotation)
    ids = {a.get("track_id") for a in kept}
    for o, obj in enumerate(objects):
        if o in done or obj["visibility"] < MIN_VISIBILITY or obj["mask"].sum() < MIN_AREA:
            continue
        track_id = tracks.node_of.get(obj["track_id"])
        track_id = track_id if track_id is not None and track_id not in ids else TRACK_IDS_ADDED + obj["track_id"]
        category = categories.setdefault(obj["label"], len(categories) + 1)
        kept.append({"image_id": image["id"], "category_id": category, "iscrowd": 0, "score": 1.0,
                     "track_id": track_id, **mask_fields(obj["mask"])})
        counts["added (missed)"] += 1
    return Fixed(kept, counts)


def match(written: list[dict], objects: list[dict]) -> dict[int, tuple[int, float]]:
    """Written annotation index -> (true object index, IoU): a one-to-one assignment of most overlap,
    pairs with some overlap only."""
    from scipy.optimize import linear_sum_assignment

    import quality_metrics as qm

    if not written or not objects:
        return {}
    ious = qm.iou_matrix(np.stack([decode(a["segmentation"]) for a in written]), np.stack([o["mask"] for o in objects]))
    rows, cols = linear_sum_assignment(-ious)
    return {int(r): (int(c), float(ious[r, c])) for r, c in zip(rows, cols) if ious[r, c] > 0}


def decode(segmentation: dict) -> np.ndarray:
    from pycocotools import mask as coco_mask

    return coco_mask.decode(segmentation).astype(bool)


class Truth:
    """A world clip's true objects per frame, from the annotations dora-sam2-world wrote."""

    def __init__(self, world_dir: Path, clip: str):
        data = json.loads((world_dir / "annotations.json").read_text())
        frame_of = {i["id"]: i["frame"] for i in data["images"] if i["camera"] == clip}
        names = {c["id"]: c["name"] for c in data["categories"]}
        self.frames = len(frame_of)
        self._by_frame: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            if a["image_id"] in frame_of and a["area"] > 0:
                self._by_frame.setdefault(frame_of[a["image_id"]], []).append(
                    {"track_id": a["track_id"], "label": names[a["category_id"]], "visibility": a["visibility"],
                     "segmentation": a["segmentation"]})

    def objects(self, frame: int) -> list[dict]:
        return [dict(o, mask=decode(o["segmentation"])) for o in self._by_frame.get(frame, [])]


# -- measuring


def measure(model: str, work: Path, args) -> dict:
    """Box mIoU (the trainer's scorer) on the held-out clips and on the labelled ones, and one-click mIoU
    on the held-out clips (benchmarks/quality.py's segment mode)."""
    import quality
    from dora_sam2.model import Sam2Backend
    from dora_sam2.training.data import Dataset
    from dora_sam2.training.evaluate import box_miou

    backend = Sam2Backend.load(model, video=False, device="cpu", dtype="float32", threads=args.threads)
    clips = Dataset.read(work / "world").clips
    labelled = Dataset(tuple(c[: args.label_frames] for c in clips))
    later = Dataset(tuple(c[args.label_frames :] for c in clips))  # the same scenes, never trained on
    held_out = quality.make_clips(argparse.Namespace(
        size=(320, 240), fps=30.0, frames=args.held_out_frames, clips=args.held_out_clips, scenarios=["random"],
        seed=args.held_out_seed, min_area=16))
    segment = quality.segment_mode(held_out, quality.Models(model).backend(
        quality.Setting("base", (("DTYPE", "float32"), ("THREADS", str(args.threads)))), video=False), every=5)
    return {"held-out clips box mIoU": round(box_miou(backend, Dataset.read(work / "held-out"), EVAL_FRAMES), 4),
            "labelled frames box mIoU": round(box_miou(backend, labelled, EVAL_FRAMES), 4),
            "same scenes later box mIoU": round(box_miou(backend, later, EVAL_FRAMES), 4),
            "held-out box mIoU (quality.py)": round(segment["box_mIoU"], 4),
            "held-out one-click mIoU (quality.py)": round(segment["click_mIoU"], 4),
            "held-out objects (quality.py)": segment["objects"]}


def markdown(result: dict) -> str:
    c, before, after = result["corrections"], result["figures"]["before"], result["figures"]["after"]
    written = c.get("masks written", 0)
    lines = [f"Machine: {result['machine']}. Model: {result['model']}; {result['clips']} world clips of seed "
             f"{result['seed']} ({result['frames']} frames, {SIZE}), the first {result['label_frames']} of each "
             f"labelled by examples/label.yml with the world's boxes; held out: {result['held_out_clips']} clips of seed {result['held_out_seed']} "
             f"({result['held_out_frames']} frames).", "",
             f"Labelling: {written} masks written, mIoU {c.get('IoU sum', 0) / max(1, written):.3f} with the truth; "
             f"corrected (a person's clicks, simulated): {c.get('replaced by the true mask', 0)} replaced "
             f"(IoU under {result['fix_below']}), {c.get('deleted (on no object)', 0)} deleted, "
             f"{c.get('added (missed)', 0)} added.", "",
             f"Fine-tuning: `{result['train_command']}`: "
             f"{result['training']['steps']} steps in {result['training']['minutes']} min.", "",
             "| | before | after |", "|---|---|---|"]
    for name in before:
        lines.append(f"| {name} | {before[name]} | {after[name]} |")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "world-sam2"), help="the checkpoint to fine-tune")
    p.add_argument("--seed", type=int, default=3000, help="the world seed of the clips labelled and trained on")
    p.add_argument("--clips", type=int, default=3)
    p.add_argument("--frames", type=int, default=300, help="frames per clip")
    p.add_argument("--label-frames", type=int, default=150,
                   help="the first frames of each clip, labelled and trained on; the rest are the same scenes later")
    p.add_argument("--held-out-seed", type=int, default=3001)
    p.add_argument("--held-out-clips", type=int, default=8)
    p.add_argument("--held-out-frames", type=int, default=60)
    p.add_argument("--fix-below", type=float, default=0.8, help="a written mask under this IoU is corrected")
    p.add_argument("--minutes", type=float, default=5.0, help="dora-sam2-train's --minutes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keep-clips", type=int, default=0,
                   help="train on this many clips of the fixture's own world beside the new data (default 0)")
    p.add_argument("--train-arg", action="append", default=[], help="more dora-sam2-train arguments (repeat)")
    p.add_argument("--reuse-labels", action="store_true",
                   help="train and measure on the datasets the last run in --work labelled (same arguments)")
    p.add_argument("--work", default=str(ROOT / "out" / "finetune"), help="where the world, datasets and model go")
    return p


if __name__ == "__main__":
    main()
