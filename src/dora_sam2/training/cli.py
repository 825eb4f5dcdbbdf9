"""`dora-sam2-train`: train or fine-tune a SAM 2-family checkpoint on datasets in `dora-sam2-dataset`'s
layout (recordings labelled by `dora-sam2-dataset`, or `dora-sam2-world`'s clips).

    dora-sam2-train OUT --data DATASET [--data DATASET ...] (--from MODEL | --new SIZE) [--minutes 60]

    # the user's loop: fine-tune a checkpoint on a labelled recording, then run it
    dora-sam2-train out/my-sam2 --data out/dataset --from facebook/sam2.1-hiera-tiny --minutes 30
    MODEL=out/my-sam2 dora run examples/tracking.yml

OUT is a checkpoint directory that `MODEL=OUT` loads unchanged, written every --checkpoint-minutes and at
the end; `--resume` goes on from it. Ctrl-C stops after the current step and keeps what was learned.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

from . import parallel
from .data import Dataset, DatasetError
from .trainer import STATE, Plan, Trainer, write_card

log = logging.getLogger("dora_sam2.train")

MAX_STEPS = 10_000_000
MAX_MINUTES = 7 * 24 * 60.0
MAX_CLIP_FRAMES = 64  # memory for gradients grows with every frame of a clip
# The peak learning rate when --learning-rate is not given. From random weights, 3e-4: at 1e-3 a model
# learns to read its prompts early or late by luck (600 steps on a small world: box mIoU 0.15 to 0.63 over
# four seeds, 0.64 to 0.69 at 3e-4), and on the fixture's data 3e-4 alone does as well as the fixture's
# focus steps at 1e-3 (BENCHMARKS.md, "Training a SAM 2 here"). The fixture fine-tuned on three labelled
# clips at 1e-3 forgot what it knew (benchmarks/finetune.py, 5 minutes: box mIoU on other scenes 0.65 ->
# 0.50, on the same scenes later 0.62 -> 0.60); at 1e-4 it gained more on the labelled frames (0.61 ->
# 0.77, against 0.75), rose on the same scenes later (0.69) and lost 0.03.
NEW_LEARNING_RATE = 3e-4
FINE_TUNE_LEARNING_RATE = 1e-4


LOG_FORMAT = "%(levelname)s dora-sam2-train: %(message)s"


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    try:
        sys.exit(_run(args, argv))
    except (DatasetError, ValueError) as error:
        log.error("%s", error)
        sys.exit(1)


def _run(args, argv) -> int:
    """Everything that can be wrong with the arguments is found here, before any training process starts."""
    from ..devices import prepare_cpu, resolve_device
    from ..loading import ModelLoadError, load_sam2
    from ..random_model import build

    plan = Plan(out=Path(args.out), steps=args.steps, minutes=args.minutes, learning_rate=_learning_rate(args),
                video_share=args.video_share, video_after=args.video_after, focus_steps=args.focus_steps,
                focus_learning_rate=args.focus_learning_rate, clip_frames=args.clip_frames,
                prompt_again=args.prompt_again, seed=args.seed,
                checkpoint_minutes=args.checkpoint_minutes, freeze_encoder=args.freeze_encoder)
    state = plan.out / STATE
    if state.exists() and not args.resume:
        raise ValueError(f"{plan.out} holds a training run: add --resume to go on with it, or choose another OUT.")
    if args.resume and not state.exists():
        raise ValueError(f"{plan.out} holds no training run to resume ({STATE} is missing): leave out --resume.")
    datasets = [Dataset.read(d) for d in args.data]
    validation = Dataset.read(args.val) if args.val else None
    device = resolve_device(args.device)
    if args.processes > 1 and device.type != "cpu":
        raise ValueError(f"--processes splits training over CPU cores; on {device} train with one process "
                         "(leave --processes out).")
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // args.processes)
    if device.type == "cpu":
        prepare_cpu(threads)  # as the node does: each step frees what the next allocates
    try:
        if args.resume:
            model = load_sam2(str(plan.out), video=True)
            _same_input_size(args.image_size, model.config.image_size, plan.out)
        elif args.new:
            model = build(args.new, args.seed, args.image_size)
        else:
            model = load_sam2(args.source, video=True, image_size=args.image_size)
    except ModelLoadError as error:
        raise ValueError(str(error)) from None
    command = "dora-sam2-train " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.processes == 1:
        _train(None, model, plan, datasets, validation, device, threads, args, command)
    else:
        # as bytes, not tensors: spawn hands tensors over in shared memory, which a container's /dev/shm
        # (64 MB in Docker unless told) cannot hold for a large model; each process loads its own copy
        parallel.run(args.processes, _train, (_as_bytes(model), plan, datasets, validation, device, threads,
                                              args, command), LOG_FORMAT)
    return 0


def _train(replicas: parallel.Replicas | None, model, plan: Plan, datasets: list[Dataset],
           validation: Dataset | None, device, threads: int, args, command: str) -> None:
    """One process's run (of one, or of --processes, where `model` comes as bytes): the first reports,
    validates and writes the card."""
    if replicas is not None:
        import torch

        from ..devices import prepare_cpu

        prepare_cpu(threads)
        model = torch.load(io.BytesIO(model), weights_only=False)
    trainer = Trainer(model, plan, datasets, device, str(plan.out), replicas)
    first = trainer.rank == 0
    if args.resume:
        trainer.resume()
    figures = {}
    if validation is not None and first:
        figures["box mIoU before"] = _validate(trainer, validation)
    log.info("training %s (%.1f M parameters) on %d frames from %d dataset(s), on %s%s",
             args.new or args.source or plan.out, sum(p.numel() for p in model.parameters()) / 1e6,
             sum(d.frames for d in datasets), len(datasets), device,
             f", {args.processes} processes of {threads} thread(s)" if replicas else "")
    _loop(trainer, validation)
    trainer.save()
    if not first:
        return
    if validation is not None:
        figures["box mIoU after"] = _validate(trainer, validation)
    write_card(plan.out, command, {"steps": trainer.progress.step, "minutes": round(trainer.progress.seconds / 60, 1),
                                   "device": str(device), "processes": args.processes,
                                   "data": [str(d) for d in args.data],
                                   "from": args.new and f"random {args.new}" or args.source or "resumed",
                                   "last losses": trainer.progress.recent} | figures)
    if trainer.unreadable_in_run:
        log.warning("%d of %d samples could not be read and were passed over", trainer.unreadable_in_run,
                    trainer.progress.step * args.processes)
    log.info("%s: %d steps in %.1f min; load it with MODEL=%s", plan.out, trainer.progress.step,
             trainer.progress.seconds / 60, plan.out)


def _as_bytes(model) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def _learning_rate(args) -> float:
    """--learning-rate, else the resumed run's, else by how the run starts: from random weights or a
    trained checkpoint."""
    if args.learning_rate is not None:
        return args.learning_rate
    state = Path(args.out) / STATE
    if args.resume and state.exists():
        import torch

        return float(torch.load(state, weights_only=False)["plan"]["learning_rate"])
    return NEW_LEARNING_RATE if args.new else FINE_TUNE_LEARNING_RATE


def _validate(trainer: Trainer, validation: Dataset) -> float:
    miou = round(trainer.box_miou(validation), 4)
    log.info("step %d: box mIoU %.4f on the validation set", trainer.progress.step, miou)
    return miou


def _loop(trainer: Trainer, validation: Dataset | None) -> None:
    from tqdm import tqdm

    first = trainer.rank == 0
    previous = signal.signal(signal.SIGINT, lambda *_: setattr(trainer, "stop_asked", True))
    saved = trainer.progress.seconds  # training time, which every process of a run counts alike
    sums: dict[str, list[float]] = {}
    try:
        with tqdm(total=trainer.plan.steps or None, initial=trainer.progress.step, unit="step",
                  dynamic_ncols=True, disable=not first) as bar:
            while not trainer.done() and not trainer.stopping:
                for name, value in trainer.step().items():
                    if name != "stage":
                        sums.setdefault(name, []).append(value)
                bar.update(1)
                if trainer.progress.step % 50 == 0:
                    trainer.progress.recent = {k: round(sum(v) / len(v), 4) for k, v in sums.items()}
                    sums.clear()
                    bar.set_postfix(trainer.progress.recent | {"min": round(trainer.progress.seconds / 60, 1)})
                if trainer.progress.seconds - saved > trainer.plan.checkpoint_minutes * 60:
                    trainer.save()
                    if validation is not None and first:
                        _validate(trainer, validation)
                    saved = trainer.progress.seconds
    finally:
        signal.signal(signal.SIGINT, previous)
    if trainer.stopping:
        log.info("stopped at step %d: saving what was learned (go on with --resume)", trainer.progress.step)


def _same_input_size(asked: int, own: int, out: Path) -> None:
    """A resumed run goes on at its own input size: its optimiser's state and schedule belong to it, so a
    different --image-size is refused rather than dropped without a word."""
    if asked and asked != own:
        raise ValueError(f"{out} trains at {own}; --resume cannot change that to --image-size {asked}: leave "
                         f"--image-size out, or fine-tune into another OUT with --from {out} --image-size {asked}.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dora-sam2-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", help="the checkpoint directory to write (MODEL=OUT loads it)")
    parser.add_argument("--data", action="append", required=True, metavar="DATASET",
                        help="a dataset directory (annotations.json + images/); repeat for several")
    parser.add_argument("--val", metavar="DATASET", help="a dataset to report box mIoU on, at each checkpoint")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from", dest="source", metavar="MODEL", help="a checkpoint to fine-tune: hub id or directory")
    start.add_argument("--new", choices=("micro", "test", "tiny"), help="train from random weights of this size")
    parser.add_argument("--resume", action="store_true", help="go on with the run in OUT")
    parser.add_argument("--image-size", type=int, default=0, help="a square input other than the checkpoint's")
    parser.add_argument("--steps", type=int, default=0, help="steps to train (0: until --minutes)")
    parser.add_argument("--minutes", type=float, default=0.0, help="time budget in minutes of training")
    parser.add_argument("--learning-rate", type=float,
                        help=f"the peak learning rate (default {NEW_LEARNING_RATE:g} with --new, {FINE_TUNE_LEARNING_RATE:g} "
                             "with --from: a trained model forgets at more; --resume: the run's own)")
    parser.add_argument("--video-share", type=float, default=0.5, help="share of steps that train on clips (0-1)")
    parser.add_argument("--prompt-again", type=float, default=0.0,
                        help="share of clips whose objects are prompted again on a later frame, as a detection "
                             "round does (0-1; clips of 4 frames or more)")
    parser.add_argument("--video-after", type=float, default=0.0,
                        help="share of the run (0-1) that trains on single frames only, before any clip: a model "
                             "from scratch must learn to read prompts first (tracked frames have none)")
    parser.add_argument("--focus-steps", type=int, default=0,
                        help="first steps on the first dataset's first 2 clips only: a model from scratch learns "
                             "there to read prompts, which varied data teaches it slowly")
    parser.add_argument("--focus-learning-rate", type=float, default=1e-3,
                        help="the learning rate through the focus steps (then --learning-rate's schedule)")
    parser.add_argument("--clip-frames", type=int, default=4, help="frames per training clip")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the decoder and memory only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    parser.add_argument("--processes", type=int, default=1,
                        help="CPU processes training side by side, each on its own samples (data-parallel; one "
                             "per core uses them best)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per process (0: the cores this process may use, shared among --processes)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0)
    return parser


def _check(parser: argparse.ArgumentParser, args) -> None:
    if not (args.source or args.new or args.resume):
        parser.error("say what to train: --from MODEL (a checkpoint to fine-tune), --new SIZE, or --resume")
    if not (args.steps or args.minutes):
        parser.error("say how long: --steps N or --minutes M")
    bounds = {"--steps": (args.steps, 0, MAX_STEPS), "--minutes": (args.minutes, 0, MAX_MINUTES),
              "--clip-frames": (args.clip_frames, 1, MAX_CLIP_FRAMES), "--video-share": (args.video_share, 0, 1),
              "--prompt-again": (args.prompt_again, 0, 1), "--video-after": (args.video_after, 0, 1),
              "--focus-steps": (args.focus_steps, 0, MAX_STEPS),
              "--learning-rate": (args.learning_rate or 0, 0, 1), "--focus-learning-rate": (args.focus_learning_rate, 0, 1), "--threads": (args.threads, 0, 1024),
              "--processes": (args.processes, 1, parallel.MAX_PROCESSES),
              "--checkpoint-minutes": (args.checkpoint_minutes, 0.1, MAX_MINUTES)}
    for name, (value, low, high) in bounds.items():
        if not (low <= value <= high):
            parser.error(f"{name} must be from {low} to {high}, got {value}")


if __name__ == "__main__":
    main()
