"""The seed's applications and the overlay, in one real dataflow with the random-weight model."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from support.dataflows import EXAMPLES, event_time, image, lossless, node, run_dataflow, seed_flow

from dora_sam2.timeline import TIMESTAMP_TOLERANCE
from dora_sam2.masks import bounding_boxes

pytestmark = pytest.mark.dataflow


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_dir):
    tmp = tmp_path_factory.mktemp("apps")
    boxes = [[100, 100, 300, 300, "cup"], [250, 200, 450, 400, "ball"]]  # they overlap
    masks, image = lossless("sam2/masks"), lossless("camera/image")
    apps = [node("remove", EXAMPLES / "remove_objects.py", {"image": image, "mask": lossless("sam2/mask")}, ["image"]),
            node("extract", EXAMPLES / "extract_objects.py", {"image": image, "mask": lossless("sam2/mask")}, ["image"]),
            node("collide", EXAMPLES / "collisions.py", {"masks": masks}, ["collisions"])]
    collect = {"frame": image, "mask": lossless("sam2/mask"), "masks": masks, "overlay": lossless("sam2/overlay"),
               "removed": lossless("remove/image"), "extracted": lossless("extract/image"),
               "collisions": lossless("collide/collisions")}
    # EVERY_FRAME: every frame's answer, whatever the machine's pace
    result = run_dataflow(tmp, seed_flow(model_dir, boxes, 4, 2, ("mask", "masks", "overlay"), {"EVERY_FRAME": "1"},
                                         apps, collect))
    assert result.returncode == 0, result.log[-4000:]
    return result


def by_frame(run):
    """Every output grouped with the camera frame it came from (timestamps equal to dora's precision)."""
    events = run.events()
    groups = []
    for frame in (e for e in events if e["id"] == "frame"):
        group = {e["id"]: e for e in events if abs(event_time(e) - event_time(frame)) <= TIMESTAMP_TOLERANCE}
        groups.append(group)
    answered = [g for g in groups if "mask" in g]
    assert len(answered) >= 3  # EVERY_FRAME: all 4 frames (dora may stop the detector before the last)
    return answered


def masks_of(event):
    meta = event["metadata"]
    return event["value"].reshape(-1, int(meta["height"]), int(meta["width"])).astype(bool)


def test_overlay_differs_where_the_masks_are_and_not_elsewhere(run):
    for group in by_frame(run):
        frame, overlay, masks = image(group["frame"]), image(group["overlay"]), masks_of(group["masks"])
        assert group["overlay"]["metadata"]["encoding"] == "bgr8"
        changed = (frame != overlay).any(axis=2)
        union = masks.any(0).astype(np.uint8)
        inside = cv2.erode(union, np.ones((5, 5), np.uint8)).astype(bool)
        assert changed[inside].all()
        allowed = cv2.dilate(union, np.ones((9, 9), np.uint8)).astype(bool)
        for x1, y1, _, _ in bounding_boxes(masks):  # each caption sits just above its mask
            if not np.isnan(x1):
                allowed[max(int(y1) - 22, 0):int(y1) + 2, int(x1):int(x1) + 260] = True
        assert not changed[~allowed].any()


def test_extraction_keeps_objects_and_blacks_out_the_rest(run):
    for group in by_frame(run):
        frame, extracted, union = image(group["frame"]), image(group["extracted"]), masks_of(group["mask"])[0]
        np.testing.assert_array_equal(extracted[union], frame[union])
        assert (extracted[~union] == 0).all()


def test_removal_is_applied_to_each_answer_and_the_frame_it_was_computed_on(run):
    """The wiring: each removed image is the example's `remove` of the frame the mask was computed on,
    with that mask. (What `remove` does is held to a real shape by test_removal_of_one_object: the
    random model's masks are noise, which grown covers the whole frame.)"""
    sys.path.insert(0, str(EXAMPLES))
    from remove_objects import remove

    for group in by_frame(run):
        frame, removed, [union] = image(group["frame"]), image(group["removed"]), masks_of(group["mask"])
        np.testing.assert_array_equal(removed, remove(frame, union))


def test_removal_of_one_object():
    sys.path.insert(0, str(EXAMPLES))
    from remove_objects import remove

    ys, xs = np.mgrid[0:120, 0:160]
    frame = np.repeat((40 + xs + ys).astype(np.uint8)[..., None], 3, axis=2)
    frame[40:80, 50:90] = (0, 0, 220)  # a red block
    union = np.zeros((120, 160), bool)
    union[40:80, 50:90] = True
    removed = remove(frame, union)
    near = cv2.dilate(union.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    np.testing.assert_array_equal(removed[~near], frame[~near])
    inside = removed[45:75, 55:85].astype(int)
    assert (abs(inside[..., 2] - inside[..., 1]) < 30).all()  # no red left: grey, like its surroundings


def test_collisions_are_the_pairs_whose_masks_share_pixels(run):
    for group in by_frame(run):
        masks = masks_of(group["masks"])
        expected = [i for a in range(len(masks)) for b in range(a + 1, len(masks))
                    if np.logical_and(masks[a], masks[b]).any() for i in (a, b)]
        assert group["collisions"]["value"].tolist() == expected
        assert len(group["collisions"]["metadata"]["labels"]) == len(expected) // 2
