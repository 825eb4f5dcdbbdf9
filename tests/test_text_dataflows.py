"""Words as prompts end to end: real `dora run` dataflows around the real node and the suite's random-weight
SAM 3. Random weights find meaningless instances (SAM 3 scores every query near 0.25): MIN_CONFIDENCE=0.01
keeps them all and MAX_OBJECTS caps them, so the tests hold the plumbing to account (which frames are
answered, with which labels, what a new phrase changes), not where the masks fall."""

from __future__ import annotations

import pyarrow as pa
import pytest

from support.dataflows import (after_answers, assert_no_traceback, assert_the_pair_followed, example_flow,
                               frame_message, lossless, player_flow, scene, stamp, text_pair_flow, write_script)

pytestmark = pytest.mark.dataflow

# LOST_FRAMES: random weights' masks are noise, so the tracker's random losses would end tracks (plumbing tests)
TEXT_ENV = {"EVERY_FRAME": "1", "MIN_CONFIDENCE": "0.01", "MAX_OBJECTS": "3", "LOST_FRAMES": "1000"}


def text_message(*phrases) -> tuple:
    return (0.0, "text", pa.array(list(phrases), pa.string()), {})


def text_flow(model_dir, tmp_path, steps, env=None):
    wiring = {"image": {"source": "player/image", "queue_size": 1000}, "text": "player/text",
              "bbox": "player/bbox"}
    return player_flow(model_dir, write_script(tmp_path, steps), ["image", "text", "bbox"], wiring, ("mask",),
                       sam2_env={**TEXT_ENV, **(env or {})}, answers="sam2/mask")


def labels_of(run) -> list[tuple[str, ...]]:
    return [tuple(e["metadata"]["labels"]) for e in run.events() if e["id"] == "mask"]


def test_segment_mode_answers_frames_with_phrases_and_a_new_phrase_replaces_them(dataflow, sam3_dir, tmp_path):
    # TEXT, not a first message: dora keeps no order across inputs, and the first frames must have phrases
    steps = [frame_message(scene(seed=i), i) for i in range(3)]
    steps += [after_answers(3), (0.0, "text", pa.array([b"caf\xe9"], pa.binary()), {}),  # not UTF-8: said, kept
              frame_message(scene(seed=3), 3), after_answers(4), text_message("red bottle, cup"),
              frame_message(scene(seed=4), 4), after_answers(5)] + [frame_message(scene(seed=i), i) for i in (5, 6)]
    run = dataflow(text_flow(sam3_dir, tmp_path, steps, {"TEXT": "cup"}))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    labels = labels_of(run)
    assert labels[:4] == [("cup",) * 3] * 4  # every frame answered, each with the 3 best instances
    assert all(set(found) <= {"red bottle", "cup"} and len(found) == 3 for found in labels[4:]) and len(labels) == 7
    assert any("red bottle" in found for found in labels[5:])
    assert run.sam2_stats()["stage_calls"]["find"] == 7  # each answer's finding timed in the node's stats
    bad = [line for line in run.node_log("sam2") if "input 'text'" in line]
    assert len(bad) == 1 and "not UTF-8" in bad[0], bad


def test_track_mode_tracks_what_phrases_find_and_follows_a_new_phrase(dataflow, sam3_dir, tmp_path):
    """Frames 1 s apart, a detection round every 5 s of camera time: tracks born on frame 0 carried
    through the frames between rounds (and the round of frame 5, which matches them or is refused by
    MAX_OBJECTS); a new phrase is looked for on the next frame. Rounds by DETECT_SECONDS with masks that mean
    something: test_track_quality.py's test_detect_seconds_spaces_the_rounds_that_find_an_entering_object."""
    steps = [frame_message(scene(seed=i % 3), i) for i in range(7)]
    steps += [after_answers(7), text_message("bottle")] + [frame_message(scene(seed=i % 3), i) for i in range(7, 10)]
    run = dataflow(text_flow(sam3_dir, tmp_path, steps, {"MODE": "track", "DETECT_SECONDS": "5", "TEXT": "cup"}))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    masks = [e["metadata"] for e in run.events() if e["id"] == "mask"]
    assert len(masks) == 10
    assert [m["track_ids"] for m in masks[:7]] == [[1, 2, 3]] * 7  # the first round's tracks, carried
    assert all(m["labels"] == ["cup"] * 3 for m in masks[:7])
    assert any("bottle" in m["labels"] for m in masks[8:]), [m["labels"] for m in masks[7:]]


def test_text_to_a_sam2_model_is_one_line_and_boxes_still_work(dataflow, model_dir, tmp_path):
    def box(index):
        return (0.01, "bbox", pa.array([20.0, 20.0, 200.0, 200.0], pa.float32()), {"timestamp": stamp(index)})

    steps = [frame_message(scene(), 0), text_message("cup"), box(0), after_answers(1), text_message("cup"),
             frame_message(scene(), 1), box(1)]
    run = dataflow(text_flow(model_dir, tmp_path, steps))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    refusals = [line for line in run.node_log("sam2") if "cannot read words" in line]
    assert len(refusals) == 2 and "facebook/sam3" in refusals[0], refusals  # one line for each message
    assert len(labels_of(run)) == 2  # the boxes were answered


def test_the_cpu_pair_runs_as_written(dataflow, sam3_dir, model_dir):
    """examples/text-cpu.yml, SAM 3 finding and a SAM 2 following (EdgeTAM, which the example names, needs
    timm: tests/test_edgetam.py runs the same in the side environment)."""
    assert_the_pair_followed(dataflow(text_pair_flow(sam3_dir, model_dir, 6)), 6)


def test_the_one_node_example_runs_as_written(dataflow, sam3_dir):
    """examples/text.yml: one SAM 3 node in track mode (meant for a GPU; here the test model on the CPU)."""
    # LOST_FRAMES: random weights' masks are noise, so SAM 3's random losses would end tracks (plumbing)
    run = dataflow(example_flow("text.yml", 8, {"sam3": {"MODEL": str(sam3_dir), "MIN_CONFIDENCE": "0.01",
                                                          "EVERY_FRAME": "1", "LOST_FRAMES": "1000"}},
                                {"masks": lossless("sam3/masks")}))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    masks = [e["metadata"] for e in run.events() if e["id"] == "masks"]
    assert len(masks) == 8  # 0.8 camera seconds: one detection round, on the first frame
    assert masks[0]["track_ids"] and all(m["track_ids"] == masks[0]["track_ids"] for m in masks)
    assert all(m["labels"] and set(m["labels"]) <= {"block", "disc"} for m in masks)
