"""The training loop: samples from the datasets, a step of the image or the video stage, AdamW with a
warm-up and a cosine decay over the run (its steps, or its time budget), resumable checkpoints.

Everything a run needs to go on where it stopped is in OUT: the model as `MODEL=OUT` loads it
(`save_pretrained`), and `training-state.pt` (the optimiser, the step, the time spent, the random
generators). A checkpoint is written every `checkpoint_minutes` and at the end, whole or not at all.

Data-parallel (`--processes`): every process runs this loop on samples of its own, and one all-reduce a
step (parallel.py) gives them all the mean gradient, the step's time and a stop asked of any of them, so
their models, schedules and checkpoints stay in step; the first process writes.
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
from . import losses, steps
from .data import Dataset, DatasetError
from .parallel import Replicas

log = logging.getLogger("dora_sam2.train")

STATE = "training-state.pt"
WARMUP_SHARE = 0.02  # of the run: AdamW's first steps are large before its moment estimates settle
GRADIENT_CLIP = 0.1  # Meta's sam2 clips at this norm
STAGE_STREAM = 2**31  # the stage generator's key, apart from every process's own ([seed, rank])


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
    # of clip steps: every object prompted again on a later frame, as a detection round does (steps.clip_step)
    prompt_again: float = 0.0
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
    def __init__(self, model, plan: Plan, datasets: list[Dataset], device: torch.device, source: str,
                 replicas: Replicas | None = None):
        self.plan, self.datasets, self.device, self.source = plan, datasets, device, source
        self.replicas = replicas  # the other processes of a data-parallel run (parallel.py), or None
        self.model = model.to(device).train()
        if plan.freeze_encoder:
            for parameter in self.model.vision_encoder.parameters():
                parameter.requires_grad_(False)
        self.streaming = Sam2StreamingModel(Sam2Backend(self.model, device, torch.float32, source))
        self.streaming.learning = True
        self.optimizer = self._new_optimizer()
        # each process its own samples: the first draws what a run of one process draws
        self.rng = np.random.default_rng(plan.seed if self.rank == 0 else [plan.seed, self.rank])
        if self.rank:
            torch.manual_seed(plan.seed + self.rank)  # memory attention's dropout
        # one generator for every process: all take a clip step or all a frame, so none waits long on another
        self.stages = np.random.default_rng([plan.seed, STAGE_STREAM])
        self._waited = 0.0  # seconds the last step waited for the other processes
        self.stop_asked = False  # Ctrl-C: the run stops after this step (with all its processes)
        self._stopping = False
        self.progress = Progress()
        self.unreadable = 0  # samples passed over here: a frame or mask that could not be read
        self.unreadable_in_run = 0  # by all the run's processes, as of the last save
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
        # fused: one kernel for all the tensors rather than several for each, the same update in less time
        return torch.optim.AdamW(trained, lr=self.plan.learning_rate, weight_decay=0.1,
                                 fused=self.device.type in ("cpu", "cuda") or None)

    def _share_after_focus(self) -> float:
        """How far the run is past its focus steps, 0 to 1: the main stage's own schedule."""
        done, focus = self.progress.share_done(self.plan), self.progress.focus_share
        return max(0.0, (done - focus) / max(1e-9, 1 - focus))

    @property
    def rank(self) -> int:
        return self.replicas.rank if self.replicas else 0

    def done(self) -> bool:
        return self.progress.share_done(self.plan) >= 1.0

    @property
    def stopping(self) -> bool:
        """Asked to stop: here, or (data-parallel) in any of the run's processes at the last step."""
        return self._stopping if self.replicas else self.stop_asked

    def step(self) -> dict[str, float]:
        started = time.perf_counter()
        focusing = self.progress.step < self.plan.focus_steps
        if self.progress.step == self.plan.focus_steps and self.plan.focus_steps:
            self.optimizer = self._new_optimizer()  # the focus's moments fit two clips, not the data
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.plan, self.progress.step / self.plan.focus_steps,
                                        self.plan.focus_learning_rate) if focusing else \
                learning_rate(self.plan, self._share_after_focus())
        scored, stage = self._score(self._focus if focusing else self.datasets[self.rng.integers(len(self.datasets))])
        self.optimizer.zero_grad(set_to_none=True)
        counted = scored is not None and bool(torch.isfinite(scored.total))
        if scored is not None and not counted:
            log.warning("step %d: the loss is not finite; skipped", self.progress.step)
        if counted:
            scored.total.backward()
        seconds = time.perf_counter() - started
        if self.replicas is not None:
            seconds += self._waited  # the run's time: a budget of minutes is minutes of the clock
            waiting = time.perf_counter()
            trained = [p for p in self.model.parameters() if p.requires_grad]
            shared = self.replicas.share(trained, counted, seconds, self.stop_asked)
            counted, seconds, self._stopping = shared.counted > 0, shared.seconds, shared.stop
            self._waited = time.perf_counter() - waiting
        if counted:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRADIENT_CLIP)
            self.optimizer.step()
        self.progress.step += 1
        if self.progress.step == self.plan.focus_steps:
            self.progress.focus_share = self.progress.share_done(self.plan)
        self.progress.seconds += seconds
        return scored.items() | {"stage": stage} if scored is not None else {}

    def _score(self, dataset: Dataset) -> tuple[losses.Losses | None, str]:
        """One sample's losses: a clip through memory or a single frame; None for a sample that cannot be
        read (said once, counted, passed over)."""
        video = self.video and self.progress.share_done(self.plan) >= self.plan.video_after \
            and self.stages.random() < self.plan.video_share
        try:
            clip = dataset.clip_sample(self.rng, self.plan.clip_frames, self.plan.clip_stride,
                                       self.plan.clip_objects) \
                if video and dataset.has_clips(self.plan.clip_frames) else None
            image = None if clip is not None else dataset.image_sample(self.rng, self.plan.max_objects)
        except DatasetError as error:
            if not self.unreadable:
                log.warning("%s Samples that cannot be read are passed over (counted at the end).", error)
            self.unreadable += 1
            return None, ""
        if clip is not None:
            return steps.clip_step(self.streaming, clip, self.rng, self.plan.box_share, self.plan.prompt_again), "video"
        return steps.image_step(self.streaming, image, self.rng, self.plan.box_share), "image"

    # -- checkpoints

    def save(self) -> None:
        """The model where MODEL=out loads it, then the state to go on from; each file replaced whole. In a
        data-parallel run every process calls it (its random generators are kept too), the first writes."""
        mine = {"rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "unreadable": self.unreadable, "sum": self._parameter_sum()}
        everyone = self.replicas.gather(mine) if self.replicas else [mine]
        self.unreadable_in_run = sum(e["unreadable"] for e in everyone)
        if self.rank:
            return
        if len({e["sum"] for e in everyone}) > 1:  # the same steps from the same start: a bug, not bad luck
            raise RuntimeError(f"the run's processes hold different models ({[e['sum'] for e in everyone]})")
        out = self.plan.out
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        state = {"optimizer": self.optimizer.state_dict(), "progress": asdict(self.progress),
                 "rng": mine["rng"], "torch_rng": mine["torch_rng"], "stages": self.stages.bit_generator.state,
                 "replicas": [{"rng": e["rng"], "torch_rng": e["torch_rng"]} for e in everyone[1:]],
                 "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.plan).items()}}
        partial = out / (STATE + ".partial")
        torch.save(state, partial)
        os.replace(partial, out / STATE)

    def _parameter_sum(self) -> float:
        with torch.no_grad():
            return float(sum(p.double().sum() for p in self.model.parameters()))

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
        if "stages" in state:
            self.stages.bit_generator.state = state["stages"]
        saved = [{"rng": state["rng"], "torch_rng": state["torch_rng"]}] + state.get("replicas", [])
        if self.rank < len(saved):
            self.rng.bit_generator.state = saved[self.rank]["rng"]
            torch.set_rng_state(saved[self.rank]["torch_rng"])
        else:  # a process the saved run did not have: samples of its own, from here
            self.rng = np.random.default_rng([self.plan.seed, self.rank, self.progress.step])


def write_card(out: Path, command: str, summary: dict) -> None:
    """A model card beside the weights: what it is, how it was made, the command that remakes it."""
    lines = ["---", "library_name: transformers", "tags: [sam2, dora-sam2, synthetic]", "---", "",
             f"# {out.name}", "", "A SAM 2-family checkpoint trained by `dora-sam2-train`.", "",
             "## How it was made", "", "```bash", command, "```", "", "## Run", "", "```json",
             json.dumps(summary, indent=2), "```", ""]
    (out / "README.md").write_text("\n".join(lines))
