"""The consumer helpers, against hand-built masks and independent computations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from dora_sam2 import codecs
from dora_sam2.domain import Masks
from dora_sam2.timeline import AnswersOnFrames
from dora_sam2.masks import (area, bounding_boxes, centroids, colliding_pairs, coverage,
                             decode_masks, decode_union, extract, inpaint_mask, masks_with_frames, overlaps)


def stack():
    m = np.zeros((3, 6, 8), bool)
    m[0, 1:3, 2:5] = True      # 2x3 block
    m[1, 2:5, 4:7] = True      # overlaps block 0 at (2, 4)
    return m                   # object 2 is empty


def answer(n: int) -> Masks:
    masks = np.random.default_rng(n).random((n, 6, 8)) > 0.5
    return Masks(masks, np.zeros(n, np.float32), ("",) * n, "image", None)


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("encode", [codecs.encode_masks, lambda masks: codecs.encode_mask(masks, "stack")],
                         ids=["masks", "mask-stack"])
def test_decode_masks_round_trips_the_per_object_outputs(n, encode):
    value, metadata = encode(answer(n))
    decoded = decode_masks({"value": value, "metadata": metadata})
    assert decoded.shape == (n, 6, 8) and decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, answer(n).masks)


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("encode", [codecs.encode_mask, codecs.encode_masks,
                                    lambda masks: codecs.encode_mask(masks, "stack")],
                         ids=["mask", "masks", "mask-stack"])
def test_decode_union_reads_every_output(n, encode):
    value, metadata = encode(answer(n))
    expected = np.logical_or.reduce(answer(n).masks, axis=0) if n else np.zeros((6, 8), bool)
    np.testing.assert_array_equal(decode_union({"value": value, "metadata": metadata}), expected)


def test_decode_masks_on_a_union_says_where_the_objects_are():
    value, metadata = codecs.encode_mask(answer(3))
    with pytest.raises(ValueError, match="union of its 3 objects.*`masks` output"):
        decode_masks({"value": value, "metadata": metadata})


def test_decode_rejects_what_is_not_masks():
    with pytest.raises(ValueError, match="UInt8 or Boolean"):
        decode_masks({"value": pa.array([1.0]), "metadata": {"width": 1, "height": 1}})
    with pytest.raises(ValueError, match="whole number"):
        decode_masks({"value": pa.array([1, 0, 1], pa.uint8()), "metadata": {"width": 2, "height": 1}})


def test_area_coverage_centroid_box():
    m = stack()
    np.testing.assert_array_equal(area(m), [6, 9, 0])
    np.testing.assert_allclose(coverage(m), [6 / 48, 9 / 48, 0])
    c = centroids(m)
    np.testing.assert_allclose(c[:2], [[3.0, 1.5], [5.0, 3.0]])
    assert np.isnan(c[2]).all()
    b = bounding_boxes(m)
    np.testing.assert_array_equal(b[:2], [[2, 1, 5, 3], [4, 2, 7, 5]])  # pixel edges: right/bottom exclusive
    assert np.isnan(b[2]).all()


def test_overlaps_and_collisions_match_pairwise_and():
    m = stack()
    expected = np.array([[np.logical_and(a, b).sum() for b in m] for a in m])
    np.testing.assert_array_equal(overlaps(m), expected)
    assert colliding_pairs(m) == [(0, 1)]
    assert colliding_pairs(m, min_pixels=2) == []


def test_extract_black_and_transparent():
    m = stack()
    image = np.random.default_rng(0).integers(1, 255, (6, 8, 3), dtype=np.uint8)
    black = extract(image, m)
    union = m.any(0)
    np.testing.assert_array_equal(black[union], image[union])
    assert (black[~union] == 0).all()
    rgba = extract(image, m, transparent=True)
    assert rgba.shape == (6, 8, 4) and (rgba[union, 3] == 255).all() and (rgba[~union, 3] == 0).all()
    np.testing.assert_array_equal(extract(image, union), black)  # the union `mask` does the same


def test_inpaint_mask_covers_objects_and_grows():
    m = stack()
    plain, grown = inpaint_mask(m), inpaint_mask(m, grow=1)
    assert set(np.unique(plain)) == {0, 255}
    np.testing.assert_array_equal(plain > 0, m.any(0))
    assert (grown >= plain).all() and grown.sum() > plain.sum()
    np.testing.assert_array_equal(inpaint_mask(m.any(0), grow=1), grown)  # from the union `mask` alike


def test_answers_find_their_frame_by_timestamp_within_dora_precision_while_it_is_kept():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    pairs = AnswersOnFrames(size=2)
    for i in range(3):
        pairs.frame("image", t0 + timedelta(seconds=i), i)
    assert pairs.answer("image", t0, "old") == [("old", None)]  # its frame was let go
    assert pairs.answer("image", t0 + timedelta(seconds=2, microseconds=1), "new") == [("new", 2)]


def test_masks_with_frames_pairs_each_answer_with_its_frame():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def image(i):
        return {"type": "INPUT", "id": "image", "value": pa.array(np.full(2 * 2 * 3, i, np.uint8)),
                "metadata": {"width": 2, "height": 2, "timestamp": t0 + timedelta(seconds=i)}}

    def mask(i):
        return {"type": "INPUT", "id": "mask", "value": pa.array([1, 0, 0, 1], pa.uint8()),
                "metadata": {"width": 2, "height": 2, "timestamp": t0 + timedelta(seconds=i, microseconds=1)}}

    # dora delivers inputs by fairness: mask 2 comes before its frame; mask 3's frame never comes
    stream = [image(0), image(1), {"type": "INPUT_CLOSED", "id": "x"}, mask(1), mask(2), mask(3), image(2),
              mask(0), image(4), mask(7)]
    pairs = list(masks_with_frames(stream))
    assert [int(frame[0, 0, 0]) for frame, _, _ in pairs] == [1, 2, 0]
    assert [m["timestamp"].second for _, _, m in pairs] == [1, 2, 0]
    assert pairs[0][1].shape == (2, 2)  # `mask`: the union
    masks = [dict(mask(1), id="masks", value=pa.array([True, False, False, True]))]
    [(_, per_object, _)] = masks_with_frames([image(1), *masks], mask_input="masks")
    assert per_object.shape == (1, 2, 2)


def test_answers_waiting_for_a_camera_that_never_sends_are_given_up_oldest_first():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    pairs = AnswersOnFrames(size=2)
    assert pairs.answer("left", t0, "a") == [] and pairs.answer("left", t0 + timedelta(seconds=1), "b") == []
    assert pairs.answer("left", t0 + timedelta(seconds=2), "c") == [("a", None)]
    assert pairs.frame("right", t0, "R0") == []  # another camera's frame settles nothing here
    assert pairs.frame("left", t0 + timedelta(seconds=2), "L2") == [("b", None), ("c", "L2")]


# -- an answer cut to some of its objects, as supervision's Detections is


def three_objects() -> Masks:
    """Three 2x2 masks, each field of each object told apart by hand."""
    m = np.zeros((3, 2, 2), bool)
    m[0, 0, 0] = m[1, 0, 1] = True
    m[2, 1, :] = True
    return Masks(m, np.array([0.9, 0.5, 0.7], np.float32), ("cup", "", "bottle"), "left",
                 datetime(2026, 1, 1, tzinfo=timezone.utc), track_ids=(4, 7, 9), visible=np.array([True, False, True]),
                 boxes=np.array([[0, 0, 1, 1], [1, 0, 2, 1], [0, 1, 2, 2]], np.float32))


def test_a_bool_array_keeps_the_objects_it_marks_in_every_field():
    kept = three_objects()[np.array([True, False, True])]
    assert len(kept) == 2
    np.testing.assert_array_equal(kept.masks, [[[True, False], [False, False]], [[False, False], [True, True]]])
    np.testing.assert_array_equal(kept.scores, np.array([0.9, 0.7], np.float32))
    assert kept.class_names == ("cup", "bottle") and kept.track_ids == (4, 9)
    assert all(type(name) is str for name in kept.class_names) and all(type(i) is int for i in kept.track_ids)
    np.testing.assert_array_equal(kept.visible, [True, True])
    np.testing.assert_array_equal(kept.boxes, [[0, 0, 1, 1], [0, 1, 2, 2]])
    assert (kept.image_id, kept.timestamp) == ("left", datetime(2026, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize("indices", [np.array([2, 0]), [2, 0]], ids=["array", "list"])
def test_indices_keep_those_objects_in_their_order(indices):
    kept = three_objects()[indices]
    np.testing.assert_array_equal(kept.masks, [[[False, False], [True, True]], [[True, False], [False, False]]])
    np.testing.assert_array_equal(kept.scores, np.array([0.7, 0.9], np.float32))
    assert kept.class_names == ("bottle", "cup") and kept.track_ids == (9, 4)
    np.testing.assert_array_equal(kept.visible, [True, True])
    np.testing.assert_array_equal(kept.boxes, [[0, 1, 2, 2], [0, 0, 1, 1]])


def test_one_index_or_a_slice_is_still_an_answer():
    one = three_objects()[1]
    assert len(one) == 1 and one.class_names == ("",) and one.track_ids == (7,) and one.visible.tolist() == [False]
    np.testing.assert_array_equal(one.masks, [[[False, True], [False, False]]])
    first = three_objects()[:2]
    assert first.class_names == ("cup", "") and first.track_ids == (4, 7)
    np.testing.assert_array_equal(first.boxes, [[0, 0, 1, 1], [1, 0, 2, 1]])


@pytest.mark.parametrize("nothing", [np.zeros(3, bool), np.array([], int), []], ids=["bool", "int", "list"])
def test_keeping_nothing_is_an_empty_answer_of_the_frames_size(nothing):
    empty = three_objects()[nothing]
    assert len(empty) == 0 and empty.masks.shape == (0, 2, 2) and empty.masks.dtype == np.bool_
    assert empty.class_names == () and empty.track_ids == () and empty.scores.shape == (0,)
    assert empty.visible.shape == (0,) and empty.boxes.shape == (0, 4)
    assert empty.image_id == "left"


def test_fields_an_answer_lacks_stay_absent_and_a_wrong_length_is_refused():
    plain = Masks(np.ones((2, 1, 1), bool), np.array([0.1, 0.2], np.float32), ("a", "b"), "image", None)
    kept = plain[np.array([False, True])]
    assert kept.class_names == ("b",) and kept.track_ids is None and kept.visible is None and kept.boxes is None
    with pytest.raises(IndexError):
        plain[np.array([True, False, True])]
