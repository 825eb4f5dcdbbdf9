"""Frames + prompts -> tracked masks with stable ids. No dora here: driven (and tested) on its own.

A `Tracker` follows the objects of one camera. Prompts start or refresh tracks; every frame carries
each track forward with SAM2's memory; a track SAM2 no longer sees for `lost_frames` frames ends.
Ids are never reused, and none appears without a prompt.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .association import associate
from .domain import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND, Frame, Masks, Prompt, on_frame
from .geometry import mask_boxes
from .stats import Stages
from .video import ObjectMemory, Sam2StreamingModel, Step

log = logging.getLogger("dora_sam2")

BOX_LABELS = np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int64)


@dataclass
class Track:
    track_id: int
    class_name: str  # the detector's (or the click page's) word for it
    memory: ObjectMemory
    box: np.ndarray  # xyxy of its newest visible mask (or its prompt, before any): what detections match
    lost_frames: int = 0  # consecutive frames SAM2 has not seen it
    click_object: int | None = None  # the click page's object index, when a person prompted it


@dataclass(frozen=True)
class _Cue:
    """One object's prompt on this frame: its points in frame pixels and their SAM2 point labels."""

    points: np.ndarray  # (K, 2)
    point_labels: np.ndarray  # (K,)


class Tracker:
    def __init__(self, model: Sam2StreamingModel, max_objects: int = 16, lost_frames: int = 30,
                 match_iou: float = 0.3, ids: Iterator[int] | None = None, stages: Stages | None = None):
        self.model = model
        self.max_objects = max_objects
        self.lost_frames = lost_frames
        self.match_iou = match_iou
        self.tracks: list[Track] = []
        self.stages = stages if stages is not None else Stages()
        self.started = self.ended = 0
        self._ids = ids if ids is not None else itertools.count(1)  # shared across cameras: ids stay unique
        self._frame_index = 0
        self._size: tuple[int, int] | None = None  # (width, height) of the camera's frames
        self._warned = -1e9

    def step(self, frame: Frame, detections: Prompt | None = None, clicks: Sequence[Prompt] = ()) -> Masks:
        """This frame's masks of every live track, after applying the prompts that came with it."""
        try:
            return self._step(frame, detections, clicks)
        except FloatingPointError:  # nothing of the failed frame was kept: it can run again
            if not self.model.fall_back_to_float32():
                raise
            return self._step(frame, detections, clicks)

    def _step(self, frame: Frame, detections: Prompt | None, clicks: Sequence[Prompt]) -> Masks:
        self._follow_resolution(frame)
        detections = on_frame(detections, frame) if detections is not None else None
        known = len(self.tracks)  # tracks started below are appended after these
        cues = self._match_detections(detections) if detections is not None else {}
        for prompt in clicks:
            cues.update(self._match_clicks(prompt))
        if not self.tracks:  # nothing to follow: answered without touching the model
            return self._masks(frame, np.zeros((0, frame.height, frame.width), bool), np.zeros(0, np.float32))

        try:
            with self.stages.time("encode"):
                features = self.model.encode(frame)
            step = self._infer(features, cues)
            prompted = [track.track_id in cues for track in self.tracks]
            with self.stages.time("remember"):
                memories = self.model.remember(features, step, prompted)
            with self.stages.time("postprocess"):  # checks the outputs before anything is remembered
                found = self.model.postprocess(step, frame)
        except Exception:
            # A track started on this frame has no memory to go on from: it did not start after all.
            self.started -= len(self.tracks) - known
            self.tracks = self.tracks[:known]
            raise
        for track, memory, was_prompted in zip(self.tracks, memories, prompted):
            track.memory.add(self._frame_index, memory, was_prompted)
        answer = self._masks(frame, found.masks, found.scores)
        self._follow(found.masks, found.visible)
        self._frame_index += 1
        return answer

    def _follow_resolution(self, frame: Frame) -> None:
        """A camera that changes resolution mid-stream: the tracks' boxes and memories no longer fit it."""
        size = (frame.width, frame.height)
        if self._size is not None and size != self._size and self.tracks:
            log.warning("input '%s': the camera changed resolution from %dx%d to %dx%d: dropping tracks %s, "
                        "whose boxes and memories no longer fit the frame", frame.image_id, *self._size, *size,
                        [t.track_id for t in self.tracks])
            self.ended += len(self.tracks)
            self.tracks = []
        self._size = size

    def reset(self) -> None:
        if self.tracks:
            log.info("reset: dropping tracks %s", [t.track_id for t in self.tracks])
        self.ended += len(self.tracks)
        self.tracks = []

    # -- prompts -> cues per track

    def _match_detections(self, detections: Prompt) -> dict[int, _Cue]:
        boxes = detections.points.reshape(-1, 4)
        found = associate(np.array([t.box for t in self.tracks]).reshape(-1, 4), boxes, self.match_iou)
        cues = {}
        for t, d in found.matches:
            track = self.tracks[t]
            track.class_name = detections.class_names[d] or track.class_name  # the detector's newest word on what it is
            cues[track.track_id] = _Cue(detections.points[d], BOX_LABELS)
        for d in found.new_detections:
            track = self._start(detections.class_names[d], boxes[d])
            if track is not None:
                cues[track.track_id] = _Cue(detections.points[d], BOX_LABELS)
        return cues

    def _match_clicks(self, prompt: Prompt) -> dict[int, _Cue]:
        """A person's points: the object they name (or click inside) is refined, else a new one starts."""
        cues = {}
        for i in range(prompt.num_objects):
            keep = prompt.point_labels[i] != Prompt.PAD
            points, point_labels = prompt.points[i][keep], prompt.point_labels[i][keep]
            if len(points) == 0:
                continue
            click_object = prompt.object_ids[i] if prompt.object_ids is not None else None
            track = self._clicked_track(points, point_labels, click_object)
            if track is None:
                box = np.concatenate([points.min(axis=0), points.max(axis=0)])
                track = self._start(prompt.class_names[i], box, click_object)
            elif prompt.class_names[i]:
                track.class_name = prompt.class_names[i]
            if track is not None:
                cues[track.track_id] = _Cue(points, point_labels)
        return cues

    def _clicked_track(self, points, point_labels, click_object) -> Track | None:
        if click_object is not None:
            return next((t for t in self.tracks if t.click_object == click_object), None)
        # Without an object id, a click inside a track's box refines the smallest such track.
        foreground = points[point_labels == FOREGROUND]
        if len(foreground) == 0:
            return None
        x, y = foreground[0]
        inside = [t for t in self.tracks if t.box[0] <= x <= t.box[2] and t.box[1] <= y <= t.box[3]]
        return min(inside, key=lambda t: (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]), default=None)

    def _start(self, class_name: str, box: np.ndarray, click_object: int | None = None) -> Track | None:
        if len(self.tracks) >= self.max_objects:
            now = time.monotonic()
            if now - self._warned >= 10.0:
                self._warned = now
                log.warning("MAX_OBJECTS=%d objects are tracked already: not starting another (%s). Raise "
                            "MAX_OBJECTS, or send `reset` to drop the tracks.", self.max_objects, class_name or "unlabelled")
            return None
        track = Track(next(self._ids), class_name, self.model.new_memory(), np.asarray(box, np.float64),
                      click_object=click_object)
        self.tracks.append(track)
        self.started += 1
        return track

    # -- model

    def _infer(self, features, cues: dict[int, _Cue]) -> Step:
        """Prompted tracks decode from their prompt, the others from memory; answers in track order."""
        prompted = [i for i, t in enumerate(self.tracks) if t.track_id in cues]
        followed = [i for i, t in enumerate(self.tracks) if t.track_id not in cues]
        steps = []
        if prompted:
            with self.stages.time("prompt_decode"):
                steps.append(self.model.prompt(features, _as_prompt([cues[self.tracks[i].track_id] for i in prompted])))
        if followed:
            with self.stages.time("memory"):
                memories = [self.tracks[i].memory for i in followed]
                steps.append(self.model.track(features, memories, self._frame_index))
        return Step.concat(steps, np.argsort(prompted + followed).tolist())

    def _follow(self, masks: np.ndarray, visible: np.ndarray) -> None:
        """Note where each track is, and end those SAM2 has not seen for `lost_frames` frames."""
        boxes = mask_boxes(masks)
        for track, box, seen in zip(self.tracks, boxes, visible):
            if seen and not np.isnan(box).any():
                track.box, track.lost_frames = box, 0
            else:
                track.lost_frames += 1
        ended = [t for t in self.tracks if t.lost_frames >= self.lost_frames]
        if ended:
            log.info("tracks %s ended: not seen for %d frames", [t.track_id for t in ended], self.lost_frames)
            self.ended += len(ended)
            self.tracks = [t for t in self.tracks if t.lost_frames < self.lost_frames]

    def _masks(self, frame: Frame, masks: np.ndarray, scores: np.ndarray) -> Masks:
        return Masks(masks, scores, tuple(t.class_name for t in self.tracks), frame.image_id, frame.timestamp,
                     track_ids=tuple(t.track_id for t in self.tracks))


def _as_prompt(cues: list[_Cue]) -> Prompt:
    """Cues of several objects as one padded Prompt, for one batched decoder call."""
    k = max(len(c.points) for c in cues)
    points = np.zeros((len(cues), k, 2), np.float32)
    point_labels = np.full((len(cues), k), Prompt.PAD, np.int64)
    for i, cue in enumerate(cues):
        points[i, : len(cue.points)] = cue.points.reshape(-1, 2)
        point_labels[i, : len(cue.point_labels)] = cue.point_labels
    return Prompt("tracker", points, point_labels, ("",) * len(cues))
