"""When each frame and prompt is answered: the policy between dora's event batches and the engine or the
tracker. No dora here: the adapter hands each batch over as domain objects and sends what comes back.

Live (the default), latest wins: a batch is everything that queued while the model was busy, and only
the newest of it is worth an answer (segment mode: each prompt source's newest prompt, and with phrases
each camera's newest frame; track mode: each camera's newest frame). The rest is counted as skipped.

Phrases (SAM 3) are kept until replaced: segment mode answers frames with every instance of them, track
mode makes them its detector, run every `detect_seconds` of camera time.

`every_frame`: nothing is skipped. Track mode answers every frame in order, segment mode every prompt:
what a recorded video wants, and what lets a test know exactly which frames are answered. In track mode
with a detector wired, a camera's first frames wait for its detector's first message (FirstBoxesWait).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .domain import Frame, InputError, Masks, Phrases, Prompt
from .engine import Segmenter
from .phrases import PhraseSearch
from .routing import camera_of
from .settings import FixedLimits, Limits, Settings
from .stats import Stats
from .throttle import Throttle
from .timeline import AwaitingFrames
from .streaming import StreamingModel
from .tracking import Tracker, TrackPolicy

log = logging.getLogger("dora_sam2")

RESET = "reset"  # what a message on the `reset` input means, whatever it holds
BOX_INPUTS = ("bbox", "boxes2d")

Answer = tuple[Frame, Masks]


@dataclass(frozen=True)
class Remove:
    """A `remove` message: end these tracks."""

    track_ids: tuple[int, ...]


@dataclass(frozen=True)
class DetectionFilter:
    """Detections worth answering: a detector's box under `min_confidence`, or of a label not in
    `classes` (when given), is dropped before it reaches the engine or the tracker, and counted. Of the
    rest, the `max_boxes` most confident are kept (MAX_BOXES), and the others counted, in one line."""

    min_confidence: float = 0.0
    classes: frozenset[str] = frozenset()
    max_boxes: int = Limits.max_boxes
    _say: Throttle = field(default_factory=lambda: Throttle(log), compare=False, repr=False)

    def __call__(self, prompt: Prompt, stats: Stats) -> Prompt:
        if prompt.input_id not in BOX_INPUTS:
            return prompt
        if self.min_confidence > 0 or self.classes:
            keep = np.ones(prompt.num_objects, bool)
            if prompt.confidences is not None:
                keep &= prompt.confidences >= self.min_confidence
            if self.classes:
                keep &= np.array([name in self.classes for name in prompt.class_names], bool)
            stats.filtered += int((~keep).sum())
            prompt = prompt if keep.all() else prompt.keep(keep)
        if prompt.num_objects > self.max_boxes:
            self._say.warning("max_boxes", "input '%s': %d boxes in one message, over MAX_BOXES=%d: the %d most "
                              "confident are answered", prompt.input_id, prompt.num_objects, self.max_boxes,
                              self.max_boxes)
            stats.filtered += prompt.num_objects - self.max_boxes
            prompt = prompt.most_confident(self.max_boxes)
        return prompt


def use_phrases(search: PhraseSearch, phrases: Phrases, say: Throttle) -> None:
    try:
        search.use(phrases)
    except InputError as error:
        say.warning("text", "%s", error)


class SegmentScheduler:
    """MODE=segment: each prompt answered on the frame it was computed on; with phrases, frames answered
    with every instance of them."""

    def __init__(self, segmenter: Segmenter, stats: Stats, every_frame: bool = False,
                 detections: DetectionFilter | None = None, search: PhraseSearch | None = None):
        self.segmenter = segmenter
        self.stats = stats
        self.every_frame = every_frame
        self.detection_filter = detections or DetectionFilter()  # each its own: its line throttle is state
        self.search = search if search is not None else PhraseSearch(None, "this model")
        self._say = Throttle(log, burst=20)  # per prompt input, as the adapter's bad-input lines
        self._held: dict[tuple[str, str | None], list[Prompt]] = {}  # prompts waiting for their frame

    @property
    def answers_frames(self) -> bool:
        """What it answers, and so what skipping means: frames while it has phrases, else prompts."""
        return bool(self.search)

    def handle(self, items: Iterable) -> Iterator[Answer]:
        """One batch: keep every frame, then answer the prompts (per source, the newest, or all of them),
        then, with phrases, the frames (per camera, the newest, or all of them)."""
        waited = {id(p) for prompts in self._held.values() for p in prompts}
        pending, self._held = self._held, {}
        frames: list[Frame] = []
        for item in items:
            if isinstance(item, Frame):
                self.segmenter.add_frame(item)
                frames.append(item)
            elif isinstance(item, Prompt):
                pending.setdefault((item.input_id, item.image_id), []).append(self.detection_filter(item, self.stats))
            elif isinstance(item, Phrases):
                use_phrases(self.search, item, self._say)
            # RESET, Remove: segment mode keeps no objects between prompts, so there is nothing to drop
        yield from self._answer_prompts(pending, waited)
        if self.search:
            yield from filter(None, map(self._find, self._frames_to_answer(frames)))

    def _frames_to_answer(self, frames: list[Frame]) -> list[Frame]:
        if self.every_frame:
            return frames
        newest = {frame.image_id: frame for frame in frames}
        self.stats.skipped += len(frames) - len(newest)
        return list(newest.values())

    def _find(self, frame: Frame) -> Answer | None:
        try:
            return frame, self.search.find(frame)
        except Exception as error:  # the model failed on this frame (out of memory, ...): the next one may not
            self._say.error("text failed", "input 'text': finding the phrases failed on %s's frame (%s: %s); "
                            "skipping it", frame.image_id, type(error).__name__, error)
        return None

    def _answer_prompts(self, pending: dict, waited: set[int]) -> Iterator[Answer]:
        for key, prompts in pending.items():
            chosen, held = self._in_order(prompts, waited) if self.every_frame else self._newest(prompts, waited)
            if len(held) > FixedLimits.DETECTIONS_WAITING:  # their camera sends nothing: keep the newest
                self.stats.skipped += len(held) - FixedLimits.DETECTIONS_WAITING
                held = held[-FixedLimits.DETECTIONS_WAITING:]
            if held:
                self._held[key] = held
            yield from filter(None, map(self._answer, chosen))

    def wake_in(self) -> None:
        """Nothing here waits on the clock: prompts wait for frames, which come as events."""
        return None

    def finish(self) -> Iterator[Answer]:
        """The stream has ended before the frames of the prompts still held: answer, do not drop."""
        held, self._held = self._held, {}
        yield from filter(None, (self._answer(p) for prompts in held.values() for p in prompts))

    def _newest(self, prompts: list[Prompt], waited: set[int]) -> tuple[list[Prompt], list[Prompt]]:
        """Newest wins; but dora may deliver boxes before the frame they came from. A newest prompt whose
        frame is not here yet waits one batch for it while the newest older one is answered, and one
        whose camera has sent no frame at all waits for that first frame."""
        newest = prompts[-1]
        if self.segmenter.awaits_first_frame(newest):
            chosen, held = [], [newest]
        elif id(newest) in waited or not self.segmenter.awaits_frame(newest):
            chosen, held = [newest], []
        else:
            chosen, held = prompts[-2:-1], [newest]
        self.stats.skipped += len(prompts) - len(chosen) - len(held)
        return chosen, held

    def _in_order(self, prompts: list[Prompt], waited: set[int]) -> tuple[list[Prompt], list[Prompt]]:
        """Every prompt, in order; from the first whose frame is still on the way, they wait together."""
        for i, prompt in enumerate(prompts):
            if self.segmenter.awaits_first_frame(prompt) or (
                    id(prompt) not in waited and self.segmenter.awaits_frame(prompt)):
                return prompts[:i], prompts[i:]
        return prompts, []

    def _answer(self, prompt: Prompt) -> Answer | None:
        try:
            return self.segmenter.segment(prompt)
        except InputError as error:
            self._say.warning(prompt.input_id, "%s", error)
        except Exception as error:  # the model failed on this frame (out of memory, ...): the next one may not
            self._say.error(f"{prompt.input_id} failed", "input '%s': segmentation failed on this frame (%s: %s); "
                            "skipping it", prompt.input_id, type(error).__name__, error)
        return None


@dataclass(frozen=True)
class SchedulePolicy:
    """What track mode answers and when it looks for phrases, with the rules each camera's tracks follow."""

    tracks: TrackPolicy = TrackPolicy()
    every_frame: bool = False  # every frame answered, in order, none skipped (EVERY_FRAME)
    detect_seconds: float = 1.0  # camera seconds between phrase detection rounds; 0 = every frame
    # every_frame with a detector wired: the node's seconds a camera's first frames wait for its first boxes
    first_boxes_seconds: float = 10.0
    frames_held: int = 30  # ... at most this many per camera (FRAME_BUFFER)

    @classmethod
    def from_settings(cls, settings: Settings) -> "SchedulePolicy":
        return cls(TrackPolicy.from_settings(settings), settings.every_frame, settings.detect_seconds,
                   settings.first_boxes_seconds, settings.frame_buffer)


class FirstBoxesWait:
    """EVERY_FRAME in track mode with a detector wired: a camera's frames that come before its detector's
    first message wait for it, in order, so that the first detections land on the frames they were
    computed on. dora starts the nodes together, and a detector's first answer can come after the tracker
    has answered several frames: a labelling run would write those without their objects.

    At most `per_camera` frames wait (FRAME_BUFFER; past it the oldest is answered without boxes), for at
    most `seconds` of `clock` from the first of them (FIRST_BOXES_SECONDS): a detector that never speaks
    costs its camera one wait and one line, never a stall. Each camera waits once, at its start."""

    def __init__(self, inputs: Sequence[str], seconds: float, per_camera: int, max_cameras: int, clock,
                 say: Throttle):
        self.inputs = tuple(inputs)  # the detector inputs wired to the node (BOX_INPUTS)
        self.seconds = seconds if self.inputs else 0.0
        self.per_camera = per_camera
        self.max_cameras = max_cameras
        self._clock = clock
        self._say = say
        self._held: dict[str, list[Frame]] = {}  # per camera, in order
        self._since: dict[str, float] = {}  # per camera: when its first frame was held
        self._done: set[str] = set()  # cameras that wait no more: heard from, or their wait passed

    def frame(self, frame: Frame) -> list[Frame]:
        """The frames to answer now, in order: `frame` where its camera waits no more, else none, or the
        oldest held where more than `per_camera` wait; all of them where the wait has passed."""
        camera = frame.image_id
        if self.seconds <= 0 or camera in self._done:
            return [frame]
        held = self._held.setdefault(camera, [])
        self._since.setdefault(camera, self._clock())
        held.append(frame)
        if self._passed(camera):
            return self._release(camera, f"within FIRST_BOXES_SECONDS={self.seconds:g} s")
        if len(held) > self.per_camera:
            self._say.warning("first boxes full", "input '%s': more than FRAME_BUFFER=%d frames wait for the first "
                              "detection on %s: the oldest is answered without boxes", camera, self.per_camera,
                              self._named())
            return [held.pop(0)]
        return []

    def heard(self, camera: str) -> list[Frame]:
        """The detector spoke for `camera`: its held frames, in order, to answer now."""
        return self._wait_no_more(camera)

    def passed(self) -> list[Frame]:
        """The held frames of each camera whose wait has passed, in order, with one line per camera."""
        return [frame for camera in list(self._held) if self._passed(camera)
                for frame in self._release(camera, f"within FIRST_BOXES_SECONDS={self.seconds:g} s")]

    def end(self, when: str) -> list[Frame]:
        """Every held frame, in order per camera, with one line per camera saying `when` the wait ended
        (the stream ended, a reset came): no camera waits after it."""
        return [frame for camera in list(self._held) for frame in self._release(camera, when)]

    def wake_in(self) -> float | None:
        """Seconds until the next wait passes; None while no frame waits."""
        if not self._held:
            return None
        return max(min(self._since.values()) + self.seconds - self._clock(), 0.0)

    def _passed(self, camera: str) -> bool:
        return self._clock() >= self._since[camera] + self.seconds

    def _release(self, camera: str, when: str) -> list[Frame]:
        """The camera's held frames, said in one line; it waits no more."""
        held = self._wait_no_more(camera)
        if held:
            self._say.warning(f"first boxes {camera}", "input '%s': no detection came on %s %s: its %d frames "
                              "held for their boxes are answered without them", camera, self._named(), when, len(held))
        return held

    def _wait_no_more(self, camera: str) -> list[Frame]:
        if len(self._done) < self.max_cameras:  # past MAX_CAMERAS (a sender's image_id), not remembered
            self._done.add(camera)
        self._since.pop(camera, None)
        return self._held.pop(camera, [])

    def _named(self) -> str:
        return " or ".join(f"input '{name}'" for name in self.inputs)


class TrackScheduler:
    """MODE=track: every frame answered with all live tracks of its camera; prompts start and refresh
    them on the next frame of their camera, or their own where it has not been answered yet."""

    answers_frames = True

    def __init__(self, model: StreamingModel, stats: Stats, cameras: Sequence[str] = (),
                 policy: SchedulePolicy = SchedulePolicy(), detections: DetectionFilter | None = None,
                 limits: Limits = Limits(), search: PhraseSearch | None = None, clock=time.monotonic,
                 box_inputs: Sequence[str] = ()):
        self.model = model  # one streaming model, a Tracker of it per camera
        self.policy = policy
        self.search = search if search is not None else PhraseSearch(None, "this model")
        self._clock = clock  # for frames without a timestamp (dora 0.5): rounds by the node's time; waits
        self._rounds: dict[str, float] = {}  # per camera: when its phrases were last looked for
        self.stats = stats
        self.cameras = tuple(cameras)
        self.detection_filter = detections or DetectionFilter()  # each its own: its line throttle is state
        self.limits = limits
        self._say = Throttle(log)
        self.trackers: dict[str, Tracker] = {}
        self._ids = itertools.count(1)  # shared, so an id names one object across cameras
        # per camera, in order, until their frames are here
        self._detections: AwaitingFrames[Prompt] = AwaitingFrames(FixedLimits.DETECTIONS_WAITING,
                                                                 FixedLimits.DETECTIONS_WAITING * limits.max_cameras)
        # per camera, in order, until their frame or a later one is answered: a click made on a frame that a
        # backlog (EVERY_FRAME, the first boxes' wait) has not reached yet lands where the object was
        self._clicks: AwaitingFrames[Prompt] = AwaitingFrames(limits.max_clicks, limits.max_clicks * limits.max_cameras)
        # `box_inputs`: the detector inputs wired to the node, whose first message a camera's frames wait for
        self._first_boxes = FirstBoxesWait(box_inputs, policy.first_boxes_seconds if policy.every_frame else 0.0,
                                           policy.frames_held, limits.max_cameras, clock, self._say)

    def handle(self, items: Iterable) -> Iterator[Answer]:
        frames: dict[str, Frame] = {}  # live: each camera's newest frame of the batch
        for item in items:
            if isinstance(item, Frame):
                if self.policy.every_frame and self.search:  # phrases: found on the frame itself, no wait
                    yield from self._steps([*self._first_boxes.heard(item.image_id), item])
                elif self.policy.every_frame:
                    yield from self._steps(self._first_boxes.frame(item))
                else:
                    self.stats.skipped += item.image_id in frames
                    frames[item.image_id] = item
            elif isinstance(item, Prompt):
                camera = self._queue(self.detection_filter(item, self.stats))
                if camera is not None:  # frames that waited for it, answered now that it is due for them
                    yield from self._steps(self._first_boxes.heard(camera))
            elif isinstance(item, Phrases):
                use_phrases(self.search, item, self._say)
            elif isinstance(item, Remove):  # frames before it are answered with the tracks they had
                yield from self._steps(frames.values())  # held frames have none yet: they wait on
                frames = {}
                self.remove(item.track_ids)
            elif item == RESET:  # frames before it are answered with the tracks they had
                yield from self._steps([*self._first_boxes.end("before a reset"), *frames.values()])
                frames = {}
                self.reset()
        yield from self._steps([*frames.values(), *self._first_boxes.passed()])
        self._count_tracks()

    def wake_in(self) -> float | None:
        """Seconds until frames held for a detector's first boxes are due without them: the adapter calls
        `handle` then, events or not. None while none are held."""
        return self._first_boxes.wake_in()

    def finish(self) -> Iterator[Answer]:
        """The stream has ended: frames still held for a detector's first boxes are answered without them."""
        yield from self._steps(self._first_boxes.end("before the stream ended"))
        self._count_tracks()

    def reset(self) -> None:
        """Drop every track, and prompts not yet applied: what comes after the reset starts afresh."""
        for tracker in self.trackers.values():
            tracker.reset()
        self._detections.drain()
        self._clicks.drain()

    def remove(self, track_ids: tuple[int, ...]) -> None:
        """End the named tracks, whichever camera has them; one line for ids no camera has."""
        found = {i for tracker in self.trackers.values() for i in tracker.remove(track_ids)}
        unknown = sorted(set(track_ids) - found)
        if unknown:
            shown = self.limits.log_ids
            more = f" and {len(unknown) - shown} more" if len(unknown) > shown else ""
            self._say.warning("remove", "input 'remove': no live track has id %s%s; nothing else was done",
                              unknown[0] if len(unknown) == 1 else unknown[:shown], more)

    def _steps(self, frames: Iterable[Frame]) -> Iterator[Answer]:
        for frame in frames:
            yield from self._step(frame)

    def _step(self, frame: Frame) -> list[Answer]:
        camera = frame.image_id
        detections = self._due_detections(frame)
        if camera not in self.trackers:
            if len(self.trackers) >= self.limits.max_cameras:
                self._say.warning("max_cameras", "input '%s': %d cameras are tracked already (MAX_CAMERAS): its "
                                  "frames are not answered", camera, len(self.trackers))
                return []
            self.trackers[camera] = Tracker(self.model, self.policy.tracks, self._ids, self.stats.stages)
        if self.search and self._round_due(frame):
            detections = self._find(frame) or detections
        try:
            clicks = [click for _, click in self._clicks.due(camera, frame.timestamp)]
            return [(frame, self.trackers[camera].step(frame, detections, clicks))]
        except Exception as error:  # the model failed on this frame (out of memory, ...): the next one may not
            self._say.error(f"{camera} failed", "input '%s': tracking failed on this frame (%s: %s); skipping it",
                            camera, type(error).__name__, error)
            return []

    def _round_due(self, frame: Frame) -> bool:
        """Phrases are looked for on a camera's first frame, on the first after they change, and then once
        every `detect_seconds` of camera time (a clock stepping back starts the count again)."""
        if self.search.changed:
            self.search.changed = False
            self._rounds.clear()
        now = frame.timestamp.timestamp() if frame.timestamp is not None else self._clock()
        last = self._rounds.get(frame.image_id)
        if last is not None and last <= now < last + self.policy.detect_seconds:
            return False
        self._rounds[frame.image_id] = now
        return True

    def _find(self, frame: Frame) -> Prompt | None:
        """This frame's detection round by phrase; None, said, when SAM 3 fails on it (the tracks go on)."""
        try:
            return self.search.detections(frame)
        except Exception as error:  # noqa: BLE001 - out of memory, ...: the next round may not fail
            self._say.error("text failed", "input 'text': finding the phrases failed on %s's frame (%s: %s); "
                            "the tracks go on without this round", frame.image_id, type(error).__name__, error)
            return None

    def _due_detections(self, frame: Frame) -> Prompt | None:
        """The newest detection set computed on this frame or before; later ones wait for their frames.
        A detector's set says where everything is: older due sets are superseded, and counted."""
        due = self._detections.due(frame.image_id, frame.timestamp)
        self.stats.skipped += max(len(due) - 1, 0)
        return due[-1][1] if due else None

    def _queue(self, prompt: Prompt) -> str | None:
        """Keeps the prompt for its camera's frame; the camera where it is a detection, else None."""
        try:
            camera = camera_of(prompt, self.cameras, self.trackers)
        except InputError as error:
            self._say.warning(prompt.input_id, "%s", error)
            return None
        detection = prompt.input_id in BOX_INPUTS
        cameras = (self._detections if detection else self._clicks).cameras
        if camera not in cameras and len(cameras) >= self.limits.max_cameras:
            self._say.warning("max_cameras", "input '%s': image_id %r would be camera number %d, over "
                              "MAX_CAMERAS=%d: dropped", prompt.input_id, camera[:60], len(cameras) + 1,
                              self.limits.max_cameras)
            return None
        waiting = self._detections if detection else self._clicks
        self.stats.skipped += len(waiting.add(camera, prompt.timestamp, prompt))  # a stalled camera's oldest
        return camera if detection else None

    def _count_tracks(self) -> None:
        trackers = self.trackers.values()
        self.stats.tracking = {
            "started": sum(t.started for t in trackers),
            "ended": sum(t.ended for t in trackers),
            "revived": sum(t.revived for t in trackers),
            "live": sum(len(t.tracks) for t in trackers),
        }
