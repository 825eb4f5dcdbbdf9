"""benchmarks/quality.py's figures on ground truth made by hand, against values worked out by hand: a mask
shifted by a few pixels, an id swap, an object hidden and back, a track on nothing; then the whole scorer
on a world clip answered with its own truth."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402
import quality_metrics as qm  # noqa: E402


def square(x: int, y: int, side: int = 10, size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y:y + side, x:x + side] = True
    return mask


EMPTY = np.zeros((100, 100), bool)


def test_a_square_shifted_two_pixels_overlaps_by_two_thirds():
    # 10x10 squares, one 2 px to the right: 8x10 pixels shared, 120 in either
    iou = qm.iou_matrix(square(40, 40)[None], square(42, 40)[None])
    assert iou[0, 0] == pytest.approx(80 / 120)


def test_j_is_the_iou_and_f_forgives_a_shift_within_davis_tolerance():
    # A 100x100 frame: DAVIS's tolerance is ceil(0.008 * 141.4) = 2 px, so a 2 px shift leaves every
    # boundary pixel matched (F = 1) while J is the IoU, 80/120.
    j, f = qm.j_and_f([square(42, 40)], [square(40, 40)])
    assert j == pytest.approx(2 / 3)
    assert f == pytest.approx(1.0)


def test_a_frame_where_both_masks_are_empty_scores_one():
    # The object hidden and the prediction empty is right: J = F = 1 there, averaged with the shifted frame
    j, f = qm.j_and_f([square(42, 40), EMPTY], [square(40, 40), EMPTY])
    assert j == pytest.approx((2 / 3 + 1) / 2)
    assert f == pytest.approx(1.0)


def test_a_missing_or_distant_mask_scores_zero():
    assert qm.j_and_f([EMPTY], [square(40, 40)]) == (0.0, 0.0)
    assert qm.j_and_f([square(80, 80)], [square(10, 10)]) == (0.0, 0.0)


def test_an_object_never_seen_is_left_out():
    assert qm.j_and_f([EMPTY, EMPTY], [EMPTY, EMPTY]) is None


def frames_of(pairs_per_frame, truth_ids=(1, 2)):
    """FrameMatches where each frame gives {true id: predicted id} and every pair overlaps wholly."""
    frames = []
    for pairs in pairs_per_frame:
        predicted = sorted(set(pairs.values()))
        iou = np.array([[1.0 if pairs.get(t) == p else 0.0 for p in predicted] for t in truth_ids])
        frames.append(qm.FrameMatch(np.array(truth_ids), np.array(predicted), iou.reshape(len(truth_ids), -1)))
    return frames


def test_one_object_followed_throughout_scores_one():
    scores = qm.identity_scores([frames_of([{1: 5}] * 4, truth_ids=(1,))])
    assert scores["HOTA"] == pytest.approx(1.0)
    assert scores["IDF1"] == pytest.approx(1.0)
    assert scores["IDSW"] == 0


def test_an_id_swap_counts_two_switches_and_halves_idf1():
    # Objects 1 and 2, perfect masks, ids 7 and 8 swapped from frame 2 on (4 frames, 8 true detections).
    # CLEAR: both objects change id once: 2 switches; MOTA = 1 - 2/8.
    # IDF1: the best one-to-one pairing of ids keeps 4 of 8 detections: 2*4 / (8 + 8) = 0.5.
    # HOTA: every detection matched (DetA 1); each match's id is shared with its object on 2 of its 4 frames
    # and its prediction on 2 of 4: AssA = 2 / (4 + 4 - 2) = 1/3; HOTA = sqrt(1 * 1/3).
    scores = qm.identity_scores([frames_of([{1: 7, 2: 8}, {1: 7, 2: 8}, {1: 8, 2: 7}, {1: 8, 2: 7}])])
    assert scores["IDSW"] == 2
    assert scores["MOTA"] == pytest.approx(0.75)
    assert scores["IDF1"] == pytest.approx(0.5)
    assert scores["DetA"] == pytest.approx(1.0)
    assert scores["AssA"] == pytest.approx(1 / 3)
    assert scores["HOTA"] == pytest.approx(math.sqrt(1 / 3))


def test_clips_combine_as_one_sequence_each():
    # A perfect clip (4 detections, IDF1 1) and the swapped one (8 detections, IDF1 0.5):
    # IDTP 4 + 4 of 12 true and 12 predicted detections: 2*8 / 24 = 2/3; the switches add up.
    perfect = frames_of([{1: 5}] * 4, truth_ids=(1,))
    swapped = frames_of([{1: 7, 2: 8}, {1: 7, 2: 8}, {1: 8, 2: 7}, {1: 8, 2: 7}])
    scores = qm.identity_scores([perfect, swapped])
    assert scores["IDF1"] == pytest.approx(2 / 3)
    assert scores["IDSW"] == 2


def test_a_gap_needs_a_seen_frame_on_both_sides():
    seen = [False, True, True, False, False, False, True, False]
    # frame 0 (before it is first seen) and frame 7 (the clip ends) are not gaps it comes back from
    assert qm.gaps(3, seen) == [qm.Gap(3, 3, 6, False)]
    assert qm.gaps(3, seen, outside=[False] * 4 + [True] + [False] * 3)[0].outside
    assert qm.gaps(3, seen, staged=[False] * 5 + [True] * 3)[0].staged  # its scene hid it on purpose on frame 5


def test_the_staged_occlusions_are_counted_apart_from_those_that_came_by_chance():
    kept = qm.recoveries(one_object([7, 7, 7, None, None, None, None, 7, 7, 7]),
                         qm.gaps(1, [t not in (3, 4, 5) for t in range(10)], staged=[t == 4 for t in range(10)]))
    lost = qm.recoveries(one_object([7, 7, 7, None, None, None, 8, 8, 8, 8]),
                         qm.gaps(1, [t not in (3, 4, 5) for t in range(10)]))
    summary = qm.recovery_summary(kept + lost, fps=10)
    assert (summary["occlusions_up_to_1s"]["same_id_kept"], summary["occlusions_up_to_1s"]["same_id_judged"]) == (1, 2)
    staged = summary["staged_occlusions_up_to_1s"]
    assert (staged["same_id_kept"], staged["same_id_judged"], staged["same_id_share"]) == (1, 1, 1.0)


def one_object(predicted: list[int | None]) -> list[qm.FrameMatch]:
    """Object 1 on frames 0-2 and 6-9 (hidden on 3-5); `predicted[t]` the id whose mask is on it, or None."""
    seen = [t not in (3, 4, 5) for t in range(10)]
    frames = []
    for t, p in enumerate(predicted):
        truth = np.array([1]) if seen[t] else np.zeros(0, int)
        ids = np.array([p]) if p is not None else np.zeros(0, int)
        iou = np.ones((len(truth), len(ids)))
        frames.append(qm.FrameMatch(truth, ids, iou))
    return frames


def test_an_object_back_under_its_id_a_frame_after_its_return():
    frames = one_object([7, 7, 7, None, None, None, None, 7, 7, 7])
    (found,) = qm.recoveries(frames, qm.gaps(1, [t not in (3, 4, 5) for t in range(10)]))
    assert found.frames_to_recover == 1
    assert found.same_id is True


def test_an_object_back_under_another_id_did_not_keep_it():
    frames = one_object([7, 7, 7, None, None, None, 8, 8, 8, 8])
    (found,) = qm.recoveries(frames, qm.gaps(1, [t not in (3, 4, 5) for t in range(10)]))
    assert found.frames_to_recover == 0
    assert found.same_id is False
    summary = qm.recovery_summary([found], fps=10)
    assert summary["occlusions_up_to_1s"]["same_id_share"] == 0.0  # a 3-frame gap at 10 fps is under a second
    assert summary["exits"]["gaps"] == 0
    assert qm.recovery_summary([found], fps=1)["occlusions_up_to_1s"]["gaps"] == 0  # at 1 fps it is 3 s


def test_an_object_never_found_again_is_not_recovered_and_kept_no_id():
    frames = one_object([7, 7, 7, None, None, None, None, None, None, None])
    (found,) = qm.recoveries(frames, qm.gaps(1, [t not in (3, 4, 5) for t in range(10)]))
    assert found.frames_to_recover is None
    assert found.same_id is False
    summary = qm.recovery_summary([found], fps=10)["occlusions_up_to_1s"]
    assert (summary["recovered"], summary["same_id_kept"], summary["same_id_judged"]) == (0, 0, 1)


def test_an_object_that_slid_behind_something_is_judged_by_its_id_before_the_sliver():
    # Its last frame in view (2) shows too little of it for the mask to match: the id it had on frame 1 counts
    seen = [t not in (3, 4, 5) for t in range(10)]
    frames = one_object([7, 7, None, None, None, None, 7, 7, 7, 7])
    (found,) = qm.recoveries(frames, qm.gaps(1, seen))
    assert (found.id_before, found.id_after, found.same_id) == (7, 7, True)
    frames = one_object([7, 7, None, None, None, None, 8, 8, 8, 8])
    (found,) = qm.recoveries(frames, qm.gaps(1, seen))
    assert found.same_id is False
    summary = qm.recovery_summary([found], fps=10)["occlusions_up_to_1s"]
    assert (summary["same_id_kept"], summary["same_id_judged"]) == (0, 1)


def test_an_id_from_before_an_earlier_gap_does_not_judge_the_next():
    # Hidden on 2-3 and on 6-7; id 7 on 0-1 and 8-9, nothing on 4-5 (in view between the gaps, untracked)
    seen = [t not in (2, 3, 6, 7) for t in range(10)]
    frames = []
    for t in range(10):
        truth = np.array([1]) if seen[t] else np.zeros(0, int)
        ids = np.array([7]) if t in (0, 1, 8, 9) else np.zeros(0, int)
        frames.append(qm.FrameMatch(truth, ids, np.ones((len(truth), len(ids)))))
    first, second = qm.recoveries(frames, qm.gaps(1, seen))
    assert (first.id_before, first.id_after, first.frames_to_recover, first.same_id) == (7, 7, 4, True)
    assert (second.id_before, second.same_id) == (None, None)
    summary = qm.recovery_summary([first, second], fps=10)["occlusions_up_to_1s"]
    assert (summary["gaps"], summary["same_id_kept"], summary["same_id_judged"]) == (2, 1, 1)


def test_a_track_on_nothing_is_false_and_one_no_detection_lands_on_is_unconfirmed():
    census = qm.TrackCensus()
    on_object, astray = square(10, 10), square(70, 70)
    truth = qm.FrameMatch(np.array([1]), np.array([1, 2]), qm.iou_matrix(on_object[None], np.stack([on_object, astray])))
    boxes = np.array([[10, 10, 20, 20], [70, 70, 80, 80]], float)
    detection = np.array([[10, 10, 20, 20]], float)  # the round sees object 1 only
    census.add(0, [1, 2], boxes, truth, detection)  # both start on a detection round
    census.add(1, [1, 2], boxes, truth, None)
    census.add(2, [1, 2], boxes, truth, detection)  # the next round lands on track 1 only
    assert census.summary() == {"ids": 2, "false_tracks": 1, "never_confirmed": 1}


def test_the_centre_click_is_the_pixel_farthest_from_every_edge():
    mask = np.zeros((40, 40), bool)
    mask[10:17, 20:27] = True  # 7x7: its centre pixel is (23, 13)
    assert qm.centre_click(mask) == (23, 13)
    corner = np.zeros((40, 40), bool)
    corner[0:7, 0:7] = True  # cut by the frame's corner: the frame's edge is an edge too
    assert qm.centre_click(corner) == (3, 3)


# ---------------------------------------------------------------------------- the scorer on a world clip


@pytest.fixture(scope="module")
def clip():
    from dora_sam2.world import Format, occlusion

    fmt = Format(160, 120, fps=10, frames=30)
    return quality.clip_of(occlusion(seed=3, fmt=fmt, hidden_seconds=1.0, others=1, nuisance=False), fmt, None, 16)


def score(clip, rename=lambda t, track_id: track_id):
    """The clip answered with its own truth (ids renamed by `rename`), detections every 5 frames."""
    scorer = quality.ClipScorer(clip, detect_every=5)
    for t, truth in enumerate(clip.frames):
        ids = [rename(t, i) for i in clip.present(t)]
        masks = np.stack([truth.mask(i) for i in clip.present(t)]) if ids else np.zeros((0, 120, 160), bool)
        started = {rename(t, d.track_id): d.track_id for d in clip.detections(t)} if t % 5 == 0 else {}
        scorer.add(t, quality.Answer(ids, masks, started), seconds=0.01)
    return quality.summarise([scorer.result()], clip.fps)


def test_a_late_round_reaches_the_methods_later_with_its_own_frame_s_boxes(clip):
    """DETECT_LATE=2 with a round every 5th frame: the round computed on frame 5 lands on frame 7, with the
    boxes of frame 5 (where the objects were), not of frame 7; frames where no round lands get none."""
    def boxes(detections):
        return np.array([d.box for d in detections]).tolist()

    landed = {t: clip.round_landing(t, 5, 2) for t in range(len(clip.frames))}
    assert [t for t, (_, found) in landed.items() if found] == [2, 7, 12, 17, 22, 27]
    assert all(computed == t - 2 and boxes(found) == boxes(clip.detections(t - 2))
               for t, (computed, found) in landed.items() if found)
    assert boxes(landed[7][1]) != boxes(clip.detections(7))  # the objects moved meanwhile
    assert boxes(clip.round_landing(5, 5, 0)[1]) == boxes(clip.detections(5))  # on time, by default


def test_the_truth_scores_perfectly(clip):
    result = score(clip)
    assert result["J&F"] == pytest.approx(1.0)
    assert result["HOTA"] == pytest.approx(1.0)
    assert result["IDF1"] == pytest.approx(1.0)
    assert result["IDSW"] == 0
    assert result["false_tracks"] == result["never_confirmed"] == 0
    occluded = result["recovery"]["occlusions"]
    assert occluded["gaps"] >= 1  # the scene hides object 1 for a second
    assert occluded["median_frames_to_recover"] == 0
    assert occluded["same_id_share"] == 1.0
    assert result["ms_per_frame"] == pytest.approx(10.0)


def test_the_truth_under_a_new_id_after_the_occlusion_is_one_switch(clip):
    hidden = next(g for g in qm.gaps(1, [1 in clip.present(t) for t in range(len(clip.frames))]))
    result = score(clip, rename=lambda t, track_id: 100 if track_id == 1 and t >= hidden.end else track_id)
    assert result["IDSW"] == 1
    assert result["recovery"]["occlusions"]["same_id_share"] == 0.0
    # object 1's occlusion is the one its scene was built around; the wanderer's, if any, came by chance
    staged = result["recovery"]["staged_occlusions"]
    assert (staged["same_id_kept"], staged["same_id_judged"]) == (0, 1)
    assert result["IDF1"] < 1.0


def test_the_benchmark_runs_every_method_and_a_sweep(micro_model_dir, tmp_path):
    """The whole benchmark on one short clip with the suite's random weights (figures meaningless, so only
    their range is held): it keeps running as the node's code it drives moves."""
    import json
    import subprocess

    out = tmp_path / "quality.json"
    subprocess.run([sys.executable, str(Path(quality.__file__)), "--model", str(micro_model_dir), "--clips", "1",
                    "--frames", "12", "--size", "160x120", "--scenarios", "crossing", "--detect-every", "5",
                    "--segment-every", "6", "--set", "THREADS=1", "--sweep", "MEMORY=2", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    assert [run["setting"] for run in result["runs"]] == ["base", "MEMORY=2"]
    base = result["runs"][0]
    assert set(base["track"]) == {"ours", "transformers", "bytetrack"}
    assert 0 <= base["segment"]["box_mIoU"] <= 1 and 0 <= base["segment"]["click_mIoU"] <= 1
    for figures in base["track"].values():
        assert figures["frames"] == 12
        assert all(0 <= figures[name] <= 1 for name in ("J&F", "HOTA", "IDF1"))
        assert figures["ms_per_frame"] > 0
    assert out.with_suffix(".md").read_text().count("| ours |") == 2
    assert out.with_suffix(".png").stat().st_size > 0


def test_bytetrack_goes_on_through_frames_with_nothing_to_detect(clip, micro_model_dir):
    """A frame where every object is out of view gives ByteTrack no box: the peer answers it with no mask
    and goes on (it stopped a 24-clip run: the tracker's empty answer carries none of the boxes' data)."""
    empty = dataclasses.replace(clip.frames[0], ids=np.zeros_like(clip.frames[0].ids))
    frames = [empty if 10 <= t < 13 else f for t, f in enumerate(clip.frames)]
    blank = dataclasses.replace(clip, frames=frames)
    assert all(not blank.detections(t) for t in range(10, 13))
    setting = quality.Setting("t", (("THREADS", "1"),))
    answers = list(quality.bytetrack(blank, quality.Models(str(micro_model_dir)), setting, 1))
    assert [t for t, _, _ in answers] == list(range(len(clip.frames)))
    assert all(answer.ids == [] and len(answer.masks) == 0 for t, answer, _ in answers if 10 <= t < 13)
    assert any(answer.ids for t, answer, _ in answers if t >= 13)  # and tracks again after them
