"""Faults: a camera that dies, a stop with work queued, a model that fails on one frame, no model."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
import torch

from support.dataflows import (NODES, after_close, camera, collector, dataflow_in_background, detector, flow,
                               lossless, node, player, run_dataflow, sam2, wait_for, write_script)

from dora_sam2.engine import Segmenter
from dora_sam2.node import Adapter
from dora_sam2.scheduling import SegmentScheduler
from dora_sam2.stats import Stats


def sam2_lines(run):
    return run.node_log("sam2")


@pytest.mark.dataflow
def test_camera_dying_mid_run_leaves_the_node_answering_and_ending_cleanly(tmp_path, model_dir):
    """The boxes are sent once the camera has died (the player waits for its output to close), and
    EVERY_FRAME answers each of them, at any pace."""
    box = pa.array(np.array([5, 5, 40, 40], np.float32))
    script = write_script(tmp_path, [after_close()] + [(0.0, "bbox", box, {})] * 3)
    run = run_dataflow(tmp_path, flow(
        node("camera", NODES / "dying_camera.py", outputs=["image"]),
        player(script, ["bbox"], answers="camera/image", node_id="prompts"),
        sam2(model_dir, {"image": "camera/image", "bbox": lossless("prompts/bbox")}, env={"EVERY_FRAME": "1"}),
        collector({"mask": lossless("sam2/mask")})))
    assert run.returncode != 0 and "camera unplugged" in run.log  # dora reports the camera's failure
    assert "sam2 finished successfully" in run.log
    assert not any("Traceback" in line for line in sam2_lines(run))
    answers = run.events()
    assert len(answers) == 3  # all sent after the camera died: answered on the last frame it kept
    assert all(a["metadata"]["width"] == 64 for a in answers)


@pytest.mark.dataflow
def test_stop_with_work_queued_ends_cleanly(tmp_path, model_dir):
    """Ctrl-C while frames and boxes keep coming, once the node has answered: it ends cleanly, answering
    or counting what it held, with its final stats line."""
    out = tmp_path / "out"
    dataflow = tmp_path / "dataflow.yml"
    dataflow.write_text(flow(camera(tick_ms=40), detector(), sam2(model_dir, stats=None),
                             collector({"mask": "sam2/mask"}, out=out)))
    with dataflow_in_background(dataflow) as dora:
        wait_for(lambda: (out / "events.jsonl").exists() and (out / "events.jsonl").read_text(), 300,
                 "the node's first answer")
    logged = (tmp_path / "dora.log").read_text()
    assert dora.returncode == 0, logged[-4000:]
    assert "Traceback" not in logged
    final = [line for line in logged.splitlines() if " sam2: " in line and "final: answered" in line]
    assert len(final) == 1 and "answered 0," not in final[0]


@pytest.mark.dataflow
def test_no_model_fails_the_dataflow_with_one_sentence(tmp_path):
    run = run_dataflow(tmp_path, flow(camera(), sam2("/no/such/model", {"image": "camera/image"}, stats=None)))
    assert run.returncode != 0
    assert "ERROR dora-sam2: MODEL=/no/such/model is not a directory" in run.log
    # dora's report quotes the node's stderr: that one sentence, no traceback (the camera's own
    # traceback is dora's cascade: its Node() fails once sam2 has exited)
    report = run.log.split("Node `sam2` failed", 1)[1].splitlines()
    rules = [i for i, line in enumerate(report) if line.startswith("-----")][:2]
    stderr = [line for line in report[rules[0] + 1:rules[1]] if line.strip()]
    assert len(stderr) == 1 and stderr[0].startswith("ERROR dora-sam2: "), stderr


class RecordingNode:
    """Stands in for dora's Node where a real one cannot fail on cue: it only records outputs."""

    def __init__(self):
        self.sent = []

    def send_output(self, output_id, value, metadata):
        self.sent.append((output_id, metadata))


class FailsOnce:
    """The real model, failing the way models fail (out of memory, NaN) on its second frame; the rest of
    engine.ImageModel is the model's."""

    def __init__(self, model, failure):
        self.model, self.failure, self.encodes = model, failure, 0

    def encode(self, frame):
        self.encodes += 1
        embedding = self.model.encode(frame)
        if self.encodes == 2:
            if self.failure == "oom":
                raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            with torch.inference_mode():
                embedding.features[-1].fill_(float("nan"))
        return embedding

    def __getattr__(self, name):
        return getattr(self.model, name)


def segment_node(node, segmenter: Segmenter) -> Adapter:
    """The node in segment mode, around a RecordingNode instead of dora's."""
    stats = Stats(segmenter.stages, every_s=0)
    return Adapter(node, SegmentScheduler(segmenter, stats), stats, ["mask"])


def image_event(i):
    return {"type": "INPUT", "id": "image", "value": pa.array(np.full(48 * 64 * 3, 30 * i, np.uint8)),
            "metadata": {"encoding": "bgr8", "width": 64, "height": 48}}


BOX = {"type": "INPUT", "id": "bbox", "value": pa.array(np.array([5, 5, 40, 40], np.float32)), "metadata": {}}


@pytest.mark.parametrize("failure,logged", [("oom", "MemoryError: CUDA out of memory"),
                                            ("nan", "FloatingPointError: the model produced NaN")])
def test_a_frame_the_model_fails_on_is_logged_and_the_next_is_answered(model, caplog, failure, logged):
    node = RecordingNode()
    sam2 = segment_node(node, Segmenter(FailsOnce(model, failure)))
    with caplog.at_level(logging.ERROR, logger="dora_sam2"):
        for i in range(3):
            sam2.handle([image_event(i), BOX])
    assert len(node.sent) == 2  # frames 1 and 3
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "input 'bbox': segmentation failed on this frame" in record.getMessage() and logged in record.getMessage()


def test_boxes_delivered_before_their_frame_wait_for_it(model):
    """dora may deliver a detector's boxes before the camera frame they came from: the node must not
    answer them on the previous frame."""
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def stamped(event, seconds):
        return dict(event, metadata=dict(event["metadata"], timestamp=t0 + timedelta(seconds=seconds)))

    node = RecordingNode()
    sam2 = segment_node(node, Segmenter(model))
    sam2.handle([stamped(image_event(0), 0), stamped(BOX, 1)])  # frame 1 is not here yet
    assert node.sent == []
    sam2.handle([stamped(image_event(1), 1)])
    [(_, metadata)] = node.sent
    assert metadata["timestamp"] == t0 + timedelta(seconds=1)


def test_boxes_delivered_before_the_first_frame_wait_for_it(model, caplog):
    """The very first boxes can beat the very first frame too: they are answered on it, not dropped."""
    from datetime import datetime, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    node = RecordingNode()
    sam2 = segment_node(node, Segmenter(model, cameras=("image",)))
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        sam2.handle([dict(BOX, metadata={"timestamp": t0})])
        sam2.handle([])  # still no frame: it keeps waiting
        sam2.handle([dict(image_event(0), metadata=dict(image_event(0)["metadata"], timestamp=t0))])
    [(_, metadata)] = node.sent
    assert metadata["timestamp"] == t0 and not caplog.records
    assert (sam2.stats.answers, sam2.stats.skipped, sam2.stats.prompts) == (1, 0, 1)


def test_boxes_whose_camera_never_sends_are_dropped_with_one_line_at_the_end(model, caplog):
    node = RecordingNode()
    sam2 = segment_node(node, Segmenter(model, cameras=("image",)))
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        sam2.handle([BOX, BOX])
        assert not caplog.records  # waiting, not failing
        sam2.finish()
    assert node.sent == [] and sam2.stats.skipped == 1
    [record] = caplog.records
    assert "input 'bbox': no frame of camera input 'image' has arrived" in record.getMessage()


def test_a_held_prompt_is_answered_even_if_its_frame_never_comes(model, caplog):
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    node = RecordingNode()
    sam2 = segment_node(node, Segmenter(model))
    frame = dict(image_event(0), metadata=dict(image_event(0)["metadata"], timestamp=t0))
    box = dict(BOX, metadata={"timestamp": t0 + timedelta(seconds=5)})
    sam2.handle([frame, box])
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        sam2.handle([])  # the next batch brings no frame: answered on the newest, and said
    assert len(node.sent) == 1 and node.sent[0][1]["timestamp"] == t0
    assert any("no kept frame has the prompt's timestamp" in r.getMessage() for r in caplog.records)


def test_the_event_pump_keeps_each_inputs_newest_events_in_order_and_counts_the_rest():
    """While the model works, the pump takes dora's events off its queues (where they would overflow
    with a warning each), keeping the newest `keep` per input, in arrival order."""
    import time

    from dora_sam2.node import EventPump

    class ScriptedNode:
        def __init__(self, events):
            self.events = list(events)

        def next(self):
            return self.events.pop(0) if self.events else None

    def event(input_id, i):
        return {"type": "INPUT", "id": input_id, "value": pa.array([i]), "metadata": {}}

    script = [event("image", 0), event("bbox", 0), event("image", 1), event("image", 2), event("bbox", 1),
              event("image", 3), {"type": "STOP", "id": None}]
    pump = EventPump(ScriptedNode(script), keep=2)
    deadline = time.monotonic() + 5
    while not pump._ended and time.monotonic() < deadline:  # let the pump take everything first
        time.sleep(0.01)
    [(batch, dropped)] = list(pump.batches())
    assert [(e["id"], e["value"][0].as_py() if e["type"] == "INPUT" else None) for e in batch] == [
        ("bbox", 0), ("image", 2), ("bbox", 1), ("image", 3), (None, None)]
    assert dropped == {"image": 2}
