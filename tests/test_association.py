"""Matching detections to tracks: pure functions, checked against brute force and hand-made scenes."""

from __future__ import annotations

import numpy as np
import pytest

from dora_sam2.association import associate, box_iou, centres_apart
from dora_sam2.geometry import mask_boxes


def test_crossing_objects_are_not_swapped_where_greedy_would_swap_them():
    # Track 0 overlaps detection 0 best of all pairs (0.43), so nearest-first takes that pair and leaves
    # track 1 with detection 1 (0.0). The other pairing, the true motion, totals 0.33 + 0.25.
    tracks = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], float)
    detections = np.array([[4, 0, 14, 10], [-5, 0, 5, 10]], float)
    iou = box_iou(tracks, detections)
    assert iou[0, 0] == iou.max()  # what greedy would grab first
    found = associate(tracks, detections, min_iou=0.05)
    total = sum(iou[t, d] for t, d in found.matches)
    assert total == max(iou[0, 0] + iou[1, 1], iou[0, 1] + iou[1, 0])
    assert found.matches == [(0, 1), (1, 0)]


def test_a_missed_detection_leaves_its_track_unmatched_and_starts_nothing():
    tracks = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 120, 20]], float)
    detections = np.array([[101, 1, 121, 21], [1, 0, 11, 10]], float)  # the middle object was missed
    found = associate(tracks, detections, min_iou=0.3)
    assert found.matches == [(0, 1), (2, 0)]
    assert found.unmatched_tracks == [1] and found.new_detections == []


def test_a_detection_far_from_every_track_starts_a_new_one():
    found = associate(np.array([[0, 0, 10, 10]], float), np.array([[0, 0, 10, 10], [80, 80, 90, 90]], float), 0.3)
    assert found.matches == [(0, 0)] and found.new_detections == [1]


def test_overlap_below_the_bar_is_no_match():
    found = associate(np.array([[0, 0, 10, 10]], float), np.array([[8, 8, 18, 18]], float), min_iou=0.3)
    assert found.matches == [] and found.new_detections == [0] and found.unmatched_tracks == [0]


def test_each_track_may_have_its_own_reach_and_the_nearest_pair_wins_whatever_the_reach():
    """Two tracks with 10-px boxes (diagonal 14.1): the detection's centre lies 3 diagonals from the first and
    5.4 from the second. Reach 4 for both matches the first; 2 and 5.9 only the second; 5.9 for both, the
    nearer; 2 for both, neither."""
    tracks = np.array([[0, 0, 10, 10], [0, 100, 10, 110]], float)
    d = 3 * np.hypot(10, 10) / np.sqrt(2)  # 3 diagonals away along both axes from the first
    detection = np.array([[d, d, d + 10, d + 10]], float)
    apart = [3.0, float(np.hypot(d, d - 100) / np.hypot(10, 10))]
    assert apart[1] > 4  # the second lies further than the first by more than the reaches below tell apart
    assert associate(tracks, detection, min_iou=0.3, reach=4.0).matches == [(0, 0)]
    assert associate(tracks, detection, min_iou=0.3, reach=[2.0, apart[1] + 0.5]).matches == [(1, 0)]
    assert associate(tracks, detection, min_iou=0.3, reach=[apart[1] + 0.5] * 2).matches == [(0, 0)]
    assert associate(tracks, detection, min_iou=0.3, reach=[2.0, 2.0]).matches == []


def test_track_never_seen_matches_nothing():
    found = associate(np.full((1, 4), np.nan), np.array([[0, 0, 10, 10]], float), min_iou=0.0)
    assert found.matches == [] and found.new_detections == [0]


def test_ids_follow_objects_through_motion_and_occlusion():
    """Three objects drift each frame, one hides behind another for a while; the detector fires every
    third frame. Matching the newest visible box of each track keeps every identity."""
    size, frames = 12, 30
    truth = {0: (10, 10, 2, 0), 1: (60, 10, -1, 1), 2: (30, 60, 1, -1)}  # x, y, dx, dy per frame
    boxes = np.array([[x, y, x + size, y + size] for x, y, _, _ in truth.values()], float)
    for t in range(1, frames):
        positions = {i: (x + dx * t, y + dy * t) for i, (x, y, dx, dy) in truth.items()}
        hidden = {1} if 10 <= t < 16 else set()
        masks = np.zeros((3, 100, 100), bool)
        for i, (x, y) in positions.items():
            if i not in hidden:
                masks[i, y : y + size, x : x + size] = True
        seen = mask_boxes(masks)
        visible = ~np.isnan(seen).any(axis=1)
        boxes[visible] = seen[visible]  # a hidden track keeps its last box
        if t % 3 == 0:
            order = [2, 0, 1]  # detectors list objects in any order
            detections = np.array([[*positions[i], positions[i][0] + size, positions[i][1] + size]
                                   for i in order if i not in hidden], float)
            shown = [i for i in order if i not in hidden]
            found = associate(boxes, detections, min_iou=0.3)
            assert found.new_detections == [], t
            assert {track: shown[d] for track, d in found.matches} == {i: i for i in shown}, t


def test_mask_boxes_enclose_the_mask_in_pixel_edges_and_mark_empty_ones():
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 5:8, 10:20] = True
    boxes = mask_boxes(masks)
    np.testing.assert_array_equal(boxes[0], [10, 5, 20, 8])
    assert np.isnan(boxes[1]).all()


def test_a_detection_of_another_kind_overlaps_only_the_boxes_given_after_others_from():
    """A track's mask box (first) lies on a detection, its last detection's box (second) far from it: of the
    detection's own kind, the track takes it by overlap; of another kind, only where the detector last saw
    the track counts, so the detection stays unmatched (with `others_from=0`, every box counts for both)."""
    track = np.array([[[40, 40, 60, 60], [0, 0, 20, 20]]], float)
    detection = np.array([[42, 41, 61, 60]], float)
    for allowed, others_from, matched in [(True, 1, True), (False, 1, False), (False, 0, True)]:
        found = associate(track, detection, 0.3, allowed=[[allowed]], others_from=others_from)
        assert (found.matches == [(0, 0)]) == matched and (found.new_detections == [0]) != matched


def test_a_sliver_is_measured_in_its_object_s_size():
    """An object 30 px wide went behind something as a 6-px sliver (its track's box) and comes out as
    another, 40 px on: 4.7 sliver diagonals, beyond a reach of 2, but 1.6 of the mean of the object's own
    diagonal (42.4) and the sliver's, within it. A size under the box's own changes nothing."""
    track = np.array([[0, 0, 6, 6]], float)
    detection = np.array([[40, 0, 46, 6]], float)
    whole = float(np.hypot(30, 30))
    assert associate(track, detection, 0.3, reach=2.0).matches == []
    assert associate(track, detection, 0.3, reach=2.0, sizes=[whole]).matches == [(0, 0)]
    assert associate(track, detection, 0.3, reach=2.0, sizes=[1.0]).matches == []
    apart = centres_apart(track[:, None], detection, sizes=[whole])[0, 0]
    assert apart == pytest.approx(40 / ((whole + np.hypot(6, 6)) / 2))
