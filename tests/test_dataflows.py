"""End-to-end: real `dora run` dataflows around the real node, with the suite's random-weight SAM2."""

from __future__ import annotations

from datetime import timedelta

import cv2
import numpy as np
import pyarrow as pa
import pytest

from support.dataflows import (NODES, SHARED_DATA, T0, after_answers, assert_no_traceback, camera, collector, detector,
                               event_time, flow, frame_message, image, lossless, node, player_flow, sam2, scene,
                               write_script)

pytestmark = pytest.mark.dataflow


def test_seed_pipeline_gives_masks_the_seed_consumer_reads(dataflow, model_dir):
    """The seed's detection + segmentation wiring, verbatim ids: `bbox` in, `mask` out."""
    boxes = [[100, 120, 300, 360, "cup"], [400, 200, 560, 400, "bottle"]]
    run = dataflow(flow(camera(6, fps=3), detector(boxes, EMPTY_EVERY=3), sam2(model_dir),
                        collector({"mask": "sam2/mask"})))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    events = run.events()
    # On a loaded machine two prompts can queue behind one answer, and the older is skipped (the speed
    # issue's newest-wins): every prompt that reaches the node is answered or counted, never lost. (dora
    # may stop the detector before it answers the camera's last frame: that prompt never reaches us.)
    stats = run.sam2_stats()
    assert len(events) == stats["answers"] and stats["answers"] + stats["skipped"] == stats["prompts"]
    assert stats["prompts"] in (5, 6)
    for event in events:
        meta = event["metadata"]
        n = meta["num_masks"]
        assert event["type"] == "uint8"
        assert (meta["width"], meta["height"], meta["primitive"]) == (640, 480, "masks")
        assert event["value"].size == 640 * 480 and meta["mask_layout"] == "union"  # one mask, any n
        assert set(np.unique(event["value"])) <= {0, 1}
        assert len(meta["scores"]) == n and all(isinstance(s, float) for s in meta["scores"])
        assert meta["image_id"] == "image"
        assert "datetime" in meta["timestamp"]
    for event in events:  # two boxes, or the empty detection every third frame
        assert (event["metadata"]["num_masks"], event["metadata"]["labels"]) in [(2, ["cup", "bottle"]), (0, [])]
    if stats["prompts"] == 6:  # the last frame's empty detection reached the node: newest wins, it is answered
        assert events[-1]["metadata"]["num_masks"] == 0


def test_seed_consumer_and_applications_run_verbatim_on_0_1_and_3_objects(dataflow, model_dir):
    """The seed's consumer code and its removal and extraction snippets, unchanged, on every `mask`
    message of the seed's pipeline while the detector sees 0, 1 and 3 objects in turn: `mask` is the
    union, one frame-sized mask, and its coverage is that of the per-object `masks` together."""
    boxes = [[100, 120, 300, 360, "cup"], [400, 200, 560, 400, "bottle"], [250, 50, 350, 150, "ball"]]
    run = dataflow(flow(
        camera(6, fps=3), detector(boxes, COUNTS="0,1,3"),
        sam2(model_dir, {"image": lossless("camera/image"), "bbox": lossless("yolo/bbox")}, ("mask", "masks"),
             {"EVERY_FRAME": "1"}),
        node("consumer", NODES / "seed_consumer.py", {"mask": lossless("sam2/mask")}),
        node("apps", NODES / "seed_applications.py", {"image": lossless("camera/image"), "mask": lossless("sam2/mask")},
             ["removed", "extracted"]),
        collector({"masks": lossless("sam2/masks"), "frame": lossless("camera/image"),
                   "removed": lossless("apps/removed"), "extracted": lossless("apps/extracted")})))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    events = run.events()
    answers = [e for e in events if e["id"] == "masks"]
    stats = run.sam2_stats()
    assert len(answers) == stats["answers"] == stats["prompts"] >= 5  # dora may stop yolo before the last
    assert [e["metadata"]["num_masks"] for e in answers] == [0, 1, 3, 0, 1, 3][: len(answers)]

    for answer in answers:  # segment mode says what it sees too: boxes and visibility per mask
        masks, meta = answer["value"].reshape(-1, 480, 640), answer["metadata"]
        expected = []
        for mask in masks:
            rows, cols = np.nonzero(mask)
            expected += [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] if len(rows) else [0, 0, 0, 0]
        assert meta["boxes"] == expected and len(meta["visible"]) == len(masks)
        assert not any(v and not m.any() for v, m in zip(meta["visible"], masks))
    unions = [e["value"].reshape(-1, 480, 640).any(axis=0) for e in answers]
    coverage = [line for line in run.node_log("consumer") if line.startswith("Object covers")]
    assert coverage == [f"Object covers {union.mean():.1%} of frame" for union in unions]

    def of(output, answer):  # dora carries timestamps to about 1 us: the same frame may read 1 us apart
        [found] = [image(e) for e in events if e["id"] == output
                   and abs(event_time(e) - event_time(answer)) <= timedelta(microseconds=5)]
        return found

    painted = 0
    for answer, union in zip(answers, unions):
        frame, removed, extracted = of("frame", answer), of("removed", answer), of("extracted", answer)
        np.testing.assert_array_equal(extracted, np.where(union[..., None], frame, 0))
        np.testing.assert_array_equal(removed, cv2.inpaint(frame, union.astype(np.uint8) * 255, 3,
                                                           cv2.INPAINT_TELEA))
        painted += (removed != frame).any()
    assert painted  # objects were painted over: the snippets ran on the masks, not past them


# ---------------------------------------------------------------------------- scripted messages

def test_upstream_conventions_are_a_drop_in(dataflow, model_dir, tmp_path):
    """dora-sam2 0.5.0's wiring: `boxes2d` flat xyxy with `encoding: xyxy` and `image_id`, `masks` out."""
    boxes = pa.array(np.array([10, 20, 200, 220, 300, 100, 500, 400], np.float32))
    steps = [
        frame_message(scene(), 0),
        (0.1, "boxes2d", boxes, {"encoding": "xyxy", "image_id": "image", "timestamp": T0}),
    ]
    run = dataflow(player_flow(model_dir, write_script(tmp_path, steps), ["image", "boxes2d"],
                               {"image": "player/image", "boxes2d": "player/boxes2d"}, ("masks",)))
    assert run.returncode == 0, run.log[-4000:]
    [event] = run.events()
    assert event["type"] == "bool" and event["id"] == "masks"
    assert event["value"].shape == (2 * 480 * 640,)
    assert event["metadata"]["num_masks"] == 2 and event["metadata"]["labels"] == ["", ""]


def test_mask_layout_stack_sends_each_objects_mask_on_mask(dataflow, model_dir, tmp_path):
    """MASK_LAYOUT=stack: `mask` carries the N masks (UInt8), exactly the per-object `masks`."""
    boxes = pa.array(np.array([10, 20, 200, 220, 300, 100, 500, 400], np.float32))
    steps = [frame_message(scene(), 0), (0.1, "bbox", boxes, {"timestamp": T0, "labels": ["a", "b"]})]
    run = dataflow(player_flow(model_dir, write_script(tmp_path, steps), ["image", "bbox"],
                               {"image": "player/image", "bbox": "player/bbox"}, ("mask", "masks"),
                               sam2_env={"MASK_LAYOUT": "stack"}))
    assert run.returncode == 0, run.log[-4000:]
    [mask] = [e for e in run.events() if e["id"] == "mask"]
    [masks] = [e for e in run.events() if e["id"] == "masks"]
    assert mask["type"] == "uint8" and mask["metadata"]["mask_layout"] == "stack"
    assert mask["value"].size == 2 * 480 * 640 and mask["metadata"]["labels"] == ["a", "b"]
    np.testing.assert_array_equal(mask["value"].astype(bool), masks["value"])


def test_points_with_background_labels(dataflow, model_dir, tmp_path):
    points = pa.array(np.array([320, 240, 50, 50, 600, 400], np.float32))
    steps = [
        frame_message(scene(), 0),
        (0.1, "points", points, {"labels": [1, 0, 0], "timestamp": T0}),
        after_answers(1),  # the second is not newer-wins' to skip
        (0.0, "points", pa.array(np.array([100, 100], np.float32)), {"timestamp": T0}),
    ]
    run = dataflow(player_flow(model_dir, write_script(tmp_path, steps), ["image", "points"],
                               {"image": "player/image", "points": "player/points"}, ("mask", "masks"),
                               answers="sam2/mask"))
    assert run.returncode == 0, run.log[-4000:]
    events = run.events()
    assert sorted(e["id"] for e in events) == ["mask", "mask", "masks", "masks"]
    for event in events:
        assert event["metadata"]["num_masks"] == 1
        assert event["value"].size == 480 * 640


def test_several_cameras_prompts_name_their_frame(dataflow, model_dir, tmp_path):
    left, right = scene(640, 480, 1), scene(320, 240, 2)
    box = pa.array(np.array([10, 10, 100, 100], np.float32))
    steps = [
        frame_message(left, 0, "image_left"),
        frame_message(right, 0, "image_right"),  # the same timestamp on both cameras: image_id decides
        (0.1, "bbox", box, {"image_id": "image_right", "timestamp": T0}),
        (0.3, "bbox", box, {"image_id": "image_left", "timestamp": T0}),
        (0.3, "bbox", box, {"timestamp": T0}),  # no image_id: the first camera (sorted), image_left
    ]
    run = dataflow(player_flow(
        model_dir, write_script(tmp_path, steps), ["image_left", "image_right", "bbox"],
        {"image_left": "player/image_left", "image_right": "player/image_right", "bbox": "player/bbox"}))
    assert run.returncode == 0, run.log[-4000:]
    answers = [(e["metadata"]["image_id"], e["metadata"]["width"], e["metadata"]["height"]) for e in run.events()]
    assert answers == [("image_right", 320, 240), ("image_left", 640, 480), ("image_left", 640, 480)]


def test_bad_input_is_one_log_line_and_the_node_keeps_answering(dataflow, model_dir, tmp_path):
    good_box = (0.15, "bbox", pa.array(np.array([10, 10, 100, 100], np.float32)), {"timestamp": T0})
    bad = [
        ("image", pa.array(np.zeros(100, np.uint8)), {"encoding": "rgb8", "width": 640, "height": 480},
         "bytes do not make"),
        ("image", pa.array(np.zeros(30, np.uint8)), {"encoding": "yuv420", "width": 5, "height": 2},
         "unknown image encoding"),
        ("image", pa.array(np.zeros(30, np.uint8)), {"encoding": "rgb8"}, "'width' is missing"),
        ("image", pa.array(np.frombuffer(b"\xff\xd8\xff\xe0\x00\x10JFIF", np.uint8)), {"encoding": "jpeg"},
         "could not decode"),
        ("image", pa.array([1.0, 2.0]), {"encoding": "rgb8", "width": 1, "height": 1}, "expected a flat UInt8"),
        ("bbox", pa.array([np.nan, 1, 2, 3], pa.float32()), {}, "NaN"),
        ("bbox", pa.array([100, 100, 10, 10], pa.float32()), {}, "has no area"),
        ("bbox", pa.array([1, 2, 3, 4, 5], pa.float32()), {}, "not a multiple of 4"),
        ("bbox", pa.array([1, 2, 30, 40], pa.float32()), {"format": "cxcywhr"}, "unknown box format"),
        ("bbox", pa.array([1, 2, 30, 40], pa.float32()), {"labels": ["a", "b"]}, "2 labels for 1 boxes"),
        ("bbox", pa.array(["x", "y"]), {}, "should be numbers"),
        ("points", pa.array([1, 2, 3], pa.float32()), {}, "expected x,y pairs"),
        ("points", pa.array([1, 2, 3, 4], pa.float32()), {"labels": [1]}, "1 point labels for 2 points"),
        ("points", pa.array([1, 2], pa.float32()), {"labels": [7]}, "should be 1 (foreground) or 0"),
        ("bbox", pa.array([1, 2, 30, 40], pa.float32()), {"image_id": "image_rear"}, "names no camera"),
    ]
    steps = [good_box, frame_message(scene(), 0)]  # a box before any image is not bad: it waits for frame 0
    for output, value, meta, _ in bad:
        steps += [(0.05, output, value, meta), good_box]
    run = dataflow(player_flow(model_dir, write_script(tmp_path, steps), ["image", "bbox", "points"],
                               {"image": "player/image", "bbox": "player/bbox", "points": "player/points"}))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    sam2_lines = run.node_log("sam2")
    for _, _, _, expected in bad:
        matching = [line for line in sam2_lines if expected in line]
        assert len(matching) == 1, (expected, sam2_lines)
        assert "input '" in matching[0]
    answers, stats = run.events(), run.sam2_stats()
    # every good box is answered (or, queued behind another, counted as skipped), the first one too
    assert len(answers) == stats["answers"] and stats["answers"] + stats["skipped"] == len(bad) + 1
    assert not any("before any image" in line or "has arrived" in line for line in sam2_lines)
    assert all(e["metadata"]["num_masks"] == 1 for e in answers)


@pytest.mark.skipif(not (SHARED_DATA / "cups.mp4").exists(), reason="../shared/data/cups.mp4 is not here")
def test_real_clip_through_opencv_video_capture(dataflow, model_dir):
    """The real camera node reading the real clip, resized as a user would configure it.

    Its ticks come from a ticker that ends, so the camera (which stops when `tick` closes) and then
    the whole dataflow end on their own, however long the model takes to load."""
    run = dataflow(flow(
        node("ticker", NODES / "ticker.py", outputs=["tick"], env={"TICKS": 8, "INTERVAL": 0.4}),
        node("camera", "opencv-video-capture", {"tick": "ticker/tick"}, ["image"],
             {"CAPTURE_PATH": SHARED_DATA / "cups.mp4", "IMAGE_WIDTH": 640, "IMAGE_HEIGHT": 360}),
        detector([[200, 100, 400, 300, "cup"]], image=lossless("camera/image")),
        sam2(model_dir, {"image": lossless("camera/image"), "bbox": lossless("yolo/bbox")}, env={"EVERY_FRAME": "1"}),
        collector({"mask": lossless("sam2/mask")})))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    events = run.events()
    # every prompt answered, at any pace (dora may stop the detector before the camera's last frame)
    assert len(events) == run.sam2_stats()["answers"] == run.sam2_stats()["prompts"] >= 7, run.log[-4000:]
    for event in events:
        assert (event["metadata"]["width"], event["metadata"]["height"]) == (640, 360)
        assert event["value"].size == 640 * 360


def test_newest_prompt_wins_over_a_backlog(dataflow, model_dir, tmp_path):
    """A backlog of 39 frames and their boxes, sent at once while the node answers the first: a FIFO node
    would answer every one, late. Ours answers the newest, skips the stale ones and counts them, and
    loses none. (test_scheduling.py holds the policy to exact counts on given batches.)"""
    box = pa.array(np.array([10, 10, 100, 100], np.float32))
    steps = [frame_message(scene(), 0), (0.0, "bbox", box, {"timestamp": T0}), after_answers(1)]
    for i in range(1, 40):
        steps += [(0.0, *frame_message(scene(seed=i % 3), i)[1:]),
                  (0.0, "bbox", box, {"timestamp": T0 + timedelta(seconds=i)})]
    # through the daemon, so that dora drops none of them itself (support.dataflows.lossless): what is skipped, the node skips
    deep = {"image": lossless("player/image"), "bbox": lossless("player/bbox")}
    run = dataflow(player_flow(model_dir, write_script(tmp_path, steps), ["image", "bbox"], deep, answers="sam2/mask"))
    assert run.returncode == 0, run.log[-4000:]
    counts, answers = run.sam2_stats(), run.events()
    assert counts["answers"] == len(answers) and counts["prompts"] == 40
    assert counts["answers"] + counts["skipped"] == 40 and counts["skipped"] >= 1  # none lost, stale ones skipped
    assert counts["stage_calls"]["encode"] == counts["answers"]  # one encode per answered frame
    stamps = [event_time(e) for e in answers]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # the newest prompt's frame is answered (dora carries timestamps to about 1 us)
    assert abs(stamps[-1] - (T0 + timedelta(seconds=39))) <= timedelta(microseconds=5)
