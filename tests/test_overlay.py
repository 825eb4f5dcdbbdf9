"""The overlay changes the frame where a mask is, and nowhere far from one."""

from __future__ import annotations

import cv2
import numpy as np

from dora_sam2 import codecs, overlay
from dora_sam2.domain import Frame, Masks


def scene():
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    masks = np.zeros((2, 120, 160), bool)
    masks[0, 60:100, 20:70] = True
    masks[1, 70:110, 60:140] = True  # overlaps the first
    return Frame("image", rgb, None, "bgr8"), Masks(masks, np.array([0.9, 0.7], np.float32), ("cup", "ball"), "image", None)


def test_overlay_differs_inside_masks_and_not_far_outside():
    frame, masks = scene()
    drawn = overlay.draw(frame, masks)
    changed = (drawn != frame.rgb).any(axis=2)
    inside = cv2.erode(masks.masks.any(0).view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert changed[inside].all()
    near = cv2.dilate(masks.masks.any(0).view(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    captions = np.zeros_like(near)
    captions[38:70, :] = True  # captions sit 6 px above each mask top (y=60, y=70), about 12 px tall
    assert not changed[~near & ~captions].any()


def test_colours_follow_track_ids_not_slots():
    frame, masks = scene()
    swapped = Masks(masks.masks[::-1].copy(), masks.scores[::-1].copy(), masks.class_names[::-1], "image", None,
                    track_ids=(5, 3))
    again = Masks(masks.masks.copy(), masks.scores, masks.class_names, "image", None, track_ids=(3, 5))
    assert overlay.colour_keys(swapped) == [5, 3] and overlay.colour_keys(again) == [3, 5]
    only_first = (masks.masks[0] & ~masks.masks[1]).view(np.uint8)
    only_first = cv2.erode(only_first, np.ones((7, 7), np.uint8)).astype(bool)  # clear of outlines
    a, b = overlay.draw(frame, swapped), overlay.draw(frame, again)
    np.testing.assert_array_equal(a[only_first], b[only_first])  # same object, same colour


def test_no_masks_leaves_the_frame_untouched():
    frame, _ = scene()
    empty = Masks(np.zeros((0, 120, 160), bool), np.zeros(0, np.float32), (), "image", None)
    np.testing.assert_array_equal(overlay.draw(frame, empty), frame.rgb)


def test_overlay_goes_back_in_the_cameras_channel_order():
    frame, masks = scene()
    drawn = overlay.draw(frame, masks)
    value, metadata = codecs.encode_overlay(frame, drawn)
    assert metadata["encoding"] == "bgr8" and metadata["primitive"] == "image"
    np.testing.assert_array_equal(value.to_numpy().reshape(120, 160, 3), drawn[..., ::-1])
    rgb_frame = Frame("image", frame.rgb, None, "rgb8")
    value, metadata = codecs.encode_overlay(rgb_frame, drawn)
    assert metadata["encoding"] == "rgb8"
    np.testing.assert_array_equal(value.to_numpy().reshape(120, 160, 3), drawn)


def test_each_view_names_an_object_by_its_id_label_and_score():
    from dora_sam2.domain import Masks

    stack = np.zeros((2, 4, 4), bool)
    tracked = Masks(stack, np.array([0.9, 0.5], np.float32), ("cup", ""), "image", None, track_ids=(3, 7))
    assert tracked.captions() == ["#3 cup", "#7"]
    assert tracked.captions(scores=True) == ["#3 cup 0.90", "#7 0.50"]
    segmented = Masks(stack, np.array([0.9, 0.5], np.float32), ("cup", ""), "image", None)
    assert segmented.captions() == ["cup", ""] and segmented.captions(scores=True) == ["cup 0.90", "0.50"]
