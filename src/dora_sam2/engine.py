"""Frames + prompts -> masks. No dora here: the engine is driven (and tested) on its own."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .domain import Frame, InputError, Masks, Prompt
from .last_computed import LastComputed
from .precision import retried_in_float32
from .routing import camera_of, on_frame
from .stats import Stages
from .throttle import Throttle
from .timeline import RecentByTime, is_newer

log = logging.getLogger("dora_sam2")


class ImageModel(Protocol):
    """What the engine asks of a model (model.Sam2Backend is one): a frame's embedding, then any number of
    prompts decoded on it and brought to the frame."""

    def encode(self, frame: Frame) -> object: ...

    def decode(self, embedding, prompt: Prompt) -> tuple:
        """Low-resolution mask logits (N, h, w), predicted IoU (N,) and object scores (N,)."""

    def postprocess(self, logits, scores, width: int, height: int, *extra) -> tuple[np.ndarray, ...]:
        """(N, H, W) bool masks at the frame's size, the scores, and each of `extra` as numpy."""

    def fall_back_to_float32(self) -> bool:
        """After a float16 overflow: switch to float32 and say so; False when that would not help."""


class Segmenter:
    """Keeps recent frames per camera and answers prompts on them, encoding each frame at most once."""

    def __init__(self, model: ImageModel, frame_buffer: int = 30, cameras: Sequence[str] = (), embeddings_kept: int = 2,
                 stages: Stages | None = None):
        self.model = model
        # The dataflow's camera inputs, default first, when dora tells (1.x). Knowing them, a prompt for a
        # camera that has sent no frame yet can wait for it; prompts without an image_id go to the first.
        self.cameras = tuple(cameras)
        self._frame_buffer = frame_buffer
        self._frames: dict[str, RecentByTime[Frame]] = {}  # per camera
        # Keyed by the Frame object itself: a frame is encoded once however many prompts land on it.
        self._embeddings: LastComputed[Frame, object] = LastComputed(embeddings_kept)
        self._say = Throttle(log)
        self.stages = stages if stages is not None else Stages()

    def add_frame(self, frame: Frame) -> None:
        if frame.image_id not in self._frames:
            self._frames[frame.image_id] = RecentByTime(self._frame_buffer)
        self._frames[frame.image_id].add(frame.timestamp, frame)

    def segment(self, prompt: Prompt) -> tuple[Frame, Masks]:
        """The masks for a prompt, with the frame they were computed on."""
        frame = self.frame_for(prompt)
        prompt = on_frame(prompt, frame, self._say)
        if prompt.num_objects == 0:  # an empty detection is answered, without touching the model
            masks, scores, visible = np.zeros((0, frame.height, frame.width), bool), np.zeros(0, np.float32), None
        else:
            # after a fall back to float32, the embeddings kept in float16 are forgotten
            masks, scores, visible = retried_in_float32(lambda: self._predict(frame, prompt),
                                                        self.model.fall_back_to_float32, self._embeddings.clear)
        return frame, Masks(masks, scores, prompt.class_names, frame.image_id, frame.timestamp, visible=visible)

    def _predict(self, frame: Frame, prompt: Prompt):
        embedding = self.embedding(frame)
        with self.stages.time("prompt_decode"):
            logits, scores, object_scores = self.model.decode(embedding, prompt)
        with self.stages.time("postprocess"):
            return self.model.postprocess(logits, scores, frame.width, frame.height, object_scores > 0)

    def awaits_frame(self, prompt: Prompt) -> bool:
        """True when the prompt is newer than every frame kept of its camera: its frame is still on the way
        (dora may deliver a detector's boxes before the camera frame they were computed on)."""
        try:
            newest = self._camera(prompt).newest
        except InputError:
            return False  # answering will say what is wrong
        return is_newer(prompt.timestamp, newest.timestamp)

    def awaits_first_frame(self, prompt: Prompt) -> bool:
        """True while the camera the prompt goes to has sent no frame at all (dora may deliver the first
        boxes before the first frame): nothing to answer it on yet."""
        try:
            name = camera_of(prompt, self.cameras, self._frames)
        except InputError:
            return False  # answering will say what is wrong
        return name in self.cameras and name not in self._frames

    def frame_for(self, prompt: Prompt) -> Frame:
        """The frame the prompt was computed on; the newest one, said out loud, when that is gone."""
        camera = self._camera(prompt)
        if prompt.timestamp is None:  # dora 0.5 carries no timestamps: the newest frame is all we know
            return camera.newest
        frame = camera.find(prompt.timestamp)
        if frame is not None:
            return frame
        newest = camera.newest
        if newest.timestamp is not None:
            lag_ms = (newest.timestamp - prompt.timestamp).total_seconds() * 1e3
            self._say.warning(
                prompt.input_id, "input '%s': no kept frame has the prompt's timestamp (newest frame is %+.0f ms "
                "from it); answering on the newest frame. Forward the image's metadata (its `timestamp`) on "
                "prompts to segment the exact frame.", prompt.input_id, lag_ms)
        return newest

    def embedding(self, frame: Frame):
        return self._embeddings.get(frame, lambda: self._encode(frame))

    def _encode(self, frame: Frame):
        with self.stages.time("encode"):
            return self.model.encode(frame)

    def _camera(self, prompt: Prompt) -> RecentByTime[Frame]:
        name = camera_of(prompt, self.cameras, self._frames)
        if name in self._frames:
            return self._frames[name]
        if name in self.cameras:
            raise InputError(prompt.input_id, f"no frame of camera input '{name}' has arrived; the prompt is dropped")
        known = ", ".join(self._frames) or "none yet"
        raise InputError(prompt.input_id, f"image_id {name[:60]!r} names no camera input (cameras: {known})")
