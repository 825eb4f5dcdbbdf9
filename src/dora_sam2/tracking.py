"""Frames + prompts -> tracked masks with stable ids. No dora here: driven (and tested) on its own.

A `Tracker` follows the objects of one camera. Prompts start or refresh tracks; every frame carries
each track forward with SAM2's memory. A track ends when SAM2 has not seen it for long enough (`LostAfter`:
seconds of camera time or, the older way, answered frames), when the detector has not confirmed it
in `detector_misses` rounds, or on `remove`. A detection that matches no live track but lands where a
track ended less than `revive_seconds` ago gets that track's id back. No id appears without a prompt,
and none is given to two objects. Ages are read on the camera's steady clock (`CameraClock`), which does
not follow a clock that steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from .association import associate
from .domain import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND, Frame, Masks, Prompt
from .geometry import mask_boxes
from .routing import on_frame
from .stats import Stages
from .throttle import Throttle
from .timeline import TIMESTAMP_TOLERANCE
from .streaming import ObjectMemory, StreamingModel

log = logging.getLogger("dora_sam2")

BOX_LABELS = np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int64)


class CameraClock:
    """A camera's steady time, in seconds since its first frame.

    Camera clocks step: an NTP correction, a driver that restarts, one frame stamped years ahead. Frame
    time that goes back, or forward by more than `jump` seconds, is a jump: steady time stands still
    across it and goes on from the new time, so no track outlives its age limit (nor lives forever, on
    an age gone negative) however the clock steps. Without timestamps (dora 0.5) it is this process's
    monotonic clock."""

    def __init__(self, jump: float = 60.0):
        self.jump = jump
        self.now = 0.0
        self._last: datetime | float | None = None

    def tick(self, timestamp: datetime | None) -> float | None:
        """Moves to a frame's time; returns the step in seconds when it was a jump, else None."""
        stamp = timestamp if timestamp is not None else time.monotonic()
        last, self._last = self._last, stamp
        if last is None or isinstance(last, datetime) != isinstance(stamp, datetime):
            return None
        delta = (stamp - last).total_seconds() if isinstance(stamp, datetime) else stamp - last
        if 0 <= delta <= self.jump:
            self.now += delta
            return None
        if delta >= -TIMESTAMP_TOLERANCE.total_seconds():  # the same frame time, to dora's precision
            return None
        return delta

    def at(self, timestamp: datetime | None) -> float:
        """The steady time of an earlier stamp of this camera (a detection computed on a frame that has gone
        by since): as long before now as it was before the newest frame. Now where either stamp is unknown,
        or this one lies ahead of the newest frame or further back than a jump."""
        if not isinstance(timestamp, datetime) or not isinstance(self._last, datetime):
            return self.now
        ago = (self._last - timestamp).total_seconds()
        return self.now - ago if 0.0 < ago <= self.jump else self.now


@dataclass(eq=False)  # a track is itself: compared (and hashed) by identity, not by its (array) fields
class Track:
    track_id: int | None  # None while only planned: an id is given when its frame has been answered
    class_name: str  # the detector's (or the click page's) word for it
    memory: ObjectMemory
    box: np.ndarray  # xyxy of its newest visible mask (or its prompt, before any)
    prompt_box: np.ndarray  # xyxy of its last detection (or clicks): matched too, when its mask is poor
    last_seen: float  # the camera's steady time when SAM2 last saw it (or it was prompted)
    lost_frames: int = 0  # consecutive frames SAM2 has not seen it
    misses: int = 0  # consecutive detection rounds that did not confirm it
    click_object: int | None = None  # the click page's object index, when a person prompted it
    detected_at: float | None = None  # the camera's steady time of its last detection
    velocity: np.ndarray | None = None  # xyxy per second, between its last two detections
    # its object's diagonal as last detected whole: its largest detection's, halved for each second between
    # detections (an object moving away shrinks); the box of the part in view, as it goes behind something,
    # understates it
    size: float = 0.0

    def heading(self, now: float) -> np.ndarray:
        """Where its last detection would be now, had it gone on as between the two before: an object
        that moved further than its size between two rounds overlaps this, not its old box. The box moves
        whole, along each axis at the speed of its faster edge where both edges go one way (an object
        sliding behind something or out of it has one edge held by the edge of what hides it), at its
        centre's where they part (it grows or shrinks): moved edge by edge, a sliver's box crosses over
        into one whose size grows without bound, and so would be near anything."""
        if self.velocity is None or self.detected_at is None:
            return self.prompt_box
        near, far = self.velocity[:2], self.velocity[2:]  # (x1, y1) and (x2, y2) per second
        faster = np.where(np.abs(near) > np.abs(far), near, far)
        move = np.where(near * far >= 0, faster, (near + far) / 2)
        return self.prompt_box + np.tile(move, 2) * (now - self.detected_at)

    def boxes(self, now: float) -> list[np.ndarray]:
        """Where a detection may find it: its mask's box, its last detection's, where that is heading."""
        return [self.box, self.prompt_box, self.heading(now)]

    def detected(self, box: np.ndarray, now: float) -> None:
        box = np.asarray(box, np.float64)
        since = now - self.detected_at if self.detected_at is not None else 0.0
        if since > 0:
            self.velocity = (box - self.prompt_box) / since
        self.size = max(float(np.hypot(*(box[2:] - box[:2]))), self.size * 0.5 ** max(since, 0.0))
        self.prompt_box, self.detected_at, self.misses = box, now, 0


@dataclass(frozen=True)
class _Ended:
    """A track that ended on its own (lost, unconfirmed): its id may come back for a while, to a detection
    found as a live track's are (`Track.boxes`: its last detection still heading on, its size)."""

    track: Track  # as it ended, less its memory (a revived track starts one anew): up to MAX_ENDED_TRACKS are kept
    at: float  # the camera's steady time

    @property
    def detected_at(self) -> float:
        """Its last detection's time (its end's, if it had none): its reach grows from there."""
        return self.at if self.track.detected_at is None else self.track.detected_at


@dataclass(frozen=True)
class _Cue:
    """One object's prompt on this frame: its points in frame pixels and their SAM2 point labels."""

    points: np.ndarray  # (K, 2)
    point_labels: np.ndarray  # (K,)


@dataclass
class _Plan:
    """What one frame's prompts do to the tracks, decided before the model runs and applied only once it
    has answered: a frame that fails (and may run again in float32) changes nothing, counts no miss twice
    and spends no id. The live tracks are copies, so the tracker's own stay as they were."""

    tracks: list[Track]  # the frame's tracks in answer order: the live ones (copies), then the new ones
    remembered: list[_Ended]  # ended tracks that may still come back, less those revived on this frame
    cues: dict[Track, _Cue] = field(default_factory=dict)  # the prompted tracks' prompts
    new: list[Track] = field(default_factory=list)  # started on this frame, revived ones among them
    revived: dict[Track, _Ended] = field(default_factory=dict)
    unconfirmed: list[Track] = field(default_factory=list)  # ended: the detector no longer confirms them


@dataclass(frozen=True)
class LostAfter:
    """How long SAM 2 may not see a track before it ends: `amount` seconds of camera time or, the older
    way (LOST_FRAMES), answered frames, which come slower on a slower machine. One of the two, never both."""

    amount: float = 3.0
    frames: bool = False

    def lost(self, track: Track, now: float) -> bool:
        return track.lost_frames >= self.amount if self.frames else now - track.last_seen >= self.amount

    def __str__(self) -> str:
        return f"{self.amount:g} frames" if self.frames else f"{self.amount:g} s"


@dataclass(frozen=True)
class TrackPolicy:
    """The lifecycle rules of a camera's tracks, as the node's settings have them by default (Settings
    builds it from the environment: `Settings.track_policy`)."""

    max_objects: int = 16  # live tracks at most: further new objects are refused, said once
    lost: LostAfter = LostAfter()  # unseen by SAM 2 this long, a track ends
    match_iou: float = 0.3  # least overlap of a detection and a track's box to be that track
    match_reach: float = 2.0  # ... else how far (in box diagonals), with its label, it may lie from one; 0 = off
    detector_misses: int = 3  # detection rounds that do not confirm a track before it ends; 0 = never
    revive_seconds: float = 10.0  # a detection where a track ended this lately takes its id back; 0 = never
    # a track the detector has lost (its last round missed it, or it ended) is matched by distance within
    # `match_reach` plus this many box diagonals a second since its last detection: an object hidden longer comes
    # out further from where it was last seen (behind an occluder, it moved on)
    revive_reach_growth: float = 6.0
    max_ended: int = 64  # ended tracks remembered for revival: the newest are kept
    clock_jump: float = 60.0  # camera time stepping back, or ahead by more than this, is a jump
    # SAM 2's non-overlapping constraint (NON_OVERLAP): each pixel to the object that claims it most, in what
    # the memory encoder sees ("memory") or in that and the masks sent ("all"); "off" = each object on its own
    non_overlap: str = "off"
    # FORGET_ON_PROMPT: a track prompted again (a detection round, a click) drops its tracked frames from
    # before, keeping its prompted ones. Off is SAM 2's way, for models trained with prompts on later frames of
    # a clip, as Meta's are; dora-sam2-train prompts a clip's first frame only, and such a model lost half its
    # objects on the frame after a round when it read tracked frames older than its newest prompt (BENCHMARKS.md).
    forget_on_prompt: bool = False

    @classmethod
    def from_settings(cls, settings) -> "TrackPolicy":
        """The node's rules, from its `Settings` (which decided between LOST_SECONDS and LOST_FRAMES)."""
        s = settings
        lost = LostAfter(s.lost_frames, frames=True) if s.lost_seconds is None else LostAfter(s.lost_seconds)
        return cls(max_objects=s.max_objects, lost=lost, match_iou=s.match_iou, match_reach=s.match_reach,
                   revive_reach_growth=s.revive_reach_growth,
                   detector_misses=s.detector_misses, revive_seconds=s.revive_seconds,
                   max_ended=s.limits.max_ended_tracks, clock_jump=s.clock_jump_seconds, non_overlap=s.non_overlap,
                   forget_on_prompt=s.forget_on_prompt)


class Tracker:
    def __init__(self, model: StreamingModel, policy: TrackPolicy = TrackPolicy(),
                 ids: Iterator[int] | None = None, stages: Stages | None = None):
        self.model = model
        self.policy = policy
        self.tracks: list[Track] = []
        self.stages = stages if stages is not None else Stages()
        self.started = self.ended = self.revived = 0
        self._ended: list[_Ended] = []  # recently ended on their own, newest last
        self.clock = CameraClock(policy.clock_jump)
        self._ids = ids if ids is not None else itertools.count(1)  # shared across cameras: ids stay unique
        self._frame_index = 0
        self._size: tuple[int, int] | None = None  # (width, height) of the camera's frames
        self._say = Throttle(log)

    def step(self, frame: Frame, detections: Prompt | None = None, clicks: Sequence[Prompt] = ()) -> Masks:
        """This frame's masks of every live track, after applying the prompts that came with it."""
        try:
            return self._step(frame, detections, clicks)
        except FloatingPointError:  # the failed frame's plan was never applied: it can run again
            if not self.model.fall_back_to_float32():
                raise
            return self._step(frame, detections, clicks)

    def _step(self, frame: Frame, detections: Prompt | None, clicks: Sequence[Prompt]) -> Masks:
        # What the frame itself says (its time, its size) holds whether or not the model answers it, and
        # reading it twice changes nothing; what its prompts do is planned, and applied once answered.
        self._follow_clock(frame)
        self._forget_ended()
        self._follow_resolution(frame)
        detections = on_frame(detections, frame, self._say) if detections is not None else None
        plan = self._plan(detections, clicks)
        if not plan.tracks:  # nothing to follow: answered without touching the model
            self._apply(plan)
            return self._masks(frame, np.zeros((0, frame.height, frame.width), bool), np.zeros(0, np.float32))

        with self.stages.time("encode"):
            features = self.model.encode(frame)
        step = self._infer(features, plan)
        prompted = [track in plan.cues for track in plan.tracks]
        with self.stages.time("remember"):
            memories = self.model.remember(features, step, prompted, apart=self.policy.non_overlap != "off")
        with self.stages.time("postprocess"):  # checks the outputs before anything is remembered
            found = self.model.postprocess(step, frame, apart=self.policy.non_overlap == "all")
        self._apply(plan)
        for track, memory, was_prompted in zip(self.tracks, memories, prompted):
            if was_prompted and self.policy.forget_on_prompt:
                track.memory.forget_tracked()
            track.memory.add(self._frame_index, memory, was_prompted)
        answer = self._masks(frame, found.masks, found.scores, found.visible)
        self._follow(found.masks, found.visible)
        self._frame_index += 1
        return answer

    def _follow_clock(self, frame: Frame) -> None:
        """Camera time, so a track lives as long on a slow CPU as on a GPU; steady across clock jumps."""
        jump = self.clock.tick(frame.timestamp)
        if jump is not None:
            self._say.warning("clock", "input '%s': the camera's clock jumped %+.1f s between two frames; track "
                              "ages go on from this frame (CLOCK_JUMP_SECONDS=%g)", frame.image_id, jump,
                              self.clock.jump)

    def _follow_resolution(self, frame: Frame) -> None:
        """A camera that changes resolution mid-stream: the tracks' boxes and memories no longer fit it."""
        size = (frame.width, frame.height)
        if self._size is not None and size != self._size and self.tracks:
            self._say.warning("resolution", "input '%s': the camera changed resolution from %dx%d to %dx%d: dropping "
                              "tracks %s, whose boxes and memories no longer fit the frame", frame.image_id,
                              *self._size, *size, [t.track_id for t in self.tracks])
            self.ended += len(self.tracks)
            self.tracks = []
        self._size = size

    def reset(self) -> None:
        """Drop every track; none of them comes back."""
        if self.tracks:
            log.info("reset: dropping tracks %s", [t.track_id for t in self.tracks])
        self.ended += len(self.tracks)
        self.tracks, self._ended = [], []

    def remove(self, track_ids) -> list[int]:
        """End the named tracks for good (they do not come back); returns the ids that were live."""
        gone = [t for t in self.tracks if t.track_id in set(track_ids)]
        if gone:
            log.info("remove: ending tracks %s", [t.track_id for t in gone])
            self.ended += len(gone)
            self.tracks = [t for t in self.tracks if t not in gone]
        return [t.track_id for t in gone]

    # -- prompts -> a plan for the frame

    def _plan(self, detections: Prompt | None, clicks: Sequence[Prompt]) -> _Plan:
        plan = _Plan([dataclasses.replace(t) for t in self.tracks], list(self._ended))
        if detections is not None:
            self._plan_detection_round(plan, detections)
        for prompt in clicks:
            self._match_clicks(plan, prompt)
        return plan

    def _plan_detection_round(self, plan: _Plan, detections: Prompt) -> None:
        """A detector's round, all it decides: each detection to a live track (association.associate: by
        overlap with the track's mask box, last detection box or where that is heading, a track of its label
        first, a track of another label on the last two only, as its mask may have strayed onto the object;
        else the nearest of its label within its reach, `_reach`), which takes the detection's label; else,
        the same way, to a track that ended lately, which comes back; else a new track. Tracks the round
        leaves unconfirmed count a miss, and end at `detector_misses`. A round computed on a frame that has
        gone by since is matched and timed as of that frame, and prompts where its track is heading now."""
        boxes = detections.points.reshape(-1, 4)
        seen = self.clock.at(detections.timestamp)
        live = list(plan.tracks)
        names = detections.class_names
        rules = self.policy
        found = associate([t.boxes(seen) for t in live], boxes, rules.match_iou,
                          [self._reach(t.detected_at if t.misses else None) for t in live],
                          [[_same_kind(t.class_name, name) for name in names] for t in live], others_from=1,
                          sizes=[t.size for t in live])
        for t, d in found.matches:
            track = live[t]
            track.class_name = detections.class_names[d] or track.class_name  # the detector's newest word on what it is
            track.detected(boxes[d], seen)
            plan.cues[track] = self._box_cue(track, detections.points[d], seen)
        if len(boxes):  # a round that saw nothing confirms nothing and denies nothing
            self._count_misses(plan, [track for i, track in enumerate(live) if i not in {t for t, _ in found.matches}])
        for d, track in zip(found.new_detections, self._revive(plan, [boxes[d] for d in found.new_detections],
                                                           [names[d] for d in found.new_detections], seen)):
            track = track or self._start(plan, detections.class_names[d], boxes[d])
            if track is not None:
                track.detected(boxes[d], seen)
                plan.cues[track] = _Cue(detections.points[d], BOX_LABELS)

    def _count_misses(self, plan: _Plan, unmatched: list[Track]) -> None:
        """Tracks the detector has not confirmed in `detector_misses` rounds end: a stray box that SAM 2
        keeps seeing would otherwise cost a tracked object's work on every frame. Tracks a person clicked
        are the person's, not the detector's."""
        for track in unmatched:
            if track.click_object is None:
                track.misses += 1
        if self.policy.detector_misses:
            plan.unconfirmed = [t for t in plan.tracks if t.misses >= self.policy.detector_misses]
            plan.tracks = [t for t in plan.tracks if t not in plan.unconfirmed]

    def _revive(self, plan: _Plan, boxes: list[np.ndarray], names: list[str], seen: float) -> list[Track | None]:
        """Per new detection, the lately ended track it lands on (its id and label back, its memory anew
        from the detection), or None. Each ended track comes back once, to the detection it overlaps most."""
        revived: list[Track | None] = [None] * len(boxes)
        if not boxes or not plan.remembered:
            return revived
        rules = self.policy
        gone = [e.track for e in plan.remembered]
        found = associate([t.boxes(seen) for t in gone], np.asarray(boxes), rules.match_iou,
                          [self._reach(e.detected_at) for e in plan.remembered],
                          [[_same_kind(t.class_name, name) for name in names] for t in gone],
                          others_from=1, sizes=[t.size for t in gone])
        for e, d in found.matches:
            ended = plan.remembered[e]
            track = self._start(plan, ended.track.class_name, boxes[d], track_id=ended.track.track_id)
            if track is not None:
                plan.revived[track] = ended
                revived[d] = track
        taken = {id(e) for e in plan.revived.values()}  # by identity: their boxes are arrays
        plan.remembered = [e for e in plan.remembered if id(e) not in taken]
        return revived

    def _box_cue(self, track: Track, points: np.ndarray, seen: float) -> _Cue:
        """A detection's box as a prompt on this frame. From a frame that has gone by since (a detector
        slower than the camera, a loaded machine), the object has moved on: the box is moved to where its
        track is heading by now, within the frame; one heading out of view is shown as it was seen."""
        if seen >= self.clock.now or self._size is None:
            return _Cue(points, BOX_LABELS)
        box = np.clip(track.heading(self.clock.now), 0, np.tile(self._size, 2))
        if box[2] <= box[0] or box[3] <= box[1]:
            return _Cue(points, BOX_LABELS)
        return _Cue(box.reshape(2, 2).astype(np.float32), BOX_LABELS)

    def _reach(self, lost_since: float | None) -> float:
        """How far (box diagonals) a detection may lie from a track to be it by distance: `match_reach`; for a
        track the detector has lost (its last round missed it, or it ended), grown by `revive_reach_growth`
        a second since its last detection, as its object, hidden behind something, moved on meanwhile and
        what SAM 2 shows of it may be on something else. 0 stays 0: off."""
        rules = self.policy
        if rules.match_reach == 0 or lost_since is None:
            return rules.match_reach
        return rules.match_reach + rules.revive_reach_growth * max(0.0, self.clock.now - lost_since)

    def _match_clicks(self, plan: _Plan, prompt: Prompt) -> None:
        """A person's points: the object they name (or click inside) is refined, else a new one starts."""
        for i in range(prompt.num_objects):
            keep = prompt.point_labels[i] != Prompt.PAD
            points, point_labels = prompt.points[i][keep], prompt.point_labels[i][keep]
            if len(points) == 0:
                continue
            click_object = prompt.object_ids[i] if prompt.object_ids is not None else None
            track = _clicked_track(plan.tracks, points, point_labels, click_object)
            if track is None:
                box = np.concatenate([points.min(axis=0), points.max(axis=0)])
                track = self._start(plan, prompt.class_names[i], box, click_object)
            elif prompt.class_names[i]:
                track.class_name = prompt.class_names[i]
            if track is not None:
                plan.cues[track] = _Cue(points, point_labels)

    def _start(self, plan: _Plan, class_name: str, box: np.ndarray, click_object: int | None = None,
               track_id: int | None = None) -> Track | None:
        if len(plan.tracks) >= self.policy.max_objects:
            self._say.warning("max_objects", "MAX_OBJECTS=%d objects are tracked already: not starting another (%s). "
                              "Raise MAX_OBJECTS, or send `reset` to drop the tracks.", self.policy.max_objects,
                              class_name or "unlabelled")
            return None
        box = np.asarray(box, np.float64)
        track = Track(track_id, class_name, self.model.new_memory(), box, box.copy(), self.clock.now,
                      click_object=click_object)
        plan.tracks.append(track)
        plan.new.append(track)
        return track

    def _apply(self, plan: _Plan) -> None:
        """The frame has been answered: its plan becomes the tracks, new ones get their ids."""
        for track in plan.new:
            if track in plan.revived:
                log.info("track %d is back (ended %.1f s ago)", track.track_id, self.clock.now - plan.revived[track].at)
                self.revived += 1
            else:
                track.track_id = next(self._ids)
                self.started += 1
        self.tracks, self._ended = plan.tracks, plan.remembered
        if plan.unconfirmed:
            log.info("tracks %s ended: the detector has not confirmed them in %d rounds",
                     [t.track_id for t in plan.unconfirmed], self.policy.detector_misses)
            self._end(plan.unconfirmed)

    # -- model

    def _infer(self, features, plan: _Plan):
        """Prompted tracks decode from their prompt, the others from memory; answers in track order."""
        prompted = [i for i, t in enumerate(plan.tracks) if t in plan.cues]
        followed = [i for i, t in enumerate(plan.tracks) if t not in plan.cues]
        steps = []
        if prompted:
            with self.stages.time("prompt_decode"):
                steps.append(self.model.prompt(features, _as_prompt([plan.cues[plan.tracks[i]] for i in prompted])))
        if followed:
            with self.stages.time("memory"):
                memories = [plan.tracks[i].memory for i in followed]
                steps.append(self.model.track(features, memories, self._frame_index))
        return self.model.join(steps, np.argsort(prompted + followed).tolist())

    def _follow(self, masks: np.ndarray, visible: np.ndarray) -> None:
        """Note where each track is, and end those SAM2 has not seen for long enough."""
        boxes = mask_boxes(masks)
        for track, box, seen in zip(self.tracks, boxes, visible):
            if seen and not np.isnan(box).any():
                track.box, track.lost_frames, track.last_seen = box, 0, self.clock.now
            else:
                track.lost_frames += 1
        lost = [t for t in self.tracks if self.policy.lost.lost(t, self.clock.now)]
        if lost:
            log.info("tracks %s ended: not seen for %s", [t.track_id for t in lost], self.policy.lost)
            self._end(lost)

    def _end(self, tracks: list[Track]) -> None:
        """Tracks that ended on their own: their ids may come back within `revive_seconds`."""
        self.ended += len(tracks)
        self.tracks = [t for t in self.tracks if t not in tracks]
        if self.policy.revive_seconds > 0:
            self._ended += [_Ended(dataclasses.replace(t, memory=None), self.clock.now) for t in tracks]
            del self._ended[:max(len(self._ended) - self.policy.max_ended, 0)]  # the newest are kept

    def _forget_ended(self) -> None:
        """Ended tracks past `revive_seconds` cannot come back: forgotten on every frame, detections or not."""
        self._ended = [e for e in self._ended if self.clock.now - e.at < self.policy.revive_seconds]

    def _masks(self, frame: Frame, masks: np.ndarray, scores: np.ndarray, visible=None) -> Masks:
        return Masks(masks, scores, tuple(t.class_name for t in self.tracks), frame.image_id, frame.timestamp,
                     track_ids=tuple(t.track_id for t in self.tracks), visible=visible)


def _same_kind(track_label: str, detection_label: str) -> bool:
    """Whether a detection may be matched to a track by distance alone: by overlap a detector may rename
    what it sees, but a track and a detection further apart need the same label (or either none)."""
    return not track_label or not detection_label or track_label == detection_label


def _clicked_track(tracks: list[Track], points, point_labels, click_object) -> Track | None:
    if click_object is not None:
        return next((t for t in tracks if t.click_object == click_object), None)
    # Without an object id, a click inside a track's box refines the smallest such track.
    foreground = points[point_labels == FOREGROUND]
    if len(foreground) == 0:
        return None
    x, y = foreground[0]
    inside = [t for t in tracks if t.box[0] <= x <= t.box[2] and t.box[1] <= y <= t.box[3]]
    return min(inside, key=lambda t: (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]), default=None)


def _as_prompt(cues: list[_Cue]) -> Prompt:
    """Cues of several objects as one padded Prompt, for one batched decoder call."""
    k = max(len(c.points) for c in cues)
    points = np.zeros((len(cues), k, 2), np.float32)
    point_labels = np.full((len(cues), k), Prompt.PAD, np.int64)
    for i, cue in enumerate(cues):
        points[i, : len(cue.points)] = cue.points.reshape(-1, 2)
        point_labels[i, : len(cue.point_labels)] = cue.point_labels
    return Prompt("tracker", points, point_labels, ("",) * len(cues))
