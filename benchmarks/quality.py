"""Tracking quality on held-out clips of the synthetic world, with the cost of each figure, beside the peers.

    pip install 'dora-sam2[quality]'      # TrackEval, vos-benchmark, roboflow's trackers, matplotlib
    .venv/bin/python benchmarks/quality.py --model models/world-sam2
    .venv/bin/python benchmarks/quality.py --model DIR --sweep IMAGE_SIZE=256,512 --sweep MEMORY=2,6 \\
        --sweep LOST_SECONDS=1,3 --sweep DETECT_EVERY=1,30
    .venv/bin/python benchmarks/quality.py --model DIR --scenarios occlusion --clips 24 --frames 90 --modes track
        # the same id after occlusions up to 1 s: each clip hides one object for 0.3 to 1 s

Clips: `--clips` clips of `--frames` frames at `--size`, drawn by the synthetic world from seed
(`--seed`, clip index), a seed no training run here uses (scripts/make-fixture.sh trains on seed 0 and
watches seed 1000): held out. They cycle through `--scenarios` (a random scene, then scenes built
around an occlusion, a crossing of look-alikes and an exit and return, each with OTHERS objects
wandering about and its object hidden or out of the frame for EVENT_SECONDS, drawn per clip). The
detector is the ground truth: every `DETECT_EVERY` frames, the box of each object with at least
`--min-area` pixels in view (fewer count as out of view in every figure), labelled by its shape. Each
round reaches the methods `DETECT_LATE` frames after the frame it was computed on (default 0: on time),
stamped with that frame, as a detector slower than the camera, or a loaded machine, delivers it.

Segment mode (the engine the node runs in MODE=segment, every `--segment-every`th frame): the mIoU of
the mask from each object's box, and from one click on its centre-most visible pixel, against its
visible pixels.

Track mode, each method on the same clips and weights:
- ours: the node's TrackScheduler and Tracker, built by node.scheduler from the settings (MODE=track,
  EVERY_FRAME=1), fed the detection rounds and every frame with its camera time;
- transformers: its own `Sam2VideoModel` streaming session, each object prompted with its box at the
  first round that holds it, then tracked from memory (SAM 2's own video usage, no lifecycle);
- bytetrack: roboflow `trackers`' ByteTrack on the detector's boxes of every frame (it cannot follow
  anything between detections), each tracked box segmented on its frame by the same engine.
Figures (quality_metrics.py): J&F (DAVIS, per object from its first detection round; a method's mask
for an object is that of the ids that were started on it), HOTA, IDF1, ID switches and MOTA
(TrackEval, mask IoU), frames to recover and ids kept after an object is hidden or out of the frame,
false and never-confirmed tracks; and the cost, ms per frame on this machine.

`--set KEY=VALUE` changes the base settings, `--sweep KEY=V1,V2` runs ours again at each value (one key
at a time, the rest at the base): any node setting (IMAGE_SIZE, DTYPE, LOST_SECONDS, DETECTOR_MISSES,
REVIVE_SECONDS, MATCH_IOU, ...), MEMORY (tracked frames each object remembers, SAM 2's window at most)
DETECT_EVERY and DETECT_LATE. Writes `--out` (JSON, default benchmarks/results/quality.json), a table beside it
(.md) and the chart of quality against cost (.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality_metrics as qm  # noqa: E402

log = logging.getLogger("quality")

FOOTAGE = ROOT.parent / "shared" / "data" / "cups.mp4"
RESULTS = ROOT / "benchmarks" / "results"
SCENARIO_CYCLE = ("random", "occlusion", "crossing", "exit-and-return")
OTHERS = 2  # objects wandering about a clip built around one event
STAGED = ("occlusion", "crossing", "exit")  # the world's events that hide an object on purpose
# How long the object of an occlusion or an exit-and-return clip is out of view, drawn per clip: up to the 1 s
# the "same id after an occlusion" counts (longer ones come by chance in random scenes, up to 2 s).
EVENT_SECONDS = (0.3, 1.0)
CAMERA = "image"
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
PEERS = ("transformers", "bytetrack")
BENCH_KEYS = {"MEMORY": 1, "DETECT_EVERY": 1, "DETECT_LATE": 0}  # this benchmark's settings, and their least
MODEL_KEYS = ("IMAGE_SIZE", "DTYPE", "DEVICE", "THREADS")  # settings that load the model anew
MAX_SWEEP_VALUES = 16  # values of one --sweep: each is a run over every clip


class Unusable(Exception):
    """What was asked cannot be measured (a scenario too long for the clips, a model that cannot load, a
    memory longer than the model's). Its text is the one sentence the user reads."""


# ---------------------------------------------------------------------------- clips and truth


@dataclass(frozen=True)
class TruthFrame:
    """A frame with what is true of it, kept small: masks are read from the id buffer when needed."""

    rgb: np.ndarray  # (H, W, 3) uint8
    ids: np.ndarray  # (H, W) int16: the track id each pixel shows
    track_ids: tuple[int, ...]  # every object of the clip
    labels: tuple[str, ...]
    outside: tuple[bool, ...]  # per object: wholly out of the frame

    def mask(self, track_id: int) -> np.ndarray:
        return self.ids == track_id


@dataclass(frozen=True)
class Detection:
    track_id: int  # the true object it is the box of
    box: np.ndarray  # xyxy, pixel edges, as a detector's
    label: str


@dataclass
class Clip:
    name: str
    fps: float
    frames: list[TruthFrame]
    events: dict[str, int]
    min_area: int
    staged: dict[int, list[range]] = field(default_factory=dict)  # per object, the frames its scene hides it

    @property
    def width(self) -> int:
        return self.frames[0].rgb.shape[1]

    @property
    def height(self) -> int:
        return self.frames[0].rgb.shape[0]

    def timestamp(self, t: int) -> datetime:
        return EPOCH + timedelta(seconds=t / self.fps)

    def present(self, t: int) -> list[int]:
        """The objects seen on frame t: at least `min_area` pixels in view."""
        frame = self.frames[t]
        counts = np.bincount(frame.ids.clip(0).ravel(), minlength=max(frame.track_ids, default=0) + 1)
        return [i for i in frame.track_ids if counts[i] >= self.min_area]

    def detections(self, t: int) -> list[Detection]:
        """The ground-truth detector on frame t: every object seen, its visible pixels' box."""
        from dora_sam2.geometry import mask_boxes

        frame = self.frames[t]
        ids = self.present(t)
        if not ids:
            return []
        boxes = mask_boxes(np.stack([frame.mask(i) for i in ids]))
        labels = dict(zip(frame.track_ids, frame.labels))
        return [Detection(i, box, labels[i]) for i, box in zip(ids, boxes)]

    def round_landing(self, t: int, every: int, late: int) -> tuple[int, list[Detection]]:
        """The detection round that reaches a method on frame t, and the frame it was computed on: a round
        every `every` frames (DETECT_EVERY), landing `late` frames after its own (DETECT_LATE: a detector
        slower than the camera, or a loaded machine); no boxes where none lands."""
        computed = t - late
        return computed, self.detections(computed) if computed >= 0 and computed % every == 0 else []


def make_clips(args) -> list[Clip]:
    from dora_sam2.world import Footage, Format, SCENARIOS

    width, height = args.size
    fmt = Format(width, height, fps=args.fps, frames=args.frames)
    footage = Footage(FOOTAGE) if FOOTAGE.is_file() else None
    clips = []
    for index in range(args.clips):
        scenario = args.scenarios[index % len(args.scenarios)]
        extra = event_arguments(scenario, (args.seed, index))
        try:
            scene = SCENARIOS[scenario]((args.seed, index), fmt, name=f"{scenario}-{args.seed}-{index:04d}", **extra)
        except ValueError as error:  # the builders say what the clips are too short for
            raise Unusable(f"--scenarios {scenario}: {error}; give more --frames or leave it out") from None
        clips.append(clip_of(scene, fmt, footage, args.min_area))
        log.info("clip %s: %d objects, events %s", scene.name, len(scene.objects), clips[-1].events or "none")
    return clips


def clip_of(scene, fmt, footage, min_area: int) -> Clip:
    """A world scene rendered, with what is true of each frame."""
    from dora_sam2.world import frames

    kept = [TruthFrame(f.rgb, f.ids, tuple(o.track_id for o in f.objects), tuple(o.label for o in f.objects),
                       tuple(o.silhouette is None for o in f.objects)) for f in frames(scene, footage)]
    events: dict[str, int] = {}
    staged: dict[int, list[range]] = {}
    for event in scene.events:
        events[event.kind] = events.get(event.kind, 0) + 1
        if event.kind in STAGED:
            for track_id in event.track_ids:
                staged.setdefault(track_id, []).append(range(event.start, event.start + event.frames))
    return Clip(scene.name, fmt.fps, kept, events, min_area, staged)


def event_arguments(scenario: str, seed: tuple[int, int]) -> dict:
    """What a scenario builder is given besides the seed: wanderers, and how long its event lasts."""
    if scenario == "random":
        return {}
    seconds = round(float(np.random.default_rng((*seed, 1)).uniform(*EVENT_SECONDS)), 2)
    during = {"occlusion": "hidden_seconds", "exit-and-return": "outside_seconds"}.get(scenario)
    return {"others": OTHERS, **({during: seconds} if during else {})}


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One configuration of ours: node settings (as env) and this benchmark's own."""

    label: str
    env: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.env).get(key, default)

    def node_env(self, model: str) -> dict[str, str]:
        env = {k: v for k, v in self.env if k not in BENCH_KEYS}
        return {**env, "MODEL": model, "MODE": "track", "EVERY_FRAME": "1", "STATS_EVERY": "0"}

    def model_key(self) -> tuple:
        return tuple((k, self.get(k)) for k in MODEL_KEYS)


def settings_to_run(base: dict[str, str], sweeps: dict[str, list[str]]) -> list[Setting]:
    """The base, then each swept value of each key with the rest at the base."""
    runs = [Setting("base", tuple(sorted(base.items())))]
    for key, values in sweeps.items():
        for value in values:
            if base.get(key) != value:
                runs.append(Setting(f"{key}={value}", tuple(sorted({**base, key: value}.items()))))
    return runs


def key_values(text: str, option: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        parser.error(f"{option} {text!r}: give KEY=VALUE, e.g. {option} IMAGE_SIZE=512")
    return key.strip().upper(), value.strip()


def check_setting(setting: Setting, model: str, parser: argparse.ArgumentParser) -> None:
    """Every setting is read as the node reads it, before any clip is drawn: a bad one is one sentence."""
    from dora_sam2.settings import ConfigError, Settings

    try:
        Settings.from_env(setting.node_env(model))
    except ConfigError as error:
        parser.error(f"{setting.label}: {error}")
    for key, least in BENCH_KEYS.items():
        value = setting.get(key)
        if value is not None and (not value.isdigit() or int(value) < least):
            parser.error(f"{setting.label}: {key}={value!r} is not a whole number of at least {least}.")


# ---------------------------------------------------------------------------- models


class Models:
    """Backends by (settings that load a model, image or video): loaded once, warmed up as the node does."""

    def __init__(self, model: str):
        self.model = model
        self._loaded: dict[tuple, object] = {}

    def backend(self, setting: Setting, video: bool):
        key = (setting.model_key(), video)
        if key not in self._loaded:
            self._loaded[key] = self._load(setting, video)
        return self._loaded[key]

    def _load(self, setting: Setting, video: bool):
        from dora_sam2.devices import cpu_has_fast_bf16
        from dora_sam2.model import Sam2Backend
        from dora_sam2.settings import Settings

        s = Settings.from_env(setting.node_env(self.model))
        backend = Sam2Backend.load(s.model, video=video, device=s.device, dtype=s.dtype, image_size=s.image_size,
                                   threads=s.threads)
        if s.dtype == "auto" and backend.device.type == "cpu" and cpu_has_fast_bf16():
            backend.choose_dtype_by_measuring()  # what the node does at warm-up
        backend.warmup()
        return backend


def dtype_name(backend) -> str:
    return str(backend.dtype).removeprefix("torch.")


class Windowed:
    """Our streaming model with a shorter memory: each object remembers its last `recent` tracked frames
    (SAM 2.1 keeps 6) besides its prompted ones. Everything else is the model's."""

    def __init__(self, streaming, recent: int):
        self._streaming = streaming
        self.recent = recent

    def new_memory(self):
        from dora_sam2.streaming import ObjectMemory

        return ObjectMemory(recent=self.recent, pointers=self._streaming.max_pointers - 1)

    def __getattr__(self, name):
        return getattr(self._streaming, name)


# ---------------------------------------------------------------------------- what a method answers


@dataclass
class Answer:
    """A method's answer on one frame: the ids it lists (shown or not) and their masks."""

    ids: list[int]
    masks: np.ndarray  # (N, H, W) bool
    started: dict[int, int] = field(default_factory=dict)  # ids started on this frame -> the true object


class ClipScorer:
    """Scores a method's answers on one clip as they come: the identity metrics' frames, J&F per object,
    track lives; at the end, gaps and recoveries."""

    def __init__(self, clip: Clip, detect_every: int):
        self.clip = clip
        self.detect_every = detect_every
        self.frames: list[qm.FrameMatch] = []
        self.started_on: dict[int, int] = {}  # predicted id -> the true object it was started on
        self.jf: dict[int, qm.JAndF] = {}  # per true object, from its first detection round
        self.census = qm.TrackCensus()
        self.seconds = 0.0

    def add(self, t: int, answer: Answer, seconds: float) -> None:
        self.seconds += seconds
        clip, truth = self.clip, self.clip.frames[t]
        for i, obj in answer.started.items():
            self.started_on.setdefault(i, obj)
        present = clip.present(t)
        true_masks = np.stack([truth.mask(i) for i in present]) if present else np.zeros((0, *truth.ids.shape), bool)
        shown = answer.masks.any(axis=(1, 2)) if len(answer.ids) else np.zeros(0, bool)
        ids = np.asarray(answer.ids, int)
        frame = qm.FrameMatch(np.asarray(present, int), ids[shown], qm.iou_matrix(true_masks, answer.masks[shown]))
        self.frames.append(frame)
        rounds = self._detections(t)
        if rounds is not None:
            for d in rounds:
                self.jf.setdefault(d.track_id, qm.JAndF())
        nothing = np.zeros(truth.ids.shape, bool)
        for obj, score in self.jf.items():  # under min_area in view is out of view, here as everywhere
            mine = [m for i, m in zip(answer.ids, answer.masks) if self.started_on.get(i) == obj]
            score.add(np.any(mine, axis=0) if mine else nothing, truth.mask(obj) if obj in present else nothing)
        from dora_sam2.geometry import mask_boxes

        boxes = mask_boxes(answer.masks) if len(answer.ids) else np.zeros((0, 4))
        self.census.add(t, answer.ids, boxes, frame,
                        None if rounds is None else np.array([d.box for d in rounds]).reshape(-1, 4))

    def _detections(self, t: int) -> list[Detection] | None:
        return self.clip.detections(t) if t % self.detect_every == 0 else None

    def result(self) -> dict:
        clip = self.clip
        found = []
        for obj in clip.frames[0].track_ids:
            seen = [obj in clip.present(t) for t in range(len(clip.frames))]
            index = clip.frames[0].track_ids.index(obj)
            outside = [f.outside[index] for f in clip.frames]
            staged = [any(t in frames for frames in clip.staged.get(obj, ())) for t in range(len(clip.frames))]
            found += qm.gaps(obj, seen, outside, staged)
        return {"clip": clip.name, "frames": self.frames,
                "jf": [r for r in (s.result() for s in self.jf.values()) if r is not None],
                "recoveries": qm.recoveries(self.frames, found), "census": self.census.summary(),
                "seconds": self.seconds, "count": len(self.frames)}


def summarise(clips: list[dict], fps: float) -> dict:
    """A method's figures over all clips."""
    jf = np.array([pair for c in clips for pair in c["jf"]]).reshape(-1, 2)
    census = {key: sum(c["census"][key] for c in clips) for key in clips[0]["census"]}
    frames = sum(c["count"] for c in clips)
    return {
        "J&F": float(jf.mean()) if len(jf) else None, "J": float(jf[:, 0].mean()) if len(jf) else None,
        "F": float(jf[:, 1].mean()) if len(jf) else None, "objects": len(jf),
        **qm.identity_scores([c["frames"] for c in clips]),
        "recovery": qm.recovery_summary([r for c in clips for r in c["recoveries"]], fps),
        **census,
        "ms_per_frame": 1e3 * sum(c["seconds"] for c in clips) / max(frames, 1), "frames": frames,
        "per_clip": {c["clip"]: per_clip(c) for c in clips},
    }


def per_clip(clip: dict) -> dict:
    """One clip's J&F, HOTA and IDF1: which kind of clip costs a method what."""
    jf = np.array(clip["jf"]).reshape(-1, 2)
    identity = qm.identity_scores([clip["frames"]])
    return {"J&F": float(jf.mean()) if len(jf) else None, "HOTA": identity["HOTA"], "IDF1": identity["IDF1"],
            "IDSW": identity["IDSW"], "gaps": [gap_record(r) for r in clip["recoveries"]]}


def gap_record(found: qm.Recovery) -> dict:
    """One object out of view and back, as the JSON keeps it: where an id was lost can be looked up."""
    gap = found.gap
    return {"track_id": gap.track_id, "start": gap.start, "end": gap.end, "outside": gap.outside, "staged": gap.staged,
            "frames_to_recover": found.frames_to_recover, "id_before": found.id_before, "id_after": found.id_after}


# ---------------------------------------------------------------------------- segment mode


def segment_mode(clips: list[Clip], backend, every: int) -> dict:
    """mIoU of the mask from each seen object's box and from one click at its centre, through the engine."""
    from dora_sam2.domain import FOREGROUND, Frame, Prompt
    from dora_sam2.engine import Segmenter

    segmenter = Segmenter(backend, frame_buffer=2, cameras=(CAMERA,))
    box_iou, click_iou, frames = [], [], 0
    for clip in clips:
        for t in range(0, len(clip.frames), every):
            detections = clip.detections(t)
            if not detections:
                continue
            truth = np.stack([clip.frames[t].mask(d.track_id) for d in detections])
            frame = Frame(CAMERA, clip.frames[t].rgb, clip.timestamp(t), "rgb8")
            segmenter.add_frame(frame)
            labels = [d.label for d in detections]
            boxes = Prompt.from_boxes("bbox", np.array([d.box for d in detections]), labels, image_id=CAMERA,
                                      timestamp=frame.timestamp)
            # the pixel's centre: a click page sends continuous coordinates (the trainer's clicks are the same)
            clicks = Prompt("points", np.array([[qm.centre_click(m)] for m in truth], np.float32) + 0.5,
                            np.full((len(truth), 1), FOREGROUND, np.int64), tuple(labels), image_id=CAMERA,
                            timestamp=frame.timestamp)
            for prompt, ious in ((boxes, box_iou), (clicks, click_iou)):
                _, masks = segmenter.segment(prompt)
                ious.extend(np.diag(qm.iou_matrix(truth, masks.masks)).tolist())
            frames += 1
    stages = segmenter.stages
    decode_ms = stages.mean_ms("prompt_decode") + stages.mean_ms("postprocess")
    return {"box_mIoU": float(np.mean(box_iou)) if box_iou else None,
            "click_mIoU": float(np.mean(click_iou)) if click_iou else None, "objects": len(box_iou),
            "frames": frames, "encode_ms": stages.mean_ms("encode"), "decode_ms": decode_ms,
            "ms_per_frame": stages.mean_ms("encode") + decode_ms}


# ---------------------------------------------------------------------------- track mode: the methods


def ours(clip: Clip, models: Models, setting: Setting, detect_every: int) -> Iterator[tuple[int, Answer, float]]:
    """The node's track scheduler, built as node.py builds it, fed rounds and frames as dora would."""
    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.node import scheduler as node_scheduler
    from dora_sam2.settings import Settings
    from dora_sam2.stats import Stages, Stats

    settings = Settings.from_env(setting.node_env(models.model))
    backend = models.backend(setting, video=True)
    schedule = node_scheduler(settings, backend, [CAMERA], Stats(Stages(), 0))
    memory = setting.get("MEMORY")
    if memory is not None:  # one camera: the model its tracker will follow with
        schedule.model = Windowed(schedule.model, int(memory))
    late = int(setting.get("DETECT_LATE", "0"))
    for t, truth in enumerate(clip.frames):
        frame = Frame(CAMERA, truth.rgb, clip.timestamp(t), "rgb8")
        computed, detections = clip.round_landing(t, detect_every, late)
        items = []
        if detections:  # stamped with the frame it was computed on, as a detector node forwards it
            items.append(Prompt.from_boxes("bbox", np.array([d.box for d in detections]), [d.label for d in detections],
                                           image_id=CAMERA, timestamp=clip.timestamp(computed)))
        started = time.perf_counter()
        answers = list(schedule.handle([*items, frame]))
        seconds = time.perf_counter() - started
        if not answers:  # the model failed on the frame (said in the log): the node answers nothing
            yield t, Answer([], np.zeros((0, clip.height, clip.width), bool)), seconds
            continue
        (_, masks), = answers
        yield t, Answer(list(masks.track_ids), masks.masks, _started(schedule, detections)), seconds


def _started(schedule, detections: list[Detection]) -> dict[int, int]:
    """Tracks prompted by this frame's detections -> the true object of their detection (a track's
    `prompt_box` is its newest detection's box). The scorer keeps the first for each id: the detection
    that started it."""
    if not detections:
        return {}
    boxes = np.array([d.box for d in detections])
    found = {}
    for track in schedule.trackers[CAMERA].tracks:
        hit = np.flatnonzero(np.all(np.isclose(boxes, track.prompt_box), axis=1))
        if len(hit):
            found[track.track_id] = detections[hit[0]].track_id
    return found


def transformers_session(clip: Clip, models: Models, setting: Setting,
                         detect_every: int) -> Iterator[tuple[int, Answer, float]]:
    """transformers' own streaming session: each object prompted with its box at the first detection round
    that holds it, then followed from memory, as its docs stream a video (no lifecycle)."""
    import torch

    from dora_sam2 import processing
    from dora_sam2.domain import Prompt

    backend = models.backend(setting, video=True)
    model = backend.model
    module = sys.modules[type(model).__module__]
    session = getattr(module, type(model).__name__.replace("Model", "InferenceSession"))(
        video_height=clip.height, video_width=clip.width, dtype=torch.float32)
    objects: dict[int, int] = {}  # true object -> session object id
    late = int(setting.get("DETECT_LATE", "0"))
    for t, truth in enumerate(clip.frames):
        started = time.perf_counter()
        new = [d for d in clip.round_landing(t, detect_every, late)[1] if d.track_id not in objects]
        with torch.inference_mode(), backend.autocast():
            pixels = backend.preprocess(truth.rgb)[0]
            if new:
                session.add_new_frame(pixels, t)
            for d in new:
                objects[d.track_id] = len(objects) + 1
                xy = backend.model_points(Prompt.from_boxes("bbox", d.box[None]), clip.width, clip.height)[0]
                session.add_point_inputs(session.obj_id_to_idx(objects[d.track_id]), t, {
                    "point_coords": torch.from_numpy(xy)[None, None], "point_labels": torch.tensor([[[2, 3]]])})
                session.obj_with_new_inputs.append(objects[d.track_id])
            if new:
                out = model(inference_session=session, frame_idx=t)
            elif objects:
                out = model(inference_session=session, frame_idx=t, frame=pixels)
        if objects:
            masks = processing.upsample(out.pred_masks[:, 0], clip.width, clip.height).cpu().numpy()
            ids = [int(i) for i in out.object_ids]
        else:
            masks, ids = np.zeros((0, clip.height, clip.width), bool), []
        seconds = time.perf_counter() - started
        yield t, Answer(ids, masks, {objects[d.track_id]: d.track_id for d in new}), seconds


def bytetrack(clip: Clip, models: Models, setting: Setting, detect_every: int) -> Iterator[tuple[int, Answer, float]]:
    """ByteTrack (roboflow trackers) on the detector's boxes of every frame; each tracked box segmented on
    its frame by the engine the node runs in segment mode."""
    import supervision as sv
    from trackers import ByteTrackTracker

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.engine import Segmenter

    segmenter = Segmenter(models.backend(setting, video=False), frame_buffer=2, cameras=(CAMERA,))
    tracker = ByteTrackTracker(frame_rate=clip.fps)
    known: set[int] = set()
    late = int(setting.get("DETECT_LATE", "0"))
    for t, truth in enumerate(clip.frames):
        started = time.perf_counter()
        _, detections = clip.round_landing(t, 1, late)
        boxes = np.array([d.box for d in detections], np.float32).reshape(-1, 4)
        found = tracker.update(sv.Detections(xyxy=boxes, confidence=np.ones(len(boxes), np.float32),
                                             class_id=np.zeros(len(boxes), int),
                                             data={"truth": np.array([d.track_id for d in detections], int)}))
        keep = found.tracker_id >= 0
        ids = [int(i) for i in found.tracker_id[keep]]
        frame = Frame(CAMERA, truth.rgb, clip.timestamp(t), "rgb8")
        segmenter.add_frame(frame)
        _, masks = segmenter.segment(Prompt.from_boxes("bbox", found.xyxy[keep], image_id=CAMERA,
                                                       timestamp=frame.timestamp))
        seconds = time.perf_counter() - started
        # with no box on the frame, the tracker answers an empty Detections that carries none of their data
        truth = found.data.get("truth", np.zeros(0, int))[keep]
        new = {i: int(obj) for i, obj in zip(ids, truth) if i not in known}
        known.update(new)
        yield t, Answer(ids, masks.masks, new), seconds


METHODS = {"ours": ours, "transformers": transformers_session, "bytetrack": bytetrack}


def track_mode(method: str, clips: list[Clip], models: Models, setting: Setting) -> dict:
    detect_every = int(setting.get("DETECT_EVERY", "1"))
    scored = []
    for clip in clips:
        scorer = ClipScorer(clip, detect_every)
        for t, answer, seconds in METHODS[method](clip, models, setting, detect_every):
            scorer.add(t, answer, seconds)
        scored.append(scorer.result())
    return summarise(scored, clips[0].fps)


# ---------------------------------------------------------------------------- the run, the table, the chart


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("dora_sam2").setLevel(logging.WARNING)  # the tracker's per-track lines
    parser = argparser()
    args = parser.parse_args()
    args.size = parse_size(args.size, parser)
    check_bounds(args, parser)
    base = dict(key_values(text, "--set", parser) for text in args.set)
    base.setdefault("DETECT_EVERY", str(args.detect_every))
    sweeps: dict[str, list[str]] = {}
    for text in args.sweep:
        key, values = key_values(text, "--sweep", parser)
        sweeps[key] = [v.strip() for v in values.split(",") if v.strip()]
        if len(sweeps[key]) > MAX_SWEEP_VALUES:
            parser.error(f"--sweep {key}: {len(sweeps[key])} values, over {MAX_SWEEP_VALUES}: each is a run over "
                         "every clip; sweep fewer")
    runs = settings_to_run(base, sweeps)
    for setting in runs:
        check_setting(setting, args.model, parser)
    need_packages(args.peers, parser)
    from dora_sam2.loading import ModelLoadError

    try:
        result = measure(args, runs)
    except (Unusable, ModelLoadError) as error:
        log.error("%s", error)
        sys.exit(1)
    write(result, Path(args.out))


def measure(args, runs: list[Setting]) -> dict:
    models = Models(args.model)
    for setting in runs:  # every model loads, and every MEMORY fits it, before an hour of measuring
        models_for(setting, models, args.modes)
    started = time.perf_counter()
    clips = make_clips(args)
    log.info("%d clips drawn in %.1f s", len(clips), time.perf_counter() - started)
    result = {"machine": machine(), "model": args.model, "seed": args.seed, "clips": [c.name for c in clips],
              "events": {c.name: c.events for c in clips}, "frames": args.frames,
              "size": f"{args.size[0]}x{args.size[1]}", "fps": args.fps, "min_area": args.min_area,
              "segment_every": args.segment_every, "runs": []}
    segmented: dict[tuple, dict] = {}
    for setting in runs:
        methods = ["ours"] + (list(args.peers) if setting.label == "base" else [])
        backend = models.backend(setting, video=True)
        run = {"setting": setting.label, "env": dict(setting.env), "dtype": dtype_name(backend),
               "input_size": backend.input_size, "track": {}}
        if "segment" in args.modes and setting.model_key() not in segmented:
            log.info("%s: segment mode ...", setting.label)
            segmented[setting.model_key()] = segment_mode(clips, models.backend(setting, video=False),
                                                          args.segment_every)
            run["segment"] = segmented[setting.model_key()]
        if "track" in args.modes:
            for method in methods:
                log.info("%s: %s ...", setting.label, method)
                run["track"][method] = track_mode(method, clips, models, setting)
        result["runs"].append(run)
        log.info("%s", "\n".join(table_rows(run)))
    return result


def models_for(setting: Setting, models: Models, modes) -> None:
    """The setting's models loaded (a model setting the checkpoint cannot take is one sentence), and its
    MEMORY held to the model's own window."""
    from dora_sam2.settings import ConfigError

    try:
        backend = models.backend(setting, video=True)
        if "segment" in modes:
            models.backend(setting, video=False)
    except ConfigError as error:
        raise Unusable(f"{setting.label}: {error}") from None
    memory, window = setting.get("MEMORY"), backend.model.config.num_maskmem - 1
    if memory is not None and int(memory) > window:
        raise Unusable(f"MEMORY={memory}: {Path(models.model).name} remembers {window} tracked frames at most; "
                       f"give 1 to {window}.")


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    chart(result, out.with_suffix(".png"))
    print(table)
    log.info("written: %s, %s, %s", out, out.with_suffix(".md"), out.with_suffix(".png"))


COLUMNS = ("J&F", "HOTA", "IDF1", "IDSW", "same id <= 1 s", "staged", "recover (frames)", "false", "unconfirmed",
           "ms/frame")


def table_rows(run: dict) -> list[str]:
    rows = []
    segment = run.get("segment")
    if segment:
        mious = (f"box {fmt(segment['box_mIoU'])}, click {fmt(segment['click_mIoU'])} mIoU "
                 f"({segment['objects']} objects)")
        rows.append([run["setting"], "segment", mious] + [""] * (len(COLUMNS) - 2) + [f"{segment['ms_per_frame']:.0f}"])
    for method, r in run["track"].items():
        short, staged = r["recovery"]["occlusions_up_to_1s"], r["recovery"]["staged_occlusions_up_to_1s"]
        rows.append([run["setting"], method, fmt(r["J&F"]), fmt(r["HOTA"]), fmt(r["IDF1"]), str(r["IDSW"]),
                     f"{fmt(short['same_id_share'])} ({short['same_id_judged']})",
                     f"{fmt(staged['same_id_share'])} ({staged['same_id_judged']})",
                     fmt(r["recovery"]["all"]["median_frames_to_recover"], 1), str(r["false_tracks"]),
                     str(r["never_confirmed"]), f"{r['ms_per_frame']:.0f}"])
    return ["| " + " | ".join(cells) + " |" for cells in rows]


def markdown(result: dict) -> str:
    base = result["runs"][0]
    lines = [f"Tracking quality: {Path(result['model']).name} at {base['input_size']}, {base['dtype']}; "
             f"{len(result['clips'])} held-out world clips (seed {result['seed']}) of {result['frames']} frames at "
             f"{result['size']}, {result['fps']:g} fps; {result['machine']}.", "",
             "| setting | method | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for run in result["runs"]:
        lines += table_rows(run)
    lines += ["", "J&F: DAVIS (vos-benchmark), per object from its first detection round. HOTA, IDF1, IDSW: "
              "TrackEval on mask IoU. same id <= 1 s: share of objects hidden in the frame for up to 1 s that came "
              "back under the id they had (how many were judged: those the method had an id on before; one never "
              "found again kept none; exits are in the JSON). staged: the same, of the objects hidden where their "
              "clip was built to hide them (behind an occluder, a crossing), not by chance. recover: median frames "
              "from an object's return until a mask matches it (IoU >= 0.5). false: ids never on an object; "
              "unconfirmed: ids no later detection round landed on. ms/frame: this machine, the model's work and the "
              "method's own (the detector is the ground truth, free).", ""]
    return "\n".join(lines)


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


MARKERS = {"ours": ("o", "tab:blue"), "transformers": ("s", "tab:orange"), "bytetrack": ("^", "tab:green"),
           "box": ("D", "tab:purple"), "click": ("v", "tab:red")}


def chart(result: dict, path: Path) -> None:
    """Track mode's HOTA and J&F against ms per frame (ours at each setting, the peers at the base), and
    segment mode's box and click mIoU against its ms per frame (at each model setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, figure in zip(axes, ("HOTA", "J&F")):
        for run in result["runs"]:
            for method, r in run["track"].items():
                point(ax, r["ms_per_frame"], r[figure], method, run["setting"] if method == "ours" else method,
                      first=run["setting"] == "base")
        ax.set_ylabel(f"track mode: {figure}")
    for run in result["runs"]:
        segment = run.get("segment")
        for prompt in ("box", "click") if segment else ():
            point(axes[2], segment["ms_per_frame"], segment[f"{prompt}_mIoU"], prompt, run["setting"],
                  first=run["setting"] == "base")
    axes[2].set_ylabel("segment mode: mIoU")
    for ax in axes:
        ax.set_xlabel("ms per frame (this machine)")
        ax.set_xlim(left=0)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Quality against cost: {Path(result['model']).name}, {len(result['clips'])} held-out world clips "
                 f"(seed {result['seed']}), {result['size']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def point(ax, cost: float, value: float | None, kind: str, name: str, first: bool) -> None:
    if value is None:
        return
    marker, colour = MARKERS[kind]
    ax.scatter(cost, value, marker=marker, color=colour, label=kind if first else None)
    ax.annotate(name, (cost, value), fontsize=7, xytext=(4, 3), textcoords="offset points")


def machine() -> str:
    from run import machine as describe

    return describe()


# ---------------------------------------------------------------------------- arguments


def argparser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint directory (or hub id) as MODEL loads it")
    parser.add_argument("--seed", type=int, default=2000,
                        help="the held-out world's seed (default 2000: the fixture trains on 0 and watches 1000)")
    parser.add_argument("--clips", type=int, default=6, help="clips (default 6)")
    parser.add_argument("--frames", type=int, default=60, help="frames a clip (default 60)")
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT (default 320x240)")
    parser.add_argument("--fps", type=float, default=30.0, help="the clips' frame rate: camera time (default 30)")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIO_CYCLE), metavar="SCENARIO",
                        help=f"what the clips are built around, in turn (default: {' '.join(SCENARIO_CYCLE)})")
    parser.add_argument("--detect-every", type=int, default=10,
                        help="frames between the detector's rounds (DETECT_EVERY; default 10, 3 a second at 30 fps)")
    parser.add_argument("--segment-every", type=int, default=5, help="segment mode: every Nth frame (default 5)")
    parser.add_argument("--min-area", type=int, default=16,
                        help="pixels in view for an object to be detected and scored (default 16)")
    parser.add_argument("--modes", nargs="+", choices=("segment", "track"), default=["segment", "track"])
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS), help="peers run at the base setting")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a base setting")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="ours again at each value of a setting")
    parser.add_argument("--out", default=str(RESULTS / "quality.json"), help="the JSON (and .md, .png beside it)")
    return parser


def parse_size(text: str, parser: argparse.ArgumentParser) -> tuple[int, int]:
    try:
        width, height = (int(side) for side in text.lower().split("x"))
    except ValueError:
        parser.error(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 320x240")
    return width, height


def check_bounds(args, parser: argparse.ArgumentParser) -> None:
    from dora_sam2.settings import Limits
    from dora_sam2.world.cli import MAX_CLIPS, MAX_FPS, MAX_FRAMES, MIN_SIDE
    from dora_sam2.world.scenarios import SCENARIOS

    width, height = args.size
    if not 1 <= args.clips <= MAX_CLIPS:
        parser.error(f"--clips {args.clips}: give 1 to {MAX_CLIPS}")
    if not 1 <= args.frames <= MAX_FRAMES:
        parser.error(f"--frames {args.frames}: give 1 to {MAX_FRAMES}")
    if min(width, height) < MIN_SIDE or width * height > Limits().max_pixels:
        parser.error(f"--size {width}x{height}: give sides of at least {MIN_SIDE} pixels and at most "
                     f"{Limits().max_pixels} pixels in all (MAX_PIXELS)")
    if not 0 < args.fps <= MAX_FPS:
        parser.error(f"--fps {args.fps:g}: give more than 0 and at most {MAX_FPS:g}")
    for name, value in (("--detect-every", args.detect_every), ("--segment-every", args.segment_every),
                        ("--min-area", args.min_area)):
        if value < 1:
            parser.error(f"{name} {value}: give at least 1")
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"--scenarios: {', '.join(unknown)} is not one of {', '.join(sorted(SCENARIOS))}")


def need_packages(peers, parser: argparse.ArgumentParser) -> None:
    """The metrics' packages (and ByteTrack's, when it runs), said in one sentence when missing."""
    import importlib.util

    needed = ["trackeval", "vos_benchmark", "matplotlib", "pycocotools"] + (["trackers"] if "bytetrack" in peers else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        parser.error(f"{', '.join(missing)} missing: pip install 'dora-sam2[quality]' (or leave out --peers bytetrack)")


if __name__ == "__main__":
    main()
