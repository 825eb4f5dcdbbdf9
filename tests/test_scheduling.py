"""What gets answered, without dora: batches of frames and prompts as dora would deliver them behind a
busy model, through the real schedulers, engine and tracker. Latest wins by default; EVERY_FRAME answers
everything in order. Nothing here depends on how fast the machine is: a batch is given, not raced."""

from __future__ import annotations

import dataclasses

import pytest

from support.colour_scenes import GREEN, RED, ColourSegmenter, detect, render
from dora_sam2.domain import Prompt
from dora_sam2.engine import Segmenter
from dora_sam2.scheduling import RESET, SchedulePolicy, SegmentScheduler, TrackScheduler
from dora_sam2.stats import Stages, Stats
from dora_sam2.tracking import LostAfter, TrackPolicy


def stats() -> Stats:
    return Stats(Stages(), every_s=0)


# ---------------------------------------------------------------------------- segment mode


@pytest.fixture
def segment(model):
    def make(every_frame=False):
        counts = stats()
        return SegmentScheduler(Segmenter(model, stages=counts.stages), counts, every_frame), counts
    return make


def boxes_on(frame, n=1):
    return detect(frame, {RED: (10, 10), GREEN: (60, 40)} if n == 2 else {RED: (10, 10)})


def test_segment_live_answers_each_sources_newest_prompt_and_counts_the_rest(segment):
    scheduler, counts = segment()
    frames = [render(i, {RED: (10, 10)}) for i in range(3)]
    clicks = detect(frames[1], {RED: (10, 10)})
    clicks = type(clicks).from_points("points", [[15, 15]], [1], timestamp=frames[1].timestamp)
    answers = list(scheduler.handle([*frames, *map(boxes_on, frames), clicks]))
    assert [(a[0].timestamp, a[1].class_names) for a in answers] == [(frames[2].timestamp, ("thing",)),
                                                                (frames[1].timestamp, ("",))]
    assert counts.skipped == 2


def test_segment_every_frame_answers_every_prompt_in_order(segment):
    scheduler, counts = segment(every_frame=True)
    frames = [render(i, {RED: (10, 10)}) for i in range(3)]
    answers = list(scheduler.handle([*frames, *map(boxes_on, frames)]))
    assert [frame.timestamp for frame, _ in answers] == [f.timestamp for f in frames]
    assert counts.skipped == 0


def test_segment_every_frame_holds_prompts_from_the_first_whose_frame_is_on_the_way(segment):
    scheduler, counts = segment(every_frame=True)
    frames = [render(i, {RED: (10, 10)}) for i in range(3)]
    first = list(scheduler.handle([frames[0], *map(boxes_on, frames)]))  # frames 1 and 2 come later
    assert [frame.timestamp for frame, _ in first] == [frames[0].timestamp]
    rest = list(scheduler.handle(frames[1:]))
    assert [frame.timestamp for frame, _ in rest] == [frames[1].timestamp, frames[2].timestamp]
    assert counts.skipped == 0 and list(scheduler.finish()) == []


# ---------------------------------------------------------------------------- track mode


def track(every_frame=False, cameras=("image",), box_inputs=(), clock=None, **policy):
    counts = stats()
    tracks = TrackPolicy(lost=LostAfter(100, frames=True), detector_misses=0, revive_seconds=0)
    scheduler = TrackScheduler(ColourSegmenter(), counts, cameras, SchedulePolicy(tracks, every_frame, **policy),
                               box_inputs=box_inputs, **({"clock": clock} if clock else {}))
    return scheduler, counts


class Clock:
    """The node's clock, moved by the test: a wait passes when the test says so, however slow the machine."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_track_live_answers_each_cameras_newest_frame_and_counts_the_rest():
    scheduler, counts = track()
    frames = [render(i, {RED: (10 + i, 10)}) for i in range(4)]
    answers = list(scheduler.handle([frames[0], detect(frames[0], {RED: (10, 10)}), *frames[1:]]))
    assert [(frame.timestamp, masks.track_ids) for frame, masks in answers] == [(frames[3].timestamp, (1,))]
    assert counts.skipped == 3


def test_track_every_frame_answers_every_frame_in_order():
    scheduler, counts = track(every_frame=True)
    frames = [render(i, {RED: (10 + i, 10)}) for i in range(4)]
    answers = list(scheduler.handle([frames[0], detect(frames[0], {RED: (10, 10)}), *frames[1:]]))
    # boxes delivered after their frame apply to the next frame of their camera
    assert [(frame.timestamp, masks.track_ids) for frame, masks in answers] == [
        (frames[0].timestamp, ()), (frames[1].timestamp, (1,)), (frames[2].timestamp, (1,)),
        (frames[3].timestamp, (1,))]
    assert counts.skipped == 0 and counts.tracking == {"started": 1, "ended": 0, "revived": 0, "live": 1}


def test_track_detections_wait_for_their_own_frame():
    scheduler, _ = track(every_frame=True)
    frames = [render(i, {RED: (10, 10)}) for i in range(3)]
    early = detect(frames[2], {RED: (10, 10)})  # delivered before frames 1 and 2
    answers = list(scheduler.handle([frames[0], early, frames[1], frames[2]]))
    assert [masks.track_ids for _, masks in answers] == [(), (), (1,)]


def test_track_a_click_waits_for_the_frame_it_was_made_on():
    """EVERY_FRAME behind a backlog: a click made on frame 2 (the click page shows the camera's newest
    frame) comes before the node has answered frames 1 and 2. It starts its track on frame 2, where the
    square it names was; on frame 1 the square is 15 pixels to the left and the click on nothing."""
    scheduler, counts = track(every_frame=True)
    frames = [render(i, {RED: (10 + 15 * i, 10)}) for i in range(4)]
    click = Prompt.from_points("points", [[44, 14]], [1], timestamp=frames[2].timestamp)
    answers = list(scheduler.handle([frames[0], click, *frames[1:]]))
    assert [(frame.timestamp, masks.track_ids) for frame, masks in answers] == [
        (frames[0].timestamp, ()), (frames[1].timestamp, ()), (frames[2].timestamp, (1,)),
        (frames[3].timestamp, (1,))]
    assert answers[2][1].masks[0][10:18, 40:48].all() and counts.skipped == 0


def test_track_reset_mid_batch_answers_the_frames_before_it_with_their_tracks():
    scheduler, _ = track(every_frame=True)
    frames = [render(i, {RED: (10, 10)}) for i in range(4)]
    answers = list(scheduler.handle([detect(frames[0], {RED: (10, 10)}), frames[0], frames[1], RESET,
                                     frames[2], detect(frames[3], {GREEN: (60, 40)}), frames[3]]))
    assert [masks.track_ids for _, masks in answers] == [(1,), (1,), (), (2,)]
    assert scheduler.trackers["image"].started == 2


def moving(count: int) -> list:
    """A red square moving 5 pixels a frame: each frame's detection is its own."""
    return [render(i, {RED: (10 + 5 * i, 10)}) for i in range(count)]


def test_track_every_frame_holds_a_cameras_first_frames_for_its_detectors_first_boxes():
    """EVERY_FRAME with a detector wired: frames that come before the detector's first message wait for it
    (a labelling run would write them without objects), then are answered in order, the boxes on the
    frame they were computed on and the track followed through the rest."""
    clock = Clock()
    scheduler, counts = track(every_frame=True, box_inputs=("bbox",), clock=clock)
    frames = moving(4)
    assert list(scheduler.handle(frames[:3])) == []
    assert scheduler.wake_in() == 10.0  # FIRST_BOXES_SECONDS' default, from the first held frame
    clock.now += 4
    answers = list(scheduler.handle([detect(frames[0], {RED: (10, 10)}), frames[3]]))
    assert [(frame.timestamp, masks.track_ids) for frame, masks in answers] == [
        (frame.timestamp, (1,)) for frame in frames]
    first = answers[0][1]
    assert first.timestamp == frames[0].timestamp and first.masks[0][10:10 + 8, 10:10 + 8].all()
    assert scheduler.wake_in() is None and counts.skipped == 0
    clock.now += 60  # the camera waits once, at its start: later frames are answered as they come
    assert [masks.track_ids for _, masks in scheduler.handle(moving(6)[4:])] == [(1,), (1,)]


def test_track_first_boxes_that_came_before_any_frame_hold_nothing():
    scheduler, _ = track(every_frame=True, box_inputs=("bbox",), clock=Clock())
    frames = moving(2)
    answers = list(scheduler.handle([detect(frames[0], {RED: (10, 10)}), frames[0], frames[1]]))
    assert [masks.track_ids for _, masks in answers] == [(1,), (1,)]


def test_track_held_frames_are_answered_without_boxes_once_the_wait_passes_in_one_line(caplog):
    """A detector that never speaks: its camera's frames wait FIRST_BOXES_SECONDS of the node's clock,
    then are answered in order without boxes, with one line naming the input and the setting; later
    frames wait no more, and boxes that come at last are followed from the next frame."""
    clock = Clock()
    scheduler, _ = track(every_frame=True, box_inputs=("bbox",), clock=clock, first_boxes_seconds=3.0)
    frames = moving(5)
    with caplog.at_level("INFO", logger="dora_sam2"):
        assert list(scheduler.handle(frames[:1])) == []
        clock.now += 2
        assert list(scheduler.handle(frames[1:2])) == [] and scheduler.wake_in() == 1.0
        clock.now += 1  # the adapter's wake: a batch with no event in it
        answers = list(scheduler.handle([]))
        assert [(frame.timestamp, masks.track_ids) for frame, masks in answers] == [
            (frames[0].timestamp, ()), (frames[1].timestamp, ())]
        assert scheduler.wake_in() is None
        assert [masks.track_ids for _, masks in scheduler.handle(frames[2:3])] == [()]
        late = list(scheduler.handle([detect(frames[2], {RED: (20, 10)}), *frames[3:]]))
    assert [masks.track_ids for _, masks in late] == [(1,), (1,)]
    [line] = [r.getMessage() for r in caplog.records]
    assert "input 'image'" in line and "input 'bbox'" in line and "FIRST_BOXES_SECONDS=3 s" in line, line
    assert "2 frames" in line and "without" in line, line


def test_track_frames_held_for_first_boxes_are_bounded_by_frame_buffer(caplog):
    scheduler, _ = track(every_frame=True, box_inputs=("bbox",), clock=Clock(), frames_held=2)
    frames = moving(4)
    with caplog.at_level("INFO", logger="dora_sam2"):
        early = list(scheduler.handle(frames[:3]))  # the third pushes the first out, answered without boxes
        rest = list(scheduler.handle([detect(frames[1], {RED: (15, 10)}), frames[3]]))
    assert [(frame.timestamp, masks.track_ids) for frame, masks in early] == [(frames[0].timestamp, ())]
    assert [(frame.timestamp, masks.track_ids) for frame, masks in rest] == [
        (frame.timestamp, (1,)) for frame in frames[1:]]
    [line] = [r.getMessage() for r in caplog.records]
    assert "FRAME_BUFFER=2" in line and "input 'bbox'" in line, line


def test_track_frames_still_held_when_the_stream_ends_are_answered():
    scheduler, _ = track(every_frame=True, box_inputs=("bbox",), clock=Clock())
    frames = moving(2)
    assert list(scheduler.handle(frames)) == []
    assert [frame.timestamp for frame, _ in scheduler.finish()] == [f.timestamp for f in frames]


class RedFinder:
    """SAM 3's part in these scenes: every phrase finds the red square."""

    reads_exemplars = True

    def fall_back_to_float32(self) -> bool:
        return False

    def find(self, frame, phrases, min_score, limit):
        import numpy as np

        from dora_sam2.domain import Masks

        mask = (frame.rgb == RED).all(axis=-1)
        ys, xs = np.nonzero(mask)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        return Masks(mask[None], np.ones(1, np.float32), phrases.texts[:1], frame.image_id, frame.timestamp,
                     boxes=box)


def test_track_frames_are_not_held_while_phrases_are_the_detector():
    """A `bbox` input wired beside phrases (SAM 3): the phrases are found on each frame itself, so no
    frame waits for the boxes, which may never come."""
    from dora_sam2.domain import Phrases
    from dora_sam2.phrases import PhraseSearch

    counts = stats()
    tracks = TrackPolicy(lost=LostAfter(100, frames=True), detector_misses=0, revive_seconds=0)
    scheduler = TrackScheduler(ColourSegmenter(), counts, ("image",), SchedulePolicy(tracks, True),
                               search=PhraseSearch(RedFinder(), "sam3", Phrases(("cup",))), clock=Clock(),
                               box_inputs=("bbox",))
    answers = list(scheduler.handle(moving(2)))
    assert [(masks.track_ids, masks.class_names) for _, masks in answers] == [((1,), ("cup",))] * 2
    assert scheduler.wake_in() is None


@pytest.mark.parametrize("every_frame,box_inputs,seconds", [
    (False, ("bbox",), 10.0),  # live: the newest frame is answered at once, as before
    (True, (), 10.0),  # no detector wired: nothing to wait for
    (True, ("boxes2d",), 0.0),  # FIRST_BOXES_SECONDS=0
])
def test_track_frames_are_not_held_live_without_a_detector_or_with_no_wait(every_frame, box_inputs, seconds):
    scheduler, _ = track(every_frame=every_frame, box_inputs=box_inputs, clock=Clock(), first_boxes_seconds=seconds)
    frames = moving(2)
    answers = list(scheduler.handle(frames))
    assert [frame.timestamp for frame, _ in answers] == [f.timestamp for f in frames[-1 if not every_frame else 0:]]
    assert scheduler.wake_in() is None


def test_track_prompts_for_an_unknown_camera_are_one_line(caplog):
    scheduler, _ = track(every_frame=True, cameras=("image",))
    frame = render(0, {RED: (10, 10)})
    prompt = detect(frame, {RED: (10, 10)})
    prompt = dataclasses.replace(prompt, image_id="image_rear")
    with caplog.at_level("WARNING", logger="dora_sam2"):
        answers = list(scheduler.handle([prompt, frame]))
    assert [masks.track_ids for _, masks in answers] == [()]
    [record] = caplog.records
    assert "image_id 'image_rear' names no camera input" in record.getMessage()


# ---------------------------------------------------------------------------- README promises, each held


def test_classes_and_min_confidence_drop_detections_in_segment_mode(segment):
    """CLASSES keeps only the named labels, MIN_CONFIDENCE only the surer boxes; both counted as filtered."""
    import numpy as np

    from dora_sam2.domain import Prompt
    from dora_sam2.scheduling import DetectionFilter
    from dora_sam2.settings import Settings

    settings = Settings.from_env({"CLASSES": " cup, ball ,", "MIN_CONFIDENCE": "0.5"})
    assert settings.classes == {"cup", "ball"} and settings.min_confidence == 0.5
    counts = stats()
    scheduler, _ = segment()
    scheduler = SegmentScheduler(scheduler.segmenter, counts,
                                 detections=DetectionFilter(settings.min_confidence, settings.classes))
    frame = render(0, {RED: (10, 10)})
    boxes = np.array([[5, 5, 30, 30], [40, 40, 60, 60], [10, 50, 30, 70], [70, 10, 90, 30]], np.float32)
    prompt = Prompt.from_boxes("bbox", boxes, ["cup", "person", "ball", "cup"], timestamp=frame.timestamp,
                               confidences=np.array([0.9, 0.9, 0.7, 0.2], np.float32))
    [(_, masks)] = list(scheduler.handle([frame, prompt]))
    assert masks.class_names == ("cup", "ball") and counts.filtered == 2


def test_a_box_at_exactly_min_confidence_is_kept():
    """MIN_CONFIDENCE drops the boxes under it: one at the bound is kept, as SAM 3's instances are
    (test_sam3.py holds them to the same rule)."""
    import numpy as np

    from dora_sam2.domain import Prompt
    from dora_sam2.scheduling import DetectionFilter

    boxes = np.array([[5, 5, 30, 30], [40, 40, 60, 60]], np.float32)
    prompt = Prompt.from_boxes("bbox", boxes, ["at", "under"], confidences=np.array([0.5, 0.499], np.float32))
    counts = stats()
    kept = DetectionFilter(min_confidence=0.5)(prompt, counts)
    assert kept.class_names == ("at",) and counts.filtered == 1


def test_several_cameras_in_track_mode_keep_ids_apart_and_remove_finds_the_camera():
    from dora_sam2.scheduling import Remove

    scheduler, _ = track(every_frame=True, cameras=("image_left", "image_right"))
    left = [dataclasses.replace(render(i, {RED: (10, 10)}), image_id="image_left") for i in range(3)]
    right = [dataclasses.replace(render(i, {GREEN: (60, 40)}), image_id="image_right") for i in range(3)]
    on = {"image_left": dataclasses.replace(detect(left[0], {RED: (10, 10)}), image_id="image_left"),
          "image_right": dataclasses.replace(detect(right[0], {GREEN: (60, 40)}), image_id="image_right")}
    answers = list(scheduler.handle([on["image_left"], on["image_right"], left[0], right[0], left[1], right[1]]))
    ids = {(frame.image_id, frame.timestamp): masks.track_ids for frame, masks in answers}
    assert ids[("image_left", left[1].timestamp)] == (1,) and ids[("image_right", right[1].timestamp)] == (2,)
    answers = list(scheduler.handle([Remove((2,)), left[2], right[2]]))  # ends the right camera's track only
    assert [(frame.image_id, masks.track_ids) for frame, masks in answers] == [("image_left", (1,)),
                                                                               ("image_right", ())]
