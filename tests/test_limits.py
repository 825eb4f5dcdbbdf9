"""Bounds hold: floods of what others send (cameras, boxes, refused requests) leave each structure within
its named limit, and memory within a stated figure. Counts and bytes only: nothing here is timed.

Memory is read with tracemalloc, which sees numpy's buffers: Python's and numpy's allocations, the
structures a flood could grow. BENCHMARKS.md has the same floods' RSS, measured by benchmarks/floods.py.
"""

from __future__ import annotations

import logging
import tracemalloc
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from support.dataflows import random_frame

from dora_sam2 import codecs, model as model_module
from dora_sam2.domain import Frame, Masks, Prompt
from dora_sam2.engine import Segmenter
from dora_sam2.scheduling import DetectionFilter, SegmentScheduler, TrackScheduler
from dora_sam2.settings import Limits
from dora_sam2.stats import Stages, Stats

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
MB = 1 << 20


def traced_growth(flood) -> int:
    """Bytes still held (by Python and numpy) after `flood()` ran, beyond what was held before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = flood()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return grown


def test_10000_made_up_cameras_hold_at_most_max_waiting_answers(tmp_path):
    """The rerun viewer, fed answers naming 10,000 cameras it never sees: each 320x240 answer is 77 kB,
    so kept they would be 770 MB; at most MAX_WAITING (64) wait, under 10 MB."""
    rr = pytest.importorskip("rerun", reason="rerun-sdk is not installed")
    from dora_sam2.rerun_viewer import MaskLogger

    rr.init("limits", spawn=False)
    rr.save(str(tmp_path / "t.rrd"))
    limits = Limits()
    logger = MaskLogger(rr, limits=limits)
    logger.frame(Frame("image", np.zeros((240, 320, 3), np.uint8), T0, "rgb8"))

    def flood():
        for i in range(10_000):
            value, metadata = codecs.encode_masks(Masks(np.ones((1, 240, 320), bool), np.ones(1, np.float32), ("x",),
                                                        f"camera {i}", T0 + timedelta(seconds=i)))
            logger.answer("masks", {"value": value, "metadata": metadata})
        return logger

    grown = traced_growth(flood)
    rr.disconnect()
    assert logger._pairs.waiting == limits.max_waiting
    assert grown < 10 * MB, grown


def test_10000_made_up_cameras_in_prompts_hold_at_most_max_cameras_queues():
    """dora 0.5 does not say which inputs are cameras: a prompt's image_id is taken as it comes, and each
    new one would have been a queue of its own."""
    limits = Limits(max_cameras=4)
    scheduler = TrackScheduler(None, Stats(Stages(), 0), cameras=(), limits=limits)
    box = np.array([[1, 1, 9, 9]], np.float32)
    for i in range(10_000):
        list(scheduler.handle([Prompt.from_boxes("bbox", box, image_id=f"cam{i}"),
                               Prompt.from_points("points", np.array([[3, 3]], np.float32), [1], image_id=f"cam{i}")]))
    assert len(scheduler._detections.cameras) <= 4 and len(scheduler._clicks) <= 4


def test_clicks_waiting_for_a_camera_are_bounded():
    limits = Limits(max_clicks=5)
    scheduler = TrackScheduler(None, Stats(Stages(), 0), cameras=("image",), limits=limits)
    for _ in range(100):
        list(scheduler.handle([Prompt.from_points("points", np.array([[3, 3]], np.float32), [1])]))
    assert len(scheduler._clicks) == 5 and scheduler.stats.skipped == 95


def test_a_1000_box_message_answers_the_100_most_confident_16_at_a_time(model, monkeypatch, caplog):
    """MAX_BOXES keeps the detector's most confident boxes and counts the rest; the decoder sees at most
    DECODE_BATCH objects at once, so its working memory does not grow with the message."""
    seen = []
    real = model_module.predict_masks

    def counting(decoder, image, pe, sparse, *rest):
        seen.append(sparse.shape[1])
        return real(decoder, image, pe, sparse, *rest)

    monkeypatch.setattr(model_module, "predict_masks", counting)
    stats = Stats(Stages(), 0)
    scheduler = SegmentScheduler(Segmenter(model), stats, detections=DetectionFilter(max_boxes=100))
    frame = random_frame(0, 64, 48, T0)
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 30, (1000, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 30, (1000, 2)).astype(np.float32)], axis=1)
    confidences = rng.uniform(0, 1, 1000).astype(np.float32)
    prompt = Prompt.from_boxes("bbox", boxes, [f"box {i}" for i in range(1000)], timestamp=T0, confidences=confidences)
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        [(_, masks)] = list(scheduler.handle([frame, prompt]))
    top = np.sort(np.argsort(-confidences)[:100])
    assert masks.class_names == tuple(f"box {i}" for i in top)
    assert stats.filtered == 900 and max(seen) <= model_module.DECODE_BATCH and sum(seen) == 100
    assert [r.getMessage() for r in caplog.records] == [
        "input 'bbox': 1000 boxes in one message, over MAX_BOXES=100: the 100 most confident are answered"]


def test_an_answer_of_more_than_max_masks_masks_is_refused_before_any_mask_is_read():
    """100,000 masks of 4x4 pixels (1.6 MB on the wire) in one answer: over MAX_MASKS, refused by the
    decoder every reader of answers shares (the viewer, the dataset writer, `decode_masks`), with what it
    counted; the next answer is read as usual. Class names are cut at 100 characters."""
    import pyarrow as pa

    limits = Limits(max_masks=1000)
    flood = {"width": 4, "height": 4, "labels": ["x"] * 100_000, "scores": [1.0] * 100_000}
    with pytest.raises(ValueError, match="100000 masks in one message, over MAX_MASKS=1000"):
        codecs.decode_answer("masks", pa.array(np.zeros(100_000 * 16, bool)), flood, limits)
    value, metadata = codecs.encode_masks(Masks(np.ones((2, 4, 4), bool), np.ones(2, np.float32), ("c" * 500, "d"),
                                                "image", T0))
    masks = codecs.decode_answer("masks", value, metadata, limits)
    assert len(masks) == 2 and masks.class_names == ("c" * 100, "d")


def test_a_remove_of_more_than_max_remove_ids_is_refused_before_an_id_is_read(caplog):
    """4 million made-up ids in one `remove` (32 MB on the wire): over MAX_REMOVE, one line naming the
    input and the bound, and not a Python int made of them (as a tuple they were 150 MB of Python ints);
    a message of exactly MAX_REMOVE ids is read, each id."""
    import pyarrow as pa

    from dora_sam2.node import Adapter
    from dora_sam2.scheduling import Remove

    limits = Limits(max_remove=1000)
    adapter = Adapter(None, TrackScheduler(None, Stats(Stages(), 0), ("image",), limits=limits),
                      Stats(Stages(), 0), ["mask"], limits=limits)
    flood = {"type": "INPUT", "id": "remove", "value": pa.array(np.arange(10**7, 10**7 + 4_000_000)), "metadata": {}}
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="dora_sam2"):
            read = list(adapter.inputs([flood]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read == [] and peak < 1 * MB, peak
    assert [r.getMessage() for r in caplog.records] == [
        "input 'remove': 4000000 track ids in one message, over MAX_REMOVE=1000: none is removed (`reset` ends "
        "every track)"]
    at_bound = {**flood, "value": pa.array(np.arange(1, 1001))}
    assert list(adapter.inputs([at_bound])) == [Remove(tuple(range(1, 1001)))]
