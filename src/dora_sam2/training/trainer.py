"""The training loop: samples from the datasets, a step of the image or the video stage, AdamW with a
warm-up and a cosine decay over the run (its steps, or its time budget), resumable checkpoints.

Everything a run needs to go on where it stopped is in OUT: the model as `MODEL=OUT` loads it
(`save_pretrained`), and `training-state.pt` (the optimiser, the step, the time spent, the random
generators). A checkpoint is written every `checkpoint_minutes` and at the end, whole or not at all.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..model import Sam2Backend
from ..video import Sam2StreamingModel
from . import steps
from .data import Dataset, DatasetError

log = logging.getLogger("dora_sam2.train")

STATE = "training-state.pt"
WARMUP_SHARE = 0.02  # of the run: AdamW's first steps are large before its moment estimates settle
GRADIENT_CLIP = 0.1  # Meta's sam2 clips at this norm


@dataclass(frozen=True)
class Plan:
    """What to train, on what, for how long: dora-sam2-train's arguments."""

    out: Path
    steps: int = 0  # 0: as many as `minutes` allows
    minutes: float = 0.0  # 0: no time budget (then `steps` ends the run)
    learning_rate: float = 3e-4  # dora-sam2-train's NEW_LEARNING_RATE
    video_share: float = 0.5  # of steps: a clip through memory rather than one frame
    video_after: float = 0.0  # of the run: image steps only before it (a model from scratch learns prompts first)
    focus_steps: int = 0  # the first steps sample only the first `focus_clips` clips of the first dataset
    focus_clips: int = 2
    focus_learning_rate: float = 1e-3  # the focus steps' own warm-up and decay peak at this; then the run's
    clip_frames: int = 4
    clip_stride: int = 8  # at most: clips span up to (clip_frames - 1) * this many frames
    max_objects: int = 8  # per image step
    clip_objects: int = 3  # per clip step
    box_share: float = 0.5  # of prompts: a box rather than clicks
    seed: int = 0
    checkpoint_minutes: float = 10.0
    freeze_encoder: bool = False  # fine-tuning on a little data: train the decoder and memory only


@dataclass
class Progress:
    step: int = 0
    seconds: float = 0.0
    recent: dict = field(default_factory=dict)  # mean losses since the last report
    focus_share: float = 0.0  # of the run, when the focus steps ended: the main stage's schedule starts there

    def share_done(self, plan: Plan) -> float:
        by_steps = self.step / plan.steps if plan.steps else 0.0
        by_time = self.seconds / (plan.minutes * 60) if plan.minutes else 0.0
        return min(1.0, max(by_steps, by_time))


def learning_rate(plan: Plan, done: float, peak: float | None = None) -> float:
    """A warm-up over WARMUP_SHARE of a stage, then a cosine decay to 0 at its end (`done` 0 to 1)."""
    peak = plan.learning_rate if peak is None else peak
    if done < WARMUP_SHARE:
        return peak * (0.1 + 0.9 * done / WARMUP_SHARE)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (done - WARMUP_SHARE) / (1 - WARMUP_SHARE))))


class Trainer:
    def __init__(self, model, plan: Plan, datasets: list[Dataset], device: torch.device, source: str):
        self.plan, self.datasets, self.device, self.source = plan, datasets, device, source
        self.model = model.to(device).train()
        if plan.freeze_encoder:
            for parameter in self.model.vision_encoder.parameters():
                parameter.requires_grad_(False)
        self.streaming = Sam2StreamingModel(Sam2Backend(self.model, device, torch.float32, source))
        self.streaming.learning = True
        self.optimizer = self._new_optimizer()
        self.rng = np.random.default_rng(plan.seed)
        self.progress = Progress()
        self.unreadable = 0  # samples passed over: a frame or mask that could not be read
        # A model from scratch learns first to find objects and to ignore its prompts, on varied data, for
        # thousands of steps: a few scenes it can learn by heart, where only the prompt tells one object
        # from another, teach it to read prompts in hundreds. It keeps doing so on all the data after a
        # fresh start of the optimiser at a lower learning rate (3e-4 kept it; 1e-3, or the focus's own
        # optimiser state carried on, unlearnt it).
        self._focus = Dataset(datasets[0].clips[: plan.focus_clips])
        self.video = plan.video_share > 0 and any(d.has_clips(plan.clip_frames) for d in datasets)
        if plan.video_share > 0 and not self.video:
            log.warning("no dataset has clips of %d frames with track ids: training the image stage only",
                        plan.clip_frames)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        trained = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(trained, lr=self.plan.learning_rate, weight_decay=0.1)

    def _share_after_focus(self) -> float:
        """How far the run is past its focus steps, 0 to 1: the main stage's own schedule."""
        done, focus = self.progress.share_done(self.plan), self.progress.focus_share
        return max(0.0, (done - focus) / max(1e-9, 1 - focus))

    def done(self) -> bool:
        return self.progress.share_done(self.plan) >= 1.0

    def step(self) -> dict[str, float]:
        started = time.perf_counter()
        focusing = self.progress.step < self.plan.focus_steps
        if self.progress.step == self.plan.focus_steps and self.plan.focus_steps:
            self.optimizer = self._new_optimizer()  # the focus's moments fit two clips, not the data
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.plan, self.progress.step / self.plan.focus_steps,
                                        self.plan.focus_learning_rate) if focusing else \
                learning_rate(self.plan, self._share_after_focus())
        dataset = self._focus if focusing else \
            self.datasets[self.rng.integers(len(self.datasets))]
        video = self.video and self.progress.share_done(self.plan) >= self.plan.video_after
        try:
            clip = dataset.clip_sample(self.rng, self.plan.clip_frames, self.plan.clip_stride,
                                       self.plan.clip_objects) \
                if video and dataset.has_clips(self.plan.clip_frames) and self.rng.random() < self.plan.video_share \
                else None
            image = None if clip is not None else dataset.image_sample(self.rng, self.plan.max_objects)
        except DatasetError as error:  # a frame or mask that cannot be read: said once, counted, passed over
            if not self.unreadable:
                log.warning("%s Samples that cannot be read are passed over (counted at the end).", error)
            self.unreadable += 1
            self.progress.step += 1
            return {}
        if clip is not None:
            scored = steps.clip_step(self.streaming, clip, self.rng, self.plan.box_share)
        else:
            scored = steps.image_step(self.streaming, image, self.rng, self.plan.box_share)
        self.optimizer.zero_grad(set_to_none=True)
        total = scored.total
        if not torch.isfinite(total):
            log.warning("step %d: the loss is not finite; skipped", self.progress.step)
        else:
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRADIENT_CLIP)
            self.optimizer.step()
        self.progress.step += 1
        if self.progress.step == self.plan.focus_steps:
            self.progress.focus_share = self.progress.share_done(self.plan)
        self.progress.seconds += time.perf_counter() - started
        return scored.items() | {"stage": "video" if clip is not None else "image"}

    # -- checkpoints

    def save(self) -> None:
        """The model where MODEL=out loads it, then the state to go on from; each file replaced whole."""
        out = self.plan.out
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        state = {"optimizer": self.optimizer.state_dict(), "progress": asdict(self.progress),
                 "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.plan).items()}}
        partial = out / (STATE + ".partial")
        torch.save(state, partial)
        os.replace(partial, out / STATE)

    def box_miou(self, dataset: Dataset) -> float:
        """The model as the node would run it now (a fresh backend: what it keeps depends on the weights)."""
        from .evaluate import box_miou

        self.model.eval()
        try:
            return box_miou(Sam2Backend(self.model, self.device, torch.float32, self.source), dataset)
        finally:
            self.model.train()

    def resume(self) -> None:
        state = torch.load(self.plan.out / STATE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.progress = Progress(**state["progress"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])


def write_card(out: Path, command: str, summary: dict) -> None:
    """A model card beside the weights: what it is, how it was made, the command that remakes it."""
    lines = ["---", "library_name: transformers", "tags: [sam2, dora-sam2, synthetic]", "---", "",
             f"# {out.name}", "", "A SAM 2-family checkpoint trained by `dora-sam2-train`.", "",
             "## How it was made", "", "```bash", command, "```", "", "## Run", "", "```json",
             json.dumps(summary, indent=2), "```", ""]
    (out / "README.md").write_text("\n".join(lines))
