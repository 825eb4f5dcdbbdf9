"""The engine on its own (no dora): which frame a prompt lands on, and that each frame is encoded once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from dora_sam2.domain import Frame, InputError, Prompt
from dora_sam2.engine import Segmenter

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


class Recording:
    """The real model, with a record of which frames it encoded; the rest of engine.ImageModel is the model's."""

    def __init__(self, model):
        self.model, self.encoded = model, []

    def encode(self, frame):
        self.encoded.append(frame)
        return self.model.encode(frame)

    def __getattr__(self, name):
        return getattr(self.model, name)


def frames(n, camera="image", size=(48, 64), start=T0):
    rng = np.random.default_rng(0)
    return [Frame(camera, rng.integers(0, 255, (*size, 3), dtype=np.uint8), start + timedelta(milliseconds=33 * i),
                  "rgb8") for i in range(n)]


def box(timestamp=None, image_id=None, n=1):
    return Prompt.from_boxes("bbox", np.tile([[2, 2, 30, 30]], (n, 1)), timestamp=timestamp, image_id=image_id)


@pytest.fixture
def recording(model):
    return Recording(model)


def test_prompt_lands_on_the_frame_it_was_computed_on(recording):
    segmenter = Segmenter(recording)
    stream = frames(5)
    for f in stream:
        segmenter.add_frame(f)
    # dora carries timestamps to about 1 us: a forwarded stamp a few us off still names its frame
    frame, answer = segmenter.segment(box(stream[1].timestamp + timedelta(microseconds=3)))
    assert recording.encoded == [stream[1]] and frame is stream[1]
    assert answer.timestamp == stream[1].timestamp and answer.image_id == "image"


def test_each_frame_is_encoded_once_however_many_prompts(recording):
    segmenter = Segmenter(recording)
    stream = frames(3)
    for f in stream:
        segmenter.add_frame(f)
    for _ in range(3):
        segmenter.segment(box(stream[2].timestamp, n=2))
    segmenter.segment(box(stream[0].timestamp))
    assert recording.encoded == [stream[2], stream[0]]
    assert segmenter.stages.calls["encode"] == 2 and segmenter.stages.calls["prompt_decode"] == 4


def test_the_embeddings_of_the_two_frames_read_last_are_kept(recording):
    """Frame 2 read again just before frame 1 arrives: frame 0, read longer ago, is the one let go."""
    segmenter = Segmenter(recording, embeddings_kept=2)
    stream = frames(3)
    for f in stream:
        segmenter.add_frame(f)
    for i in (2, 0, 2, 1, 2, 0):
        segmenter.segment(box(stream[i].timestamp))
    assert recording.encoded == [stream[2], stream[0], stream[1], stream[0]]


def test_a_prompt_whose_frame_is_gone_is_answered_on_the_newest_and_said(recording, caplog):
    segmenter = Segmenter(recording, frame_buffer=3)
    stream = frames(6)
    for f in stream:
        segmenter.add_frame(f)
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        _, answer = segmenter.segment(box(stream[0].timestamp))  # evicted: only the last 3 are kept
        segmenter.segment(box(stream[0].timestamp))
    assert answer.timestamp == stream[-1].timestamp
    warnings = [r.getMessage() for r in caplog.records if "no kept frame has the prompt's timestamp" in r.getMessage()]
    assert len(warnings) == 1 and "+165 ms" in warnings[0]  # said once, not once per message


def test_without_timestamps_the_newest_frame_is_used_quietly(recording, caplog):
    segmenter = Segmenter(recording)
    stream = frames(2)
    for f in stream:
        segmenter.add_frame(f)
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        assert segmenter.segment(box(None))[1].timestamp == stream[-1].timestamp
    assert not caplog.records


def test_empty_detection_is_answered_without_encoding(recording):
    segmenter = Segmenter(recording)
    segmenter.add_frame(frames(1)[0])
    _, answer = segmenter.segment(Prompt.from_boxes("bbox", np.zeros((0, 4)), timestamp=T0))
    assert answer.masks.shape == (0, 48, 64) and len(answer.scores) == 0
    assert recording.encoded == []


def test_cameras_are_kept_apart(recording):
    segmenter = Segmenter(recording, cameras=("image_left", "image_right"))
    right = frames(1, "image_right", (24, 32))[0]
    left = frames(1, "image_left", (48, 64))[0]
    segmenter.add_frame(right)
    segmenter.add_frame(left)
    assert segmenter.segment(box(T0, image_id="image_right"))[1].masks.shape == (1, 24, 32)
    assert segmenter.segment(box(T0))[1].masks.shape == (1, 48, 64)  # the default camera, not the first seen


def test_a_prompt_before_its_cameras_first_frame_awaits_it(recording):
    segmenter = Segmenter(recording, cameras=("image", "image_rear"))
    assert segmenter.awaits_first_frame(box(T0)) and segmenter.awaits_first_frame(box(T0, image_id="image_rear"))
    assert not segmenter.awaits_first_frame(box(T0, image_id="image_top"))  # no such camera: nothing to await
    segmenter.add_frame(frames(1)[0])
    assert not segmenter.awaits_first_frame(box(T0)) and segmenter.awaits_first_frame(box(T0, image_id="image_rear"))


@pytest.mark.parametrize("cameras,prepare,prompt,message", [
    ((), lambda s: None, box(T0), "before any image"),
    (("image",), lambda s: None, box(T0), "no frame of camera input 'image' has arrived"),
    ((), lambda s: s.add_frame(frames(1)[0]), box(T0, image_id="image_rear"), "names no camera input .cameras: image"),
    (("image", "image_top"), lambda s: None, box(T0, image_id="image_rear"), "cameras: image, image_top"),
])
def test_prompts_that_cannot_be_placed_are_input_errors(recording, cameras, prepare, prompt, message):
    segmenter = Segmenter(recording, cameras=cameras)
    prepare(segmenter)
    with pytest.raises(InputError, match=message):
        segmenter.segment(prompt)


def test_a_box_wholly_outside_the_frame_is_dropped_in_one_line(recording, caplog):
    """Clipped, [700, 100, 800, 200] on a 64x48 frame would be a line on its edge, and SAM2 would
    answer it with a mask anyway. The boxes inside are answered as usual, in their order."""
    segmenter = Segmenter(recording)
    segmenter.add_frame(frames(1)[0])
    prompt = Prompt.from_boxes("bbox", np.array([[2, 2, 30, 30], [700, 10, 800, 20], [10, 5, 60, 40],
                                                 [-50, -40, 0, 10]]), ["a", "out", "b", "out too"])
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        _, answer = segmenter.segment(prompt)
    assert answer.class_names == ("a", "b") and len(answer.masks) == 2
    [record] = caplog.records
    assert record.getMessage() == ("input 'bbox': boxes [[700.0, 10.0, 800.0, 20.0], [-50.0, -40.0, 0.0, 10.0]] "
                                   "lie wholly outside the 64x48 frame: dropped")
