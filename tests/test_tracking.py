"""The Tracker's bookkeeping: ids, association, loss, caps, clicks, reset.

SAM2's masks only follow objects with trained weights, and none can be downloaded here. So these tests
drive the real Tracker with `ColourSegmenter`, a stand-in that has the streaming model's interface and
really segments: a prompt picks the colour under it, tracking finds that colour's pixels in each new
frame. The real model's streaming maths is held to transformers' in test_video.py, and its plumbing is
run end to end in test_track_dataflows.py.
"""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import sys
import weakref
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from support.colour_scenes import BLUE, GREEN, H, RED, SIZE, T0, W, ColourSegmenter, detect, render
from dora_sam2.domain import FOREGROUND, Frame, Prompt
from dora_sam2.tracking import LostAfter, Track, Tracker, TrackPolicy


def test_the_tracker_and_its_schedulers_are_read_without_torch():
    """The tracker's bookkeeping (and these tests' stand-in model) import neither torch nor transformers:
    the model is behind the streaming protocol (streaming.py)."""
    code = ("import sys; sys.path.insert(0, 'tests'); import dora_sam2.tracking, dora_sam2.scheduling, "
            "support.colour_scenes; print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr

def ids_by_colour(frame: Frame, masks) -> dict:
    out = {}
    for track_id, mask in zip(masks.track_ids, masks.masks):
        if mask.any():
            out[tuple(int(c) for c in frame.rgb[mask][0])] = track_id
    return out


def plain(lost: LostAfter = LostAfter(5, frames=True), **kw) -> TrackPolicy:
    """The lifecycle at its plainest: SAM 2 alone ends tracks (no detector misses, no revival) unless a test
    asks for more."""
    return TrackPolicy(**{"max_objects": 8, "lost": lost, "match_iou": 0.3, "detector_misses": 0,
                          "revive_seconds": 0.0, **kw})


def tracker(**kw) -> Tracker:
    return Tracker(ColourSegmenter(), plain(**kw))


def test_objects_keep_their_ids_between_and_across_detections():
    """Detections every 15th frame while two objects move: frames between are answered from memory,
    and each re-detection lands on the track it belongs to."""
    t = tracker()
    seen_ids = set()
    for i in range(46):
        objects = {RED: (5 + i, 10), GREEN: (90 - i, 60)}
        frame = render(i, objects)
        masks = t.step(frame, detect(frame, objects) if i % 15 == 0 else None)
        assert ids_by_colour(frame, masks) == {RED: 1, GREEN: 2}, i
        assert masks.track_ids == (1, 2) and len(masks) == 2
        seen_ids.update(masks.track_ids)
    assert seen_ids == {1, 2} and t.started == 2


def test_crossing_objects_keep_their_ids():
    """Two objects pass each other; a detection fires while they overlap in x."""
    t = tracker()
    for i in range(0, 40, 2):
        objects = {RED: (10 + 2 * i, 30), BLUE: (90 - 2 * i, 36)}
        frame = render(i, objects)
        masks = t.step(frame, detect(frame, objects) if i % 6 == 0 else None)
        assert ids_by_colour(frame, masks) == {RED: 1, BLUE: 2}, i


def test_a_missed_detection_keeps_the_track():
    t = tracker()
    objects = {RED: (10, 10), GREEN: (70, 50)}
    frame = render(0, objects)
    t.step(frame, detect(frame, objects))
    frame = render(1, objects)
    masks = t.step(frame, detect(frame, {RED: (10, 10)}))  # the detector missed green this time
    assert ids_by_colour(frame, masks) == {RED: 1, GREEN: 2}


def test_an_occluded_object_keeps_its_id_and_a_long_lost_one_ends():
    t = tracker()
    frame = render(0, {RED: (10, 10), GREEN: (60, 40)})
    t.step(frame, detect(frame, {RED: (10, 10), GREEN: (60, 40)}))
    for i in range(1, 4):  # green hidden for 3 frames, under the limit of 5
        masks = t.step(render(i, {RED: (10, 10), GREEN: None}))
        assert masks.track_ids == (1, 2) and not masks.masks[1].any()
    objects = {RED: (10, 10), GREEN: (62, 41)}
    frame = render(4, objects)
    masks = t.step(frame, detect(frame, objects))
    assert ids_by_colour(frame, masks) == {RED: 1, GREEN: 2}
    for i in range(5, 10):  # now gone for 5 frames: ended
        masks = t.step(render(i, {RED: (10, 10), GREEN: None}))
    assert [tr.track_id for tr in t.tracks] == [1] and t.ended == 1
    objects = {RED: (10, 10), GREEN: (60, 40)}
    frame = render(10, objects)
    masks = t.step(frame, detect(frame, objects))
    assert ids_by_colour(frame, masks) == {RED: 1, GREEN: 3}  # back, but as a new object: ids are never reused


def test_no_id_without_a_prompt_and_none_before_the_first():
    t = tracker()
    masks = t.step(render(0, {RED: (10, 10)}))
    assert len(masks) == 0 and masks.track_ids == ()
    frame = render(1, {RED: (10, 10)})
    assert t.step(frame, detect(frame, {RED: (10, 10)})).track_ids == (1,)
    for i in range(2, 8):  # a new object walks in, but nobody prompts it
        assert t.step(render(i, {RED: (10, 10), BLUE: (70, 50)})).track_ids == (1,)


def test_max_objects_caps_new_tracks(caplog):
    t = tracker(max_objects=2)
    objects = {RED: (5, 5), GREEN: (40, 40), BLUE: (90, 70)}
    frame = render(0, objects)
    masks = t.step(frame, detect(frame, objects))
    assert masks.track_ids == (1, 2) and "MAX_OBJECTS=2" in caplog.text


def test_detector_label_travels_with_the_track():
    t = tracker()
    objects = {RED: (10, 10)}
    frame = render(0, objects)
    assert t.step(frame, detect(frame, objects, {RED: "cup"})).class_names == ("cup",)
    assert t.step(render(1, objects)).class_names == ("cup",)


def test_clicks_refine_the_object_they_name_or_land_in_and_start_others():
    t = tracker()
    objects = {RED: (10, 10), GREEN: (60, 40)}
    frame = render(0, objects)
    click_red = Prompt.from_points("points", [[15, 15]], [FOREGROUND], class_name="object 0", object_ids=(0,))
    assert t.step(frame, clicks=[click_red]).track_ids == (1,)
    # the page sends object 0's whole point list again: the same track, refined
    again = Prompt.from_points("points", [[15, 15], [20, 20]], [FOREGROUND, FOREGROUND], object_ids=(0,))
    assert t.step(render(1, objects), clicks=[again]).track_ids == (1,)
    # a click with no object id inside green's area starts green; inside red's box refines red
    green = Prompt.from_points("points", [[65, 45]], [FOREGROUND])
    frame = render(2, objects)
    assert ids_by_colour(frame, t.step(frame, clicks=[green])) == {RED: 1, GREEN: 2}
    inside_red = Prompt.from_points("points", [[12, 12]], [FOREGROUND])
    assert t.step(render(3, objects), clicks=[inside_red]).track_ids == (1, 2)


def test_reset_drops_tracks_and_ids_move_on():
    t = tracker()
    objects = {RED: (10, 10)}
    frame = render(0, objects)
    t.step(frame, detect(frame, objects))
    t.reset()
    assert len(t.step(render(1, objects))) == 0
    frame = render(2, objects)
    assert t.step(frame, detect(frame, objects)).track_ids == (2,)


def test_a_failed_frame_does_not_leave_half_started_tracks():
    """Out of memory (or NaN) on the frame that starts an object: the next frame goes on cleanly."""

    class FailsOnce(ColourSegmenter):
        failed = False

        def prompt(self, frame, prompt):
            if not self.failed:
                self.failed = True
                raise MemoryError("out of memory")
            return super().prompt(frame, prompt)

    t = Tracker(FailsOnce(), plain(max_objects=16))
    objects = {RED: (10, 10)}
    frame = render(0, objects)
    with pytest.raises(MemoryError):
        t.step(frame, detect(frame, objects))
    assert t.tracks == [] and t.started == 0
    assert len(t.step(render(1, objects))) == 0
    frame = render(2, objects)
    assert ids_by_colour(frame, t.step(frame, detect(frame, objects))) == {RED: 1}  # the failed frame spent no id


def test_a_frame_that_runs_again_in_float32_counts_once():
    """fp16 overflow on a frame: it runs again, and must do what it would have done once. Before the
    tracker planned its frames, the retry counted the detector's misses twice and lost a revived id."""

    class OverflowsOnce(ColourSegmenter):
        overflow, fell_back = False, 0

        def postprocess(self, step, frame, apart=False):
            if self.overflow:
                self.overflow = False
                raise FloatingPointError("the model produced NaN or infinite outputs")
            return super().postprocess(step, frame, apart)

        def fall_back_to_float32(self):
            self.fell_back += 1
            return True

    model = OverflowsOnce()
    t = Tracker(model, plain(lost=LostAfter(2.0), revive_seconds=10.0, detector_misses=2, max_objects=16))
    both = {RED: (10, 10), GREEN: (70, 50)}
    frame = render(0, both)
    t.step(frame, detect(frame, both))
    for i in (1, 2, 3):  # green leaves and ends (lost); red stays
        t.step(render(i, {RED: (10, 10)}))
    assert [tr.track_id for tr in t.tracks] == [1]
    frame = render(4, both)  # green is back (revived as #2), red unconfirmed once: and this frame overflows
    model.overflow = True
    masks = t.step(frame, detect(frame, {GREEN: (70, 50)}))
    assert model.fell_back == 1 and masks.track_ids == (1, 2) and (t.started, t.revived) == (2, 1)
    assert [tr.misses for tr in t.tracks] == [1, 0]  # one unconfirming round, counted once


def test_a_box_wholly_outside_the_frame_starts_no_track(caplog):
    t = tracker()
    frame = render(0, {RED: (10, 10)})
    boxes = Prompt.from_boxes("bbox", np.array([[10, 10, 24, 24], [W + 10, 10, W + 40, 40]], np.float32),
                              ["red", "nothing"], timestamp=frame.timestamp)
    with caplog.at_level("WARNING", logger="dora_sam2"):
        masks = t.step(frame, boxes)
    assert masks.track_ids == (1,) and masks.class_names == ("red",) and t.started == 1
    assert ["wholly outside" in r.getMessage() for r in caplog.records] == [True]


def test_a_camera_that_changes_resolution_drops_its_tracks_in_one_line(caplog):
    t = tracker()
    objects = {RED: (10, 10)}
    frame = render(0, objects)
    t.step(frame, detect(frame, objects))
    assert t.step(render(1, objects)).track_ids == (1,)
    bigger = Frame("image", np.zeros((2 * H, 2 * W, 3), np.uint8), T0 + timedelta(seconds=2), "rgb8")
    with caplog.at_level("WARNING", logger="dora_sam2"):
        masks = t.step(bigger)
        again = t.step(bigger)
    assert masks.track_ids == again.track_ids == () and t.ended == 1
    [record] = caplog.records
    assert "changed resolution from 120x90 to 240x180: dropping tracks [1]" in record.getMessage()


# ---------------------------------------------------------------------------- the lifecycle


def with_confidence(prompt: Prompt, confidences) -> Prompt:
    return dataclasses.replace(prompt, confidences=np.asarray(confidences, np.float32))


def test_a_flickering_low_confidence_box_starts_no_track():
    from dora_sam2.scheduling import DetectionFilter, SchedulePolicy, TrackScheduler
    from dora_sam2.stats import Stages, Stats

    stats = Stats(Stages(), every_s=0)
    policy = SchedulePolicy(plain(LostAfter(100, frames=True), max_objects=16), every_frame=True)
    scheduler = TrackScheduler(ColourSegmenter(), stats, ("image",), policy, DetectionFilter(min_confidence=0.5))
    for i in range(0, 30, 3):
        objects = {RED: (10, 10), BLUE: (90, 60)}  # blue: a stray box the detector is unsure of
        frame = render(i, objects)
        boxes = with_confidence(detect(frame, objects, {RED: "cup", BLUE: "stray"}), [0.9, 0.2])
        [(_, masks)] = list(scheduler.handle([boxes, frame]))
        assert masks.class_names == ("cup",) and masks.track_ids == (1,)
    assert stats.filtered == 10


def test_a_track_the_detector_stops_confirming_ends_after_detector_misses_rounds(caplog):
    t = tracker(detector_misses=3, lost=LostAfter(1000, frames=True))
    objects = {RED: (10, 10), GREEN: (70, 50)}
    frame = render(0, objects)
    t.step(frame, detect(frame, objects))
    rounds = []
    with caplog.at_level("INFO", logger="dora_sam2"):
        for i in range(1, 5):  # green is still there for SAM2, but the detector no longer reports it
            frame = render(i, objects)
            rounds.append(t.step(frame, detect(frame, {RED: (10, 10)})).track_ids)
    assert rounds == [(1, 2), (1, 2), (1,), (1,)]  # ended on the 3rd unconfirming round
    assert [r.getMessage() for r in caplog.records if "ended" in r.getMessage()] == [
        "tracks [2] ended: the detector has not confirmed them in 3 rounds"]
    frame = render(5, objects)
    assert t.step(frame, detect(frame, {})).track_ids == (1,)  # an empty round denies nothing


def test_an_object_that_leaves_and_returns_keeps_its_id_within_revive_seconds():
    t = tracker(lost=LostAfter(2.0), revive_seconds=10.0)
    seen = {RED: (10, 10), GREEN: (70, 50)}
    frame = render(0, seen)
    t.step(frame, detect(frame, seen, {GREEN: "cup"}))
    for i in range(1, 5):  # green leaves the frame: not seen for 2 s of camera time, it ends
        masks = t.step(render(i, {RED: (10, 10), GREEN: None}))
    assert masks.track_ids == (1,)
    back = {RED: (10, 10), GREEN: (72, 50)}
    frame = render(8, back)  # 6 s after it ended: within REVIVE_SECONDS
    masks = t.step(frame, detect(frame, back, {GREEN: "cup"}))
    assert ids_by_colour(frame, masks) == {RED: 1, GREEN: 2} and masks.class_names == ("thing", "cup")
    assert (t.started, t.revived) == (2, 1)


@pytest.mark.parametrize("growth, revived", [(6.0, True), (0.0, False)], ids=["REVIVE_REACH_GROWTH=6", "0"])
def test_an_object_back_further_away_the_longer_it_was_gone_keeps_its_id(growth, revived):
    """Green hides at the left and comes out 80 px (4 box diagonals) to the right, 2 s after its track ended
    and 4 s after its last detection: beyond MATCH_REACH (2) of where it was, within 2 + 6 x 4 = 26 diagonals."""
    t = tracker(lost=LostAfter(2.0), revive_seconds=10.0, revive_reach_growth=growth)
    seen = {RED: (90, 10), GREEN: (10, 50)}
    frame = render(0, seen)
    t.step(frame, detect(frame, seen))
    for i in range(1, 4):  # hidden: unseen for 2 s, its track ends
        t.step(render(i, {RED: (90, 10), GREEN: None}))
    back = {RED: (90, 10), GREEN: (90, 50)}
    frame = render(4, back)
    ids = ids_by_colour(frame, t.step(frame, detect(frame, back)))
    assert ids == ({RED: 1, GREEN: 2} if revived else {RED: 1, GREEN: 3}) and t.revived == int(revived)


@pytest.mark.parametrize("growth, kept", [(6.0, True), (0.0, False)], ids=["REVIVE_REACH_GROWTH=6", "0"])
def test_a_hidden_object_back_further_away_keeps_its_live_track(growth, kept):
    """Green hides at the left and its track lives on (LOST_SECONDS=10), unconfirmed by two rounds; it comes
    out 80 px (4 box diagonals) to the right 3 s after its last detection: beyond MATCH_REACH (2) of where it
    was, within 2 + 6 x 3 = 20 diagonals of it. Red, confirmed by every round, reaches no further."""
    t = tracker(lost=LostAfter(10.0), detector_misses=3, revive_reach_growth=growth)
    seen = {RED: (90, 10), GREEN: (10, 50)}
    frame = render(0, seen)
    t.step(frame, detect(frame, seen))
    for i in (1, 2):  # rounds that find red only
        frame = render(i, {RED: (90, 10), GREEN: None})
        t.step(frame, detect(frame, {RED: (90, 10)}))
    assert [(tr.track_id, tr.misses) for tr in t.tracks] == [(1, 0), (2, 2)]
    back = {RED: (90, 10), GREEN: (90, 50)}
    frame = render(3, back)
    ids = ids_by_colour(frame, t.step(frame, detect(frame, back)))
    assert ids == ({RED: 1, GREEN: 2} if kept else {RED: 1, GREEN: 3}) and t.revived == 0


@pytest.mark.parametrize("label, track_ids", [("cup", (1,)), ("bowl", (1, 2))])
def test_a_box_of_another_kind_takes_a_track_only_where_the_detector_last_saw_it(label, track_ids):
    """Red, a "cup", moves 80 px between two rounds and its mask follows it. A box on its mask there, of its
    own kind, is its track; of another kind it is not (a weak mask strays onto neighbours of other kinds
    while its object is hidden), as the box lies far from the track's last detection: a new track starts
    and red's counts a miss."""
    t = tracker(detector_misses=3)
    frame = render(0, {RED: (10, 10)})
    t.step(frame, detect(frame, {RED: (10, 10)}, {RED: "cup"}))
    t.step(render(1, {RED: (90, 60)}))
    frame = render(2, {RED: (90, 60)})
    masks = t.step(frame, detect(frame, {RED: (90, 60)}, {RED: label}))
    assert masks.track_ids == track_ids and t.started == len(track_ids)
    assert t.tracks[0].misses == len(track_ids) - 1 and t.tracks[0].class_name == "cup"


def test_a_track_reaches_further_from_its_last_detection_and_not_less_once_it_ended():
    """REVIVE_REACH_GROWTH=1: green, last detected at 0 s, misses the rounds at 1, 2 and 3 s and ends at the
    third (DETECTOR_MISSES=3); it comes out 108 px (5.5 box diagonals) away at 4 s, within 2 + 1 x 4 = 6
    diagonals of where it was last detected. Grown from its end instead (2 + 1 x 1 = 3), the reach it had
    while live would have shrunk when it ended, and the id been lost."""
    t = tracker(lost=LostAfter(10.0), detector_misses=3, revive_seconds=10.0, revive_reach_growth=1.0)
    seen = {RED: (60, 40), GREEN: (10, 10)}
    frame = render(0, seen)
    t.step(frame, detect(frame, seen))
    for i in (1, 2, 3):
        frame = render(i, {RED: (60, 40), GREEN: None})
        t.step(frame, detect(frame, {RED: (60, 40)}))
    assert [tr.track_id for tr in t.tracks] == [1]
    back = {RED: (60, 40), GREEN: (100, 70)}
    frame = render(4, back)
    assert ids_by_colour(frame, t.step(frame, detect(frame, back))) == {RED: 1, GREEN: 2} and t.revived == 1


def paint(seconds: float, rects: dict) -> Frame:
    """colour -> the xyxy of its pixels in view (any size: a whole object or the sliver of it in view)."""
    rgb = np.zeros((H, W, 3), np.uint8)
    for colour, (x0, y0, x1, y1) in rects.items():
        rgb[y0:y1, x0:x1] = colour
    return Frame("image", rgb, T0 + timedelta(seconds=seconds), "rgb8")


def boxes_of(frame: Frame, rects: dict) -> Prompt:
    return Prompt.from_boxes("bbox", np.array(list(rects.values()), np.float32).reshape(-1, 4), ["thing"] * len(rects),
                             timestamp=frame.timestamp)


def test_an_object_seen_as_a_sliver_is_measured_in_the_size_it_was_detected_whole():
    """Green, 30 px square, is detected whole twice, then (between rounds) slides behind something until a
    6-px corner is all SAM 2 sees of it, then nothing; the next round finds a 6-px corner of it 46 px to the
    right. That is 5.4 sliver diagonals from the track's mask box but 1.8 of the mean of green's size when
    whole and the sliver's: within MATCH_REACH (2), so its track takes it (no growth: its rounds never
    missed it)."""
    t = tracker(lost=LostAfter(10.0), detector_misses=3, revive_reach_growth=0.0)
    whole = {GREEN: (20, 20, 50, 50)}
    for seconds in (0.0, 0.1):
        frame = paint(seconds, whole)
        t.step(frame, boxes_of(frame, whole))
    t.step(paint(0.2, {GREEN: (44, 44, 50, 50)}))
    t.step(paint(0.3, {}))
    assert t.tracks[0].box.tolist() == [44, 44, 50, 50]
    back = {GREEN: (90, 44, 96, 50)}
    frame = paint(0.4, back)
    assert ids_by_colour(frame, t.step(frame, boxes_of(frame, back))) == {GREEN: 1} and t.started == 1


@pytest.mark.parametrize("before, after, heading", [
    ((0, 10, 30, 40), (20, 10, 30, 40), (60, 10, 70, 40)),  # sliding behind something on its right: x2 held
    ((60, 10, 64, 40), (60, 10, 84, 40), (100, 10, 124, 40)),  # sliding out from behind something on its left
    ((0, 0, 20, 20), (10, 5, 30, 25), (30, 15, 50, 35)),  # in the open: both edges move together
    ((40, 40, 60, 60), (30, 30, 70, 70), (30, 30, 70, 70)),  # growing about its centre: it stays where it is
])
def test_a_last_detection_heads_on_as_a_whole_box_at_its_object_s_speed(before, after, heading):
    """Two detections 1 s apart; 2 s after the second, the box is where the object would be: moved whole at
    the speed of the edge not held by what hides it, never crossed over into a box that grows on its own."""
    track = Track(1, "thing", None, np.array(before, float), np.array(before, float), 0.0)
    track.detected(np.array(before, float), 0.0)
    track.detected(np.array(after, float), 1.0)
    np.testing.assert_allclose(track.heading(3.0), heading)


def test_a_late_round_prompts_where_its_object_has_moved_to_by_now():
    """Green moves 100 px a second. Its first round lands on time; the next two, from a detector slower
    than the camera, land 0.1 s and 0.2 s after the frames they were computed on, stamped with those frames.
    Where green was then holds none of it now (a 14-px square 10-20 px on), and a box there would show SAM 2
    the background. Timed as of its own frame, each round moves its box to where the track is heading now,
    onto green: it stays tracked, under its id."""
    t = tracker()

    def green(seconds: float) -> dict:
        x = 10 + round(100 * seconds)
        return {GREEN: (x, 30, x + 14, 44)}

    first = paint(0.0, green(0.0))
    t.step(first, boxes_of(first, green(0.0)))
    lands = {0.2: 0.1, 0.6: 0.4}  # the frame a round lands on: the frame it was computed on
    for seconds in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        frame = paint(seconds, green(seconds))
        computed = lands.get(seconds)
        prompt = boxes_of(paint(computed, green(computed)), green(computed)) if computed is not None else None
        assert ids_by_colour(frame, t.step(frame, prompt)) == {GREEN: 1}, seconds
    assert t.started == 1


@pytest.mark.parametrize("stamp, seen", [
    (9.5, 9.5),  # half a second before the newest frame
    (10.0, 10.0),  # the newest frame's own
    (10.5, 10.0),  # ahead of the newest frame: not yet come, nothing to go back to
    (10.0 - 61, 10.0),  # further back than a jump (CLOCK_JUMP_SECONDS, 60): not this stretch of steady time
    (None, 10.0),  # unstamped
])
def test_a_stamp_before_the_newest_frame_is_placed_as_long_before_in_steady_time(stamp, seen):
    from dora_sam2.tracking import CameraClock

    clock = CameraClock(jump=60)
    for seconds in (0, 5, 3600 * 24 * 365, 3600 * 24 * 365 + 5):  # steady time 10 s, after a jump of a year
        clock.tick(T0 + timedelta(seconds=seconds))
    stamped = None if stamp is None else T0 + timedelta(days=365, seconds=stamp - 5)
    assert clock.at(stamped) == pytest.approx(seen)


def test_an_ended_track_is_looked_for_where_its_last_detection_is_heading_by_now():
    """Green moves 10 px a second to the right; the rounds at 2, 3 and 4 s miss it (hidden) and its track
    ends (DETECTOR_MISSES=3). At 9 s it comes out where it would be had it gone on: there, not where it was
    heading when its track ended (at 4 s: 50 px, 2.5 diagonals, behind), its id comes back. No reach growth:
    only the heading finds it."""
    t = tracker(lost=LostAfter(10.0), detector_misses=3, revive_seconds=10.0, revive_reach_growth=0.0)
    for i in (0, 1):
        seen = {GREEN: (5 + 10 * i, 40)}
        frame = render(i, seen)
        t.step(frame, detect(frame, seen))
    for i in (2, 3, 4):
        frame = render(i, {GREEN: None, RED: (100, 5)})
        t.step(frame, detect(frame, {RED: (100, 5)}))
    assert [tr.track_id for tr in t.tracks] == [2]
    back = {GREEN: (95, 40), RED: (100, 5)}
    frame = render(9, back)
    assert ids_by_colour(frame, t.step(frame, detect(frame, back))) == {GREEN: 1, RED: 2} and t.revived == 1


def test_an_ended_track_that_may_come_back_lets_go_of_its_memory():
    """Up to MAX_ENDED_TRACKS ended tracks are kept for their ids to come back, by their boxes: none keeps
    its memory (SAM 2's memory is megabytes an object at 1024), a revived one starts it anew."""
    t = tracker(lost=LostAfter(1.0), revive_seconds=10.0)
    frame = render(0, {GREEN: (10, 10)})
    t.step(frame, detect(frame, {GREEN: (10, 10)}))
    memory = weakref.ref(t.tracks[0].memory)
    for i in (1, 2):
        t.step(render(i, {GREEN: None}))
    gc.collect()
    assert t.tracks == [] and t.ended == 1 and memory() is None
    frame = render(3, {GREEN: (10, 10)})
    assert ids_by_colour(frame, t.step(frame, detect(frame, {GREEN: (10, 10)}))) == {GREEN: 1} and t.revived == 1


@pytest.mark.parametrize("revive_seconds, back_at", [(10.0, 20), (0.0, 5)], ids=["18 s after", "REVIVE_SECONDS=0"])
def test_an_object_that_returns_after_revive_seconds_gets_a_new_id(revive_seconds, back_at):
    t = tracker(lost=LostAfter(2.0), revive_seconds=revive_seconds)
    seen = {RED: (10, 10), GREEN: (70, 50)}
    frame = render(0, seen)
    t.step(frame, detect(frame, seen))
    for i in range(1, 4):
        t.step(render(i, {RED: (10, 10), GREEN: None}))
    frame = render(back_at, seen)  # it ended at 2 s
    assert ids_by_colour(frame, t.step(frame, detect(frame, seen))) == {RED: 1, GREEN: 3} and t.revived == 0


def test_remove_ends_exactly_the_named_tracks_and_they_do_not_come_back():
    t = tracker(revive_seconds=10.0)
    objects = {RED: (10, 10), GREEN: (70, 50), BLUE: (40, 60)}
    frame = render(0, objects)
    t.step(frame, detect(frame, objects))
    assert t.remove([2, 9]) == [2]
    frame = render(1, objects)
    masks = t.step(frame, detect(frame, objects))  # green detected again: a new object now
    assert ids_by_colour(frame, masks) == {RED: 1, BLUE: 3, GREEN: 4}


def test_a_poor_mask_does_not_duplicate_its_object():
    """A detection is matched by the track's last prompt box too. Here the detector's box is far larger
    than the mask SAM2 makes of it (IoU 0.05, under MATCH_IOU): matched by its mask alone, every round
    would start another track."""
    t = tracker(lost=LostAfter(1000, frames=True))
    box = Prompt.from_boxes("bbox", np.array([[0, 0, 60, 60]], np.float32), ["crate"])
    for i in range(4):
        frame = render(i, {GREEN: (24, 24)})
        masks = t.step(frame, dataclasses.replace(box, timestamp=frame.timestamp))
        assert masks.track_ids == (1,) and masks.masks[0].sum() == SIZE * SIZE


# ---------------------------------------------------------------------------- camera clocks that step


def at(frame: Frame, stamp: datetime) -> Frame:
    return dataclasses.replace(frame, timestamp=stamp)


@pytest.mark.parametrize("jump", ["years ahead", "an hour back"])
def test_a_camera_clock_that_jumps_does_not_keep_a_lost_track_alive(jump, caplog):
    """One frame stamped years ahead on which the object is seen (then the clock comes back), or an NTP
    step back after it was seen: read in raw camera time its age goes negative, and the track would hold
    its MAX_OBJECTS slot for years (or an hour). Ages go on in the camera's steady time: it ends after
    LOST_SECONDS (2 s) of frames, and the jump is said."""
    t = tracker(lost=LostAfter(2.0), revive_seconds=0.0)
    both, red = {RED: (10, 10), GREEN: (70, 50)}, {RED: (10, 10)}
    frame = render(0, both)
    t.step(frame, detect(frame, both))
    if jump == "years ahead":
        t.step(at(render(0, both), T0 + timedelta(days=3650, seconds=1)))
        hidden = [T0 + timedelta(seconds=s) for s in (2, 3, 4, 5)]
    else:
        hidden = [T0 - timedelta(hours=1) + timedelta(seconds=s) for s in (1, 2, 3, 4)]
    with caplog.at_level("WARNING", logger="dora_sam2"):
        answers = [t.step(at(render(0, red), stamp)).track_ids for stamp in hidden]  # green has left
    assert answers == [(1, 2), (1, 2), (1, 2), (1,)]  # lost at 2 s of steady time, after that frame's answer
    jumps = [r.getMessage() for r in caplog.records if "clock jumped" in r.getMessage()]
    assert len(jumps) == 1 and "CLOCK_JUMP_SECONDS=60" in jumps[0]


def test_steady_time_follows_the_camera_between_jumps():
    from dora_sam2.tracking import CameraClock

    clock = CameraClock(jump=60)
    for seconds, expected in [(0, 0.0), (1.5, 1.5), (30, 30.0), (3600 * 24 * 365, 30.0), (3600 * 24 * 365 + 2, 32.0),
                              (10, 32.0), (11, 33.0)]:
        clock.tick(T0 + timedelta(seconds=seconds))
        assert clock.now == pytest.approx(expected), seconds


def test_tracks_ended_by_clicks_alone_are_forgotten_and_bounded():
    """Tracking by clicks only (no detector ever): ended tracks are still forgotten after REVIVE_SECONDS,
    and at most MAX_ENDED_TRACKS are remembered however many end at once."""
    t = tracker(lost=LostAfter(0.5), revive_seconds=5.0, max_ended=3, max_objects=64)
    remembered = []
    for i in range(3000):
        frame = render(i, {RED: (10, 10)} if i % 2 == 0 else {})
        click = Prompt.from_points("points", np.array([[12, 12]], np.float32), [FOREGROUND])
        t.step(frame, None, [click] if i % 2 == 0 else [])  # a new object each time: it is lost at once
        remembered.append(len(t._ended))
    assert t.started == 1500 and max(remembered) <= 3  # 1500 ended tracks, 3 remembered
    wide = tracker(lost=LostAfter(0.5), revive_seconds=5.0, max_ended=64)
    for i in range(300):
        click = Prompt.from_points("points", np.array([[12, 12]], np.float32), [FOREGROUND])
        wide.step(render(i, {RED: (10, 10)} if i % 2 == 0 else {}), None, [click] if i % 2 == 0 else [])
        assert all(wide.clock.now - e.at < 5.0 for e in wide._ended)  # none past REVIVE_SECONDS
    assert 0 < len(wide._ended) <= 3  # one a second, kept 5 s


def test_detector_misses_spare_clicked_tracks_and_zero_turns_them_off():
    """DETECTOR_MISSES: a track a person clicked is the person's, not the detector's; 0 = never ended so."""
    click = Prompt.from_points("points", np.array([[75, 55]], np.float32), [FOREGROUND], object_ids=(0,))
    for misses, clicked, expected in [(2, False, (1,)), (2, True, (1, 2)), (0, False, (1, 2))]:
        t = tracker(detector_misses=misses, lost=LostAfter(1000, frames=True))
        both = {RED: (10, 10), GREEN: (70, 50)}
        frame = render(0, both)
        t.step(frame, detect(frame, {RED: (10, 10)} if clicked else both), [click] if clicked else [])
        for i in (1, 2, 3):  # the detector sees red only; green is still there for SAM 2
            frame = render(i, both)
            masks = t.step(frame, detect(frame, {RED: (10, 10)}))
        assert masks.track_ids == expected, (misses, clicked)


def test_reset_is_final_even_while_revival_is_on():
    t = tracker(revive_seconds=10.0)
    objects = {RED: (10, 10), GREEN: (70, 50)}
    frame = render(0, objects)
    t.step(frame, detect(frame, objects))
    t.reset()
    frame = render(1, objects)
    assert ids_by_colour(frame, t.step(frame, detect(frame, objects))) == {RED: 3, GREEN: 4} and t.revived == 0


class Remembered(tuple):
    """A colour as ObjectMemory keeps it: with a pointer, as SAM 2's memories have."""

    @property
    def pointer(self):
        return self


class WindowedColours(ColourSegmenter):
    """The colour segmenter with SAM 2's memory bank (2 tracked frames, 3 pointers), following the newest colour."""

    def new_memory(self):
        from dora_sam2.streaming import ObjectMemory

        return ObjectMemory(recent=2, pointers=3)

    def track(self, frame, memories, frame_index):
        return self._segment(frame, [max(m.prompted.items())[1] for m in memories])

    def remember(self, frame, step, prompted, apart=False):
        return [Remembered(int(c) for c in colour) for colour in step.colours]


@pytest.mark.parametrize("forget, tracked_after_round, pointers_after_round",
                         [(True, [], []), (False, [2, 3], [1, 2, 3])])
def test_forget_on_prompt_leaves_a_re_prompted_track_its_prompted_frames_only(forget, tracked_after_round,
                                                                              pointers_after_round):
    """Detections on frames 0 and 4, frames 1-3 and 5 tracked: FORGET_ON_PROMPT drops frames 1-3 from the
    track's memory at the round, as if the track began there with its first prompt kept; off, SAM 2 keeps its
    last 2 tracked frames (and 3 pointers) beside both prompted ones."""
    t = Tracker(WindowedColours(), plain(forget_on_prompt=forget))
    for i in range(6):
        objects = {RED: (5 + i, 10)}
        frame = render(i, objects)
        t.step(frame, detect(frame, objects) if i % 4 == 0 else None)
        if i == 4:
            memory = t.tracks[0].memory
            assert sorted(memory.prompted) == [0, 4]
            assert [f for f, _ in memory.recent] == tracked_after_round
            assert [f for f, _ in memory.recent_pointers] == pointers_after_round
    assert [f for f, _ in t.tracks[0].memory.recent] == tracked_after_round[-1:] + [5]
