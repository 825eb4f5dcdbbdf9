"""MODE=track end to end: real `dora run` dataflows around the real node and the suite's random-weight SAM2.

Random weights make meaningless masks, so these tests hold the plumbing to account (every frame
answered with its tracks, ids born only of prompts, reset, the cap), not where the masks fall.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from support.dataflows import (T0, after_answers, assert_no_traceback, event_time, frame_message, player_flow, scene,
                               stamp, write_script)

pytestmark = pytest.mark.dataflow

# EVERY_FRAME: every frame is answered, in order, however fast the machine is, so the tests know exactly
# which frames carry which tracks. Plumbing tests: random weights' masks are noise, so SAM 2's random losses
# would end tracks, and LOST_FRAMES keeps them (the lifecycle with real masks: tests/test_track_quality.py).
TRACK_ENV = {"MODE": "track", "EVERY_FRAME": "1", "LOST_FRAMES": "1000"}
FRAMES_KEPT = 1000  # dora's queue for each input: deep enough that dora drops no frame either


def frame_index(event) -> int:
    return round((event_time(event) - T0).total_seconds())


def boxes_message(index: int, boxes) -> tuple:
    return (0.01, "bbox", pa.array(np.asarray(boxes, np.float32).ravel()),
            {"timestamp": stamp(index), "labels": ["thing"] * len(boxes)})


def track_flow(model_dir, tmp_path, steps, outputs=("mask",), env=None, inputs=("image", "bbox")):
    wiring = {name: {"source": f"player/{name}", "queue_size": FRAMES_KEPT} for name in inputs}
    waits = any(step[1] == after_answers(0)[1] for step in steps)  # then the player reads the answers
    return player_flow(model_dir, write_script(tmp_path, steps), list(inputs), wiring, outputs,
                       sam2_env={**TRACK_ENV, **(env or {})}, answers=f"sam2/{outputs[0]}" if waits else None)


def test_detections_every_15th_frame_frames_between_answered_from_memory(dataflow, model_dir, tmp_path):
    boxes = [[40, 40, 200, 220], [300, 100, 560, 400]]
    steps = []
    for i in range(46):
        steps.append(frame_message(scene(seed=i % 3), i))
        if i % 15 == 0:
            steps.append(boxes_message(i, boxes))
    run = dataflow(track_flow(model_dir, tmp_path, steps, outputs=("mask", "overlay")))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    masks = [e for e in run.events() if e["id"] == "mask"]
    assert [frame_index(e) for e in masks] == list(range(46))  # every frame, in order
    assert len([e for e in run.events() if e["id"] == "overlay"]) == 46

    # The detection of frame 0 reaches the node with frame 0 or just after it (dora keeps no order
    # across inputs): from frame 1 on, both objects are tracked on every frame, detected or not.
    assert all(e["metadata"]["num_masks"] >= 2 for e in masks[1:]), [e["metadata"]["track_ids"] for e in masks]
    unused_detections, known = [0, 15, 30, 45], set()
    for event in masks:
        meta, index = event["metadata"], frame_index(event)
        assert meta["num_masks"] == len(meta["track_ids"]) == len(meta["labels"])
        assert event["value"].size == 480 * 640  # the union of the tracks, one frame-sized mask
        new = set(meta["track_ids"]) - known
        if new:  # new ids come with a detection sent on or before this frame, at most one per box
            assert unused_detections and unused_detections[0] <= index and len(new) <= 2, (index, new)
            unused_detections.pop(0)
        known |= new
    assert {1, 2} <= known
    stats = run.sam2_stats()
    assert stats["tracking"]["started"] == len(known) and stats["answers"] == 46 and stats["skipped"] == 0


def test_points_reset_and_the_object_cap(dataflow, model_dir, tmp_path):
    # the cap with masks that mean something: test_track_quality.py's test_max_objects_caps_the_live_tracks
    three = [[10, 10, 100, 100], [200, 200, 300, 300], [400, 50, 600, 250]]
    click = pa.array(np.array([320, 240], np.float32))
    steps = [frame_message(scene(), 0), boxes_message(0, three)]  # 3 detections, MAX_OBJECTS=2
    steps += [frame_message(scene(), i) for i in range(1, 4)]
    # dora does not keep the order of messages across inputs queued together: each phase starts once the
    # node has answered the frames before it
    steps += [after_answers(4), (0.0, "reset", pa.array([0]), {}), frame_message(scene(), 4), frame_message(scene(), 5)]
    steps += [after_answers(6), (0.0, "points", click, {"object_id": 0, "label": "object 0", "timestamp": stamp(5)}),
              frame_message(scene(), 6), frame_message(scene(), 7), after_answers(8),
              (0.0, "points", pa.array(np.array([320, 240, 330, 250], np.float32)), {"object_id": 0, "labels": [1, 1]}),
              frame_message(scene(), 8), frame_message(scene(), 9)]
    run = dataflow(track_flow(model_dir, tmp_path, steps, env={"MAX_OBJECTS": "2"},
                              inputs=("image", "bbox", "points", "reset")))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    answers = {frame_index(e): e["metadata"] for e in run.events()}
    assert sorted(answers) == list(range(10))
    assert len([line for line in run.node_log("sam2") if "MAX_OBJECTS=2" in line]) == 1
    # frame 0 may be answered before its boxes arrive; they then start the two tracks on frame 1
    assert all(answers[i]["track_ids"] == [1, 2] for i in (1, 2, 3))
    assert all(answers[i]["track_ids"] == [] for i in (4, 5))  # reset dropped them, nothing prompted yet
    assert all(answers[i]["track_ids"] == [3] and answers[i]["labels"] == ["object 0"] for i in range(6, 10))


def test_bad_input_in_track_mode_is_one_line_and_tracking_goes_on(dataflow, model_dir, tmp_path):
    """Timestamps without a timezone, a box wholly outside the frame, a camera that changes resolution."""
    def naive(message):
        delay, output, value, metadata = message
        return delay, output, value, dict(metadata, timestamp=metadata["timestamp"].replace(tzinfo=None))

    steps = [naive(frame_message(scene(), 0)),
             naive(boxes_message(0, [[40, 40, 200, 220], [700, 100, 800, 200]])),  # the second: right of 640
             *[naive(frame_message(scene(), i)) for i in (1, 2)],
             after_answers(3), frame_message(scene(320, 240), 3), frame_message(scene(320, 240), 4)]
    run = dataflow(track_flow(model_dir, tmp_path, steps))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    answers = {frame_index(e): e["metadata"] for e in run.events()}
    assert sorted(answers) == list(range(5))
    assert answers[1]["track_ids"] == answers[2]["track_ids"] == [1]  # one box in the frame: one track
    assert answers[3]["track_ids"] == answers[4]["track_ids"] == [] and answers[3]["width"] == 320
    lines = run.node_log("sam2")
    assert len([line for line in lines if "[700.0, 100.0, 800.0, 200.0] lies wholly outside the 640x480" in line]) == 1
    assert len([line for line in lines if "changed resolution from 640x480 to 320x240" in line]) == 1


def yolo_message(index: int, boxes, confidences, labels) -> tuple:
    """dora-yolo's struct, with confidences, stamped with frame `index`."""
    value = pa.array([{"bbox": np.asarray(boxes, np.float32).ravel().tolist(), "conf": list(confidences),
                       "labels": list(labels)}],
                     type=pa.struct([("bbox", pa.list_(pa.float32())), ("conf", pa.list_(pa.float32())),
                                     ("labels", pa.list_(pa.string()))]))
    return (0.01, "bbox", value, {"timestamp": stamp(index), "format": "xyxy"})


def test_stray_boxes_start_no_track_and_live_tracks_stay_bounded(dataflow, model_dir, tmp_path):
    """What a real detector sends a random-weight model: two objects every 15th frame and, in every
    round, a stray box at confidence 0.2. With MIN_CONFIDENCE=0.5 no track starts from a stray box, and
    live tracks never exceed 2 x (DETECTOR_MISSES + 1), however many rounds pass."""
    objects, stray = [[40, 40, 200, 220], [300, 100, 560, 400]], [[560, 20, 630, 90]]
    steps = []
    for i in range(91):
        steps.append(frame_message(scene(seed=i % 3), i))
        if i % 15 == 0:
            steps.append(yolo_message(i, objects + stray, [0.9, 0.8, 0.2], ["cup", "cup", "stray"]))
    run = dataflow(track_flow(model_dir, tmp_path, steps, env={"MIN_CONFIDENCE": "0.5", "LOST_SECONDS": "3",
                                                                "LOST_FRAMES": ""}))
    assert run.returncode == 0, run.log[-4000:]
    answers = [e["metadata"] for e in run.events()]
    assert len(answers) == 91
    assert all("stray" not in meta["labels"] for meta in answers)
    assert max(meta["num_masks"] for meta in answers) <= 2 * (3 + 1)
    assert run.sam2_stats()["filtered"] == 7  # one stray box in each of the 7 rounds


@pytest.mark.parametrize("misses", [3, 0])
def test_detector_misses_ends_tracks_no_round_confirms(dataflow, model_dir, tmp_path, misses):
    """Each of 8 detection rounds sees two new objects where none was before, and none of the earlier ones:
    with DETECTOR_MISSES=3 a track ends on the third round that does not confirm it, so no more than 3
    rounds' worth (6) are ever live; with 0 every track lives on. LOST_FRAMES keeps SAM 2's own losses
    out of it, so only the detector's rounds can end a track, and MATCH_REACH=0 keeps a box 75 px from a
    track (within reach of 2 diagonals) from being taken for that object moving on. With masks that mean
    something: test_track_quality.py's test_detector_misses_ends_a_track_on_that_many_rounds_without_it."""
    steps, rounds = [], 8
    for i in range(5 * rounds):
        steps.append(frame_message(scene(seed=i % 3), i))
        if i % 5 == 0:
            x = 20 + 75 * (i // 5)  # fresh ground each round: no box lands on an earlier one
            steps.append(boxes_message(i, [[x, 40, x + 40, 80], [x, 300, x + 40, 340]]))
    run = dataflow(track_flow(model_dir, tmp_path, steps, env={"DETECTOR_MISSES": str(misses), "MATCH_REACH": "0"}))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    live = [e["metadata"]["num_masks"] for e in run.events()]
    assert len(live) == 5 * rounds
    if misses:
        assert max(live) <= 2 * misses and live[-1] >= 2, live
    else:
        assert live[-1] == 2 * rounds, live


def test_remove_boxes_visible_and_boxes2d(dataflow, model_dir, tmp_path):
    boxes = [[40, 40, 200, 220], [300, 100, 560, 400], [420, 20, 600, 90]]
    steps = [frame_message(scene(), 0), yolo_message(0, boxes, [0.9, 0.9, 0.9], ["a", "b", "c"])]
    steps += [frame_message(scene(seed=i), i) for i in range(1, 4)]
    steps += [after_answers(4), (0.0, "remove", pa.array([2, 77], pa.int64()), {}), frame_message(scene(), 4),
              frame_message(scene(), 5)]
    run = dataflow(track_flow(model_dir, tmp_path, steps, outputs=("masks", "boxes2d"),
                              inputs=("image", "bbox", "remove")))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    events = run.events()
    answers = {frame_index(e): e for e in events if e["id"] == "masks"}
    drawn = {frame_index(e): e for e in events if e["id"] == "boxes2d"}
    assert sorted(answers) == sorted(drawn) == list(range(6))
    # dora orders events of different inputs by its own fairness, not by arrival, so which frame the
    # remove lands before depends on the machine's pace: track 2 is there until it is removed, then gone
    # for good, and the others are untouched throughout.
    has_two = [2 in answers[i]["metadata"]["track_ids"] for i in range(1, 6)]
    assert has_two[0] and not has_two[-1] and has_two == sorted(has_two, reverse=True), has_two
    assert all({1, 3} <= set(answers[i]["metadata"]["track_ids"]) for i in range(1, 6))
    lines = run.node_log("sam2")
    assert len([line for line in lines if "remove: ending tracks [2]" in line]) == 1
    assert len([line for line in lines if "no live track has id 77" in line]) == 1
    for index, answer in answers.items():
        meta = answer["metadata"]
        masks = answer["value"].reshape(-1, 480, 640)
        expected = []
        for mask in masks:  # independently: pixel-edge boxes, zeros for an empty mask
            rows, cols = np.nonzero(mask)
            expected += [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] if len(rows) else [0, 0, 0, 0]
        assert meta["boxes"] == expected, index
        assert len(meta["visible"]) == len(masks) and set(meta["visible"]) <= {0, 1}
        assert not any(v and not m.any() for v, m in zip(meta["visible"], masks))
        box_meta, struct = drawn[index]["metadata"], drawn[index]["value"]
        assert (box_meta["format"], box_meta["primitive"]) == ("xyxy", "boxes2d")
        assert list(struct[0]["bbox"]) == pytest.approx(expected)
        assert list(struct[0]["labels"]) == [f"#{t} {label}" for t, label in zip(meta["track_ids"], meta["labels"])]


@pytest.mark.parametrize("mode", ["segment", "track"])
def test_image_size_in_both_modes(dataflow, model_dir, tmp_path, mode):
    """IMAGE_SIZE=512 runs the suite's 1024-pixel checkpoint at 512: answers of the frame's size, the
    startup line names the size."""
    steps = [frame_message(scene(), i) for i in range(3)]
    steps.insert(1, boxes_message(0, [[40, 40, 200, 220], [300, 100, 560, 400]]))
    env = {"IMAGE_SIZE": "512", **({"MODE": "segment"} if mode == "segment" else {})}
    run = dataflow(track_flow(model_dir, tmp_path, steps, env=env))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    answers = [e for e in run.events() if e["id"] == "mask"]
    assert answers and all(e["value"].size == 640 * 480 for e in answers)
    assert any(e["metadata"]["num_masks"] == 2 for e in answers)
    assert any("at 512x512 on cpu" in line for line in run.node_log("sam2"))
