"""The overlay changes the frame where a mask is, and nowhere far from one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from support.dataflows import random_frame

from dora_sam2 import codecs, overlay
from dora_sam2.domain import Frame, Masks


def scene():
    masks = np.zeros((2, 120, 160), bool)
    masks[0, 60:100, 20:70] = True
    masks[1, 70:110, 60:140] = True  # overlaps the first
    return random_frame(1, 160, 120, encoding="bgr8"), Masks(masks, np.array([0.9, 0.7], np.float32), ("cup", "ball"), "image", None)


def test_overlay_differs_inside_masks_and_not_far_outside():
    frame, masks = scene()
    drawn = overlay.draw(frame, masks)
    changed = (drawn != frame.rgb).any(axis=2)
    inside = cv2.erode(masks.masks.any(0).view(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert changed[inside].all()
    near = cv2.dilate(masks.masks.any(0).view(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    captions = np.zeros_like(near)
    # Captions sit above each mask's top (y=60, y=70), under 20 px tall; the ball's, which would cover the
    # cup's, goes just below it.
    captions[38:70, :] = True
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


# ---------------------------------------------------------------------------- where captions go


def text_size(caption: str) -> tuple[int, int]:
    """What OpenCV draws for the caption (the overlay's font, its 3-pixel stroke): its box must hold this."""
    (width, height), baseline = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 3)
    return width, height + baseline


def assert_apart_and_inside(boxes, captions, shape):
    """Every box inside the frame and holding its text, no pixel in two boxes."""
    height, width = shape
    covered = np.zeros(shape, int)
    for (x, y, w, h), caption in zip(boxes, captions):
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height, (x, y, w, h)
        text_width, text_height = text_size(caption)
        assert w >= text_width and h >= text_height
        covered[y:y + h, x:x + w] += 1
    assert covered.max() == 1


def test_captions_of_masks_with_one_top_left_corner_are_stacked_apart():
    """Three objects nested in one another (a person, their bag, its strap) share a top-left corner: each
    caption would be drawn on the same spot."""
    captions = ["#1 person 0.97", "#2 bag 0.88", "#3 strap 0.51"]
    placed = overlay.caption_boxes(captions, [(200, 150)] * 3, (360, 640))
    assert [caption for caption, _ in placed] == captions
    boxes = [box for _, box in placed]
    assert_apart_and_inside(boxes, captions, (360, 640))
    assert all(box.x == 200 for box in boxes)  # each stays in its mask's column
    assert sum(box.y + box.height <= 150 for box in boxes) >= 1  # one where a caption belongs: above the mask


def test_captions_of_side_by_side_masks_whose_texts_overlap_are_moved_apart():
    """Two masks 30 px apart, the first caption about 100 px wide: the second would be drawn over it."""
    captions = ["cup 0.90 (left)", "ball 0.70"]
    boxes = [box for _, box in overlay.caption_boxes(captions, [(20, 60), (50, 64)], (120, 160))]
    assert_apart_and_inside(boxes, captions, (120, 160))


def test_a_caption_with_room_sits_just_above_its_mask():
    (_, box), = overlay.caption_boxes(["cup 0.90"], [(40, 80)], (120, 160))
    assert box.x == 40 and 0 <= 80 - (box.y + box.height) <= 4


@pytest.mark.parametrize("corner", [(0, 0), (155, 2), (150, 119), (0, 119)])
def test_a_caption_at_the_frame_s_edge_stays_inside_it(corner):
    boxes = [box for _, box in overlay.caption_boxes(["#1 cup 0.90", "#2 ball 0.70"], [corner] * 2, (120, 160))]
    assert_apart_and_inside(boxes, ["#1 cup 0.90", "#2 ball 0.70"], (120, 160))


def test_more_captions_than_a_column_holds_are_all_drawn_inside_the_frame():
    """Thirty objects at one corner of a 60-pixel frame: a caption covers another rather than vanish."""
    captions = [f"#{i} cup 0.50" for i in range(30)]
    boxes = [box for _, box in overlay.caption_boxes(captions, [(10, 30)] * 30, (60, 160))]
    assert len(boxes) == 30
    for x, y, w, h in boxes:
        assert 0 <= x and x + w <= 160 and 0 <= y and y + h <= 60


def test_empty_masks_and_empty_captions_get_no_place():
    placed = overlay.caption_boxes(["cup 0.90", "", "ball 0.70"], [None, (10, 50), (10, 50)], (120, 160))
    assert [box is None for _, box in placed] == [True, True, False]


def test_the_same_objects_get_the_same_captions_in_any_order():
    captions, corners = ["cup 0.90", "ball 0.70", "dog 0.60"], [(20, 60), (30, 62), (25, 58)]
    forward = dict(overlay.caption_boxes(captions, corners, (120, 160)))
    backward = dict(overlay.caption_boxes(captions[::-1], corners[::-1], (120, 160)))
    assert forward == backward


def test_the_overlay_writes_each_caption_in_its_own_place(monkeypatch):
    """Two masks with one top-left corner: each caption's letters are drawn inside the box placed for it,
    and nowhere else (against the same overlay drawn without captions)."""
    rgb = np.full((120, 160, 3), 128, np.uint8)
    stack = np.zeros((2, 120, 160), bool)
    stack[0, 70:110, 20:100] = True
    stack[1, 70:90, 20:60] = True
    masks = Masks(stack, np.array([0.9, 0.7], np.float32), ("cup", "ball"), "image", None)
    frame = Frame("image", rgb, None, "rgb8")
    drawn = overlay.draw(frame, masks)
    monkeypatch.setattr(overlay, "_write", lambda *args: None)
    letters = (drawn != overlay.draw(frame, masks)).any(axis=2)
    captions = masks.captions(scores=True)
    boxes = [box for _, box in overlay.caption_boxes(captions, [(20, 70)] * 2, (120, 160))]
    assert_apart_and_inside(boxes, captions, (120, 160))
    inside = np.zeros_like(letters)
    for x, y, w, h in boxes:
        assert letters[y:y + h, x:x + w].sum() > 20
        inside[y:y + h, x:x + w] = True
    assert not letters[~inside].any()
