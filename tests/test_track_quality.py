"""The tracker's lifecycle with masks that mean something: the trained fixture (models/world-sam2) tracks short
clips of the synthetic world, each built around one event (an occlusion of a second, look-alikes crossing,
an object that leaves and comes back, one that enters, a covered camera), through the node's own track
scheduler (node.scheduler, as the node builds it from its settings: at their defaults, no LOST_FRAMES
crutch, or with one lifecycle setting moved to show it does what the README's track-mode table says).
The detector is the world's truth, every 10th frame, as in benchmarks/quality.py.

What is judged is identity, read at each detection round: which id the round's box of each true object
went to (the tracker re-prompts the track it matched with that box). That holds the lifecycle (matching,
ending, revival) to account on objects SAM 2 really follows, without resting on how closely the small
fixture's masks fit (test_fixture.py floors those)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from support.fixture import FIXTURE, needs_fixture, quality, world_clip

import after_rounds  # benchmarks/, on the path support.fixture puts it on

pytestmark = needs_fixture

DETECT_EVERY = 10  # 3 rounds a second at 30 fps
BASE = {"DTYPE": "float32", "THREADS": "1"}  # in every run: the same answers on any CPU, and beside other work


@pytest.fixture(scope="module")
def models():
    return quality.Models(str(FIXTURE))


def follow(models, clip: quality.Clip, every: int = DETECT_EVERY,
           **settings) -> tuple[dict[int, dict[int, int]], dict[int, list[int]]]:
    """Per detection round (every `every` frames), {true object: the id its box went to}; per frame, the
    ids answered."""
    setting = quality.Setting("t", tuple(sorted({**BASE, **settings}.items())))
    rounds, answered = {}, {}
    for t, answer, _ in quality.ours(clip, models, setting, every):
        answered[t] = answer.ids
        if t % every == 0:
            rounds[t] = {truth: track_id for track_id, truth in answer.started.items()}
    return rounds, answered


def ids_of(rounds: dict[int, dict[int, int]], obj: int) -> list[int]:
    return [found[obj] for _, found in sorted(rounds.items()) if obj in found]


def objects_of(clip: quality.Clip) -> tuple[int, ...]:
    return clip.frames[0].track_ids


def assert_one_id_each(rounds, clip) -> None:
    """Every object detected is tracked under one id from its first round to its last, and no two share one."""
    ids = {obj: ids_of(rounds, obj) for obj in objects_of(clip)}
    assert all(len(set(found)) == 1 for found in ids.values() if found), ids
    firsts = [found[0] for found in ids.values() if found]
    assert len(set(firsts)) == len(firsts), ids


def test_each_id_survives_a_full_occlusion_of_a_second(models):
    clip = world_clip("occlusion", 90, hidden_seconds=1.0, others=2)
    hidden = [t for t in range(len(clip.frames)) if 1 not in clip.present(t)]
    assert len(hidden) >= 25, hidden  # wholly hidden for about a second, mid-clip
    rounds, _ = follow(models, clip)
    before = [t for t in rounds if t < hidden[0] and 1 in rounds[t]]
    after = [t for t in rounds if t > hidden[-1] and 1 in rounds[t]]
    assert before and after, rounds
    assert_one_id_each(rounds, clip)


def test_look_alikes_keep_their_ids_through_a_crossing(models):
    clip = world_clip("crossing", 60, twins=True, others=1)
    rounds, _ = follow(models, clip)
    assert len(ids_of(rounds, 1)) >= 5 and len(ids_of(rounds, 2)) >= 5, rounds  # seen before and after
    assert_one_id_each(rounds, clip)


def left_and_back(clip: quality.Clip) -> tuple[int, int]:
    """The frames object 1 (the one that leaves) was last in view before leaving and first back in view."""
    gone = [t for t in range(len(clip.frames)) if 1 not in clip.present(t)]
    return gone[0] - 1, gone[-1] + 1


@pytest.fixture(scope="module")
def exit_clip() -> quality.Clip:
    """Object 1 leaves by an edge for 2 s and comes back; objects 2 and 3 stay in view throughout."""
    clip = world_clip("exit-and-return", 120, outside_seconds=2.0, others=2)
    assert all({2, 3} <= set(clip.present(t)) for t in range(len(clip.frames)))
    return clip


def first_round_from(t: int) -> int:
    """The first detection round on frame t or after."""
    return -(-t // DETECT_EVERY) * DETECT_EVERY


def test_a_round_ends_an_object_that_left_and_adds_it_when_it_enters_again(models, exit_clip):
    """REVIVE_SECONDS=0: once gone for DETECTOR_MISSES rounds its track ends; back, a round starts a new id."""
    clip = exit_clip
    last, back = left_and_back(clip)
    rounds, answered = follow(models, clip, REVIVE_SECONDS="0")
    first_id, later_id = ids_of(rounds, 1)[0], ids_of(rounds, 1)[-1]
    ended_by = first_round_from(last + 1) + 2 * DETECT_EVERY  # the third round without it (DETECTOR_MISSES=3)
    assert ended_by < back  # the clip leaves it out long enough to judge
    assert all(first_id not in answered[t] for t in range(ended_by, len(clip.frames))), answered
    seen_again = min(t for t in rounds if t > back and 1 in rounds[t])  # the first round with it back
    assert later_id != first_id and all(later_id in answered[t] for t in range(seen_again, len(clip.frames)))
    assert all(len(set(ids_of(rounds, obj))) == 1 for obj in objects_of(clip) if obj != 1), rounds


def test_an_object_that_left_comes_back_under_its_id(models, exit_clip):
    """At the default REVIVE_SECONDS (10 s): the same clip, and the object's old id is given back."""
    clip = exit_clip
    last, back = left_and_back(clip)
    rounds, answered = follow(models, clip)
    first_id = ids_of(rounds, 1)[0]
    assert any(first_id not in answered[t] for t in range(last, back)), answered  # it had ended
    assert_one_id_each(rounds, clip)


def part(clip: quality.Clip, start: int, stop: int) -> quality.Clip:
    """Frames start to stop of a clip: a clip of its own, its camera time from 0."""
    return dataclasses.replace(clip, frames=clip.frames[start:stop])


def test_a_round_adds_an_object_that_enters_the_view(models, exit_clip):
    """The clip starts while object 1 is out of the frame: no id is its until a round sees it, that round
    starts a new track on it (not one of the others', which are near and may share its label), and the
    new id is answered from then on."""
    _, back = left_and_back(exit_clip)
    clip = part(exit_clip, back - 15, back + 30)
    enters = 15
    assert all(1 not in clip.present(t) for t in range(enters)) and 1 in clip.present(enters)
    rounds, answered = follow(models, clip)
    added = first_round_from(enters)
    others = {rounds[0][obj] for obj in (2, 3)}
    assert all(set(answered[t]) == others for t in range(added)), answered
    assert 1 in rounds[added], rounds
    new_id = rounds[added][1]
    assert new_id not in others
    assert all(set(answered[t]) == others | {new_id} for t in range(added, len(clip.frames))), answered
    assert_one_id_each(rounds, clip)


def test_a_round_ends_an_object_that_left_the_view(models, exit_clip):
    """At the default settings: object 1 leaves the frame and is not back in this clip. Its track lives
    while it is in view and ends on the third round that does not see it (DETECTOR_MISSES=3, sooner
    than LOST_SECONDS=3); the others keep theirs."""
    last, _ = left_and_back(exit_clip)
    ended_by = first_round_from(last + 1) + 2 * DETECT_EVERY  # the third round without it
    clip = part(exit_clip, 0, ended_by + 10)
    rounds, answered = follow(models, clip)
    its_id = rounds[0][1]
    assert all(its_id in answered[t] for t in range(ended_by)), answered
    assert all(its_id not in answered[t] for t in range(ended_by, len(clip.frames))), answered
    others = {rounds[0][obj] for obj in (2, 3)}
    assert all(others <= set(answered[t]) for t in answered), answered
    assert_one_id_each(rounds, clip)


# ---------------------------------------------------------------------------- each lifecycle setting, moved
# The README's track-mode table says what each setting does; each test moves one (by its variable, read as
# the node reads it) on a short clip and checks the observable it names against the world's truth.


def covered(clip: quality.Clip, start: int, stop: int) -> quality.Clip:
    """The clip with its camera covered (black, nothing in view) from frame start to stop."""
    dark = [dataclasses.replace(f, rgb=np.zeros_like(f.rgb), ids=np.zeros_like(f.ids)) for f in clip.frames[start:stop]]
    return dataclasses.replace(clip, frames=clip.frames[:start] + dark + clip.frames[stop:])


COVER = (15, 45)  # a second with the camera covered


@pytest.mark.parametrize("setting, value, frames", [("LOST_SECONDS", "0.55", 17), ("LOST_SECONDS", "3", None),
                                                    ("LOST_FRAMES", "15", 15), ("LOST_FRAMES", "90", None)])
def test_lost_seconds_or_frames_end_an_unseen_track_that_much_later(models, setting, value, frames):
    """The camera is covered for a second, so SAM 2 sees none of the objects (and the rounds then, holding
    no box, deny nothing: DETECTOR_MISSES is out of it). A track ends once unseen for LOST_SECONDS of
    camera time (or LOST_FRAMES answered frames) since the last frame before the cover: 0.55 s (17
    frames) or 15 frames end every track during the cover; 3 s or 90 frames end none."""
    clip = covered(world_clip("crossing", 60, twins=False, others=1), *COVER)
    start, stop = COVER
    assert all(clip.present(t) == [] for t in range(start, stop)) and len(clip.present(start - 1)) == 3
    rounds, answered = follow(models, clip, **{setting: value})
    before = set(answered[start - 1])
    assert len(before) == 3, answered
    if frames is None:
        assert all(before <= set(answered[t]) for t in answered), answered
        return
    ends = start - 1 + frames  # the frame on which they have gone unseen that long: its answer still lists them
    back = first_round_from(stop)  # where a round finds them again (and REVIVE_SECONDS gives their ids back)
    assert all(before <= set(answered[t]) for t in range(ends - 2)), answered  # not sooner (SAM 2 may lose
    assert all(not before & set(answered[t]) for t in range(ends + 1, back)), answered  # one a frame early)


@pytest.fixture(scope="module")
def gone_for_good(exit_clip) -> quality.Clip:
    """The exit clip until object 1 is back: it leaves on frame 29 and stays out."""
    _, back = left_and_back(exit_clip)
    return part(exit_clip, 0, back)


@pytest.mark.parametrize("misses", [1, 5, 0])
def test_detector_misses_ends_a_track_on_that_many_rounds_without_it(models, exit_clip, gone_for_good, misses):
    """LOST_SECONDS=60 leaves the ending to the detector: object 1's track ends on the DETECTOR_MISSES-th
    round that holds boxes (the others are in view) but not its own; with 0 it never ends."""
    clip = gone_for_good
    last, _ = left_and_back(exit_clip)
    rounds, answered = follow(models, clip, DETECTOR_MISSES=str(misses), LOST_SECONDS="60")
    its_id = rounds[0][1]
    ends = first_round_from(last + 1) + (misses - 1) * DETECT_EVERY if misses else len(clip.frames)
    assert ends <= len(clip.frames)
    assert all(its_id in answered[t] for t in range(ends)), answered
    assert all(its_id not in answered[t] for t in range(ends, len(clip.frames))), answered


@pytest.mark.parametrize("seconds, same_id", [("0.5", False), ("3", True)])
def test_revive_seconds_gives_an_id_back_only_to_a_track_ended_that_lately(models, exit_clip, seconds, same_id):
    """Object 1 leaves, its track ends on the third round without it (DETECTOR_MISSES=3), and a round sees
    it back 1.3 s later: REVIVE_SECONDS=3 gives its id back, 0.5 (and 0, test above) a new one."""
    last, back = left_and_back(exit_clip)
    ended, found = first_round_from(last + 1) + 2 * DETECT_EVERY, first_round_from(back)
    assert 0.5 < (found - ended) / exit_clip.fps < 3
    clip = part(exit_clip, 0, found + 1)
    rounds, _ = follow(models, clip, REVIVE_SECONDS=seconds)
    assert (rounds[found][1] == rounds[0][1]) is same_id, rounds


@pytest.mark.parametrize("growth, same_id", [("6", True), ("0", False)])
def test_revive_reach_growth_gives_an_id_back_to_an_object_that_came_out_further_on(models, growth, same_id):
    """The detector on every frame: object 1 hides for a second behind an occluder, so its track ends after
    DETECTOR_MISSES (3) frames, and it comes out on the far side. Its id comes back only by distance from where
    it went in or was heading, which REVIVE_REACH_GROWTH widens the longer it was gone; with 0 it starts a new
    id (on this clip, where the object waits behind the occluder, so where it was heading is not where it
    comes out; on 24 such clips of each of three seeds, ids kept after 95% of occlusions against 92%:
    BENCHMARKS.md)."""
    clip = world_clip("occlusion", 90, 1, hidden_seconds=1.0, others=2)
    hidden = [t for t in range(len(clip.frames)) if 1 not in clip.present(t)]
    rounds, _ = follow(models, clip, every=1, REVIVE_REACH_GROWTH=growth)
    before = [found[1] for t, found in sorted(rounds.items()) if t < hidden[0] and 1 in found]
    after = [found[1] for t, found in sorted(rounds.items()) if t > hidden[-1] and 1 in found]
    assert len(set(before)) == 1 and after, rounds
    assert (after[0] == before[0]) is same_id, (before, after)


def moved(clip: quality.Clip, every: int) -> dict[int, list[tuple[float, float]]]:
    """Per object, between each two rounds that see it: the IoU of its two true boxes, and how far their
    centres lie apart in mean box diagonals."""
    from dora_sam2.association import box_iou, centres_apart

    boxes = {t: {d.track_id: d.box for d in clip.detections(t)} for t in range(0, len(clip.frames), every)}
    steps = {}
    for a, b in zip(sorted(boxes), sorted(boxes)[1:]):
        for obj in boxes[a].keys() & boxes[b].keys():
            pair = boxes[a][obj], boxes[b][obj]
            steps.setdefault(obj, []).append((float(box_iou(*pair)[0, 0]),
                                              float(centres_apart(pair[0][None, None], pair[1][None])[0, 0])))
    return steps


def assert_new_id_each_round(rounds) -> None:
    given = [track_id for _, found in sorted(rounds.items()) for track_id in found.values()]
    assert len(given) == len(set(given)), rounds


@pytest.mark.parametrize("match_iou, kept", [("0.3", True), ("1", False)])
def test_match_iou_decides_whether_an_overlapping_detection_is_its_track(models, exit_clip, match_iou, kept):
    """Rounds every other frame, MATCH_REACH=0 (overlap alone): each object's box overlaps its box of the
    round before by 0.5 or more, so at MATCH_IOU=0.3 it keeps its id; at 1 (only the very same box, and
    every object moves) each round starts a new track on each."""
    clip = part(exit_clip, 0, 21)
    steps = moved(clip, 2)
    assert all(0.3 < iou < 1 for found in steps.values() for iou, _ in found), steps
    rounds, _ = follow(models, clip, every=2, MATCH_IOU=match_iou, MATCH_REACH="0")
    if kept:
        assert_one_id_each(rounds, clip)
    else:
        assert_new_id_each_round(rounds)


@pytest.mark.parametrize("reach, kept", [("2", True), ("0", False)])
def test_match_reach_matches_by_distance_what_overlaps_no_track(models, exit_clip, reach, kept):
    """MATCH_IOU=1 leaves matching to distance: each object's box lies less than 2 diagonals from its box
    of the round before (and the three differ in shape, so in label): MATCH_REACH=2 keeps every id, 0
    starts a new track on each object each round."""
    clip = part(exit_clip, 0, 31)
    steps = moved(clip, DETECT_EVERY)
    assert all(apart < 2 for found in steps.values() for _, apart in found), steps
    assert len(set(clip.frames[0].labels)) == 3
    rounds, _ = follow(models, clip, MATCH_IOU="1", MATCH_REACH=reach)
    if kept:
        assert_one_id_each(rounds, clip)
    else:
        assert_new_id_each_round(rounds)


@pytest.mark.parametrize("cap", [1, 2, 16])
def test_max_objects_caps_the_live_tracks(models, exit_clip, cap, caplog):
    """Three objects in view, every round: MAX_OBJECTS of them are tracked on every frame, and the refusal
    is one log line however many rounds repeat it."""
    clip = part(exit_clip, 0, 21)
    assert all(len(clip.present(t)) == 3 for t in range(len(clip.frames)))
    with caplog.at_level("WARNING", logger="dora_sam2"):
        _, answered = follow(models, clip, MAX_OBJECTS=str(cap))
    assert all(len(answered[t]) == min(cap, 3) for t in answered), answered
    refused = [r for r in caplog.records if f"MAX_OBJECTS={cap} objects are tracked already" in r.getMessage()]
    assert len(refused) == (1 if cap < 3 else 0), refused


class WorldFinder:
    """SAM 3's part in track mode (a detection round by phrase) played by the world's truth: every object
    in view on the frame whose shape is a phrase is an instance of it. No trained SAM 3 can be made here, and what is
    judged is when the scheduler runs rounds, not what SAM 3 finds."""

    reads_exemplars = False

    def __init__(self, clip: quality.Clip):
        self.clip = clip
        self.looked_at: list[int] = []  # the frames rounds ran on

    def find(self, frame, phrases, min_score: float, limit: int):
        from dora_sam2.domain import Masks

        t = round((frame.timestamp - quality.EPOCH).total_seconds() * self.clip.fps)
        self.looked_at.append(t)
        found = [d for d in self.clip.detections(t) if d.label in phrases.texts]
        masks = np.stack([self.clip.frames[t].mask(d.track_id) for d in found]) if found else \
            np.zeros((0, frame.height, frame.width), bool)
        return Masks(masks, np.ones(len(found), np.float32), tuple(d.label for d in found), frame.image_id,
                     frame.timestamp, boxes=np.array([d.box for d in found], np.float32).reshape(-1, 4))

    def fall_back_to_float32(self) -> bool:
        return False


def follow_phrases(models, clip: quality.Clip, **settings) -> tuple[list[int], dict[int, tuple[str, ...]]]:
    """The node's track scheduler finding the clip's shapes by name, with the world as its finder: the
    frames its rounds ran on, and per frame the labels answered."""
    from dora_sam2.domain import Frame, Phrases
    from dora_sam2.node import scheduler as node_scheduler
    from dora_sam2.phrases import PhraseSearch
    from dora_sam2.settings import Settings
    from dora_sam2.stats import Stages, Stats

    setting = quality.Setting("t", tuple(sorted({**BASE, **settings}.items())))
    finder = WorldFinder(clip)
    search = PhraseSearch(finder, "the world", Phrases(tuple(sorted(set(clip.frames[0].labels)))))
    schedule = node_scheduler(Settings.from_env(setting.node_env(models.model)), models.backend(setting, video=True),
                              [quality.CAMERA], Stats(Stages(), 0), search)
    labels = {}
    for t, truth in enumerate(clip.frames):
        (_, masks), = schedule.handle([Frame(quality.CAMERA, truth.rgb, clip.timestamp(t), "rgb8")])
        labels[t] = masks.class_names
    return finder.looked_at, labels


@pytest.mark.parametrize("seconds, every", [("0", 1), ("1", 30)])
def test_detect_seconds_spaces_the_rounds_that_find_an_entering_object(models, exit_clip, seconds, every):
    """Phrases are looked for on the first frame and every DETECT_SECONDS of camera time (0: every frame).
    Object 1, the only one of its shape, enters the view on frame 15: it is tracked under its phrase from
    the first round that sees it (frame 15 with rounds on every frame, frame 30 with one a second) on."""
    _, back = left_and_back(exit_clip)
    clip = part(exit_clip, back - 15, back + 20)
    enters, shape = 15, clip.frames[0].labels[0]
    assert all(1 not in clip.present(t) for t in range(enters)) and 1 in clip.present(enters)
    assert clip.frames[0].labels.count(shape) == 1
    looked_at, labels = follow_phrases(models, clip, DETECT_SECONDS=seconds)
    assert looked_at == list(range(0, len(clip.frames), every))
    found = -(-enters // every) * every
    assert all(shape not in labels[t] for t in range(found)), labels
    assert all(shape in labels[t] for t in range(found, len(clip.frames))), labels


def fit_after_rounds(models, clip: quality.Clip, **settings) -> float:
    """Mean IoU with the truth of the best-fitting mask answered for each object in view, on the 3 frames after
    each detection round: where a track first reads the memory its new prompt joined."""
    ious = []
    setting = quality.Setting("t", tuple(sorted({**BASE, **settings}.items())))
    for t, answer, _ in quality.ours(clip, models, setting, DETECT_EVERY):
        if t % DETECT_EVERY not in (1, 2, 3):
            continue
        ious.extend(after_rounds.best_fits(answer.masks, clip, t))
    return float(np.mean(ious))


@pytest.mark.parametrize("scene", ["random", "crossing"])
def test_forget_on_prompt_fits_the_masks_after_each_round_better(models, scene):
    """The fixture, trained with prompts on a clip's first frame only, reads a re-prompted track's older tracked
    frames badly: FORGET_ON_PROMPT=1 (README: for models dora-sam2-train makes) raises the fit after rounds
    (0.32 to 0.54 and 0.56 to 0.66 with the fixture of now; 0.27 to 0.49 and 0.50 to 0.67 with the one before,
    which had trained on clips for half as long)."""
    clip = world_clip("random", 60) if scene == "random" else world_clip("crossing", 60, twins=True, others=1)
    assert fit_after_rounds(models, clip, FORGET_ON_PROMPT="1") > fit_after_rounds(models, clip) + 0.05



def track_jf(models, clips: list[quality.Clip], **settings) -> float:
    """The benchmark's J&F (DAVIS, per object from its first detection round, over all the clips' objects) of
    ours, run as the fixture's card says plus `settings`."""
    setting = quality.Setting("t", tuple(sorted({**BASE, "FORGET_ON_PROMPT": "1", "DETECT_EVERY": str(DETECT_EVERY),
                                                 **settings}.items())))
    return quality.track_mode("ours", clips, models, setting)["J&F"]


def test_non_overlap_all_keeps_each_track_on_its_own_object(models):
    """Between rounds the fixture's weak masks spread onto a neighbour, and a track whose memory holds the
    neighbour follows it. NON_OVERLAP=all gives each pixel to one object only, in what the memory keeps and in
    what is sent, so the fit rises (the fixture's card runs it so). Measured: 0.770 against 0.745 over
    the three clips (0.807 against 0.772 and 0.731 against 0.705 on the occlusions, 0.773 against 0.758 on the
    crossing)."""
    clips = [world_clip("occlusion", 90, 0, hidden_seconds=1.0, others=2),
             world_clip("occlusion", 90, 1, hidden_seconds=1.0, others=2),
             world_clip("crossing", 60, twins=True, others=1)]
    apart, alone = track_jf(models, clips, NON_OVERLAP="all"), track_jf(models, clips, NON_OVERLAP="off")
    assert apart > alone + 0.015, (apart, alone)
