"""The tracker's lifecycle with masks that mean something: the trained fixture (models/world-sam2) tracks short
clips of the synthetic world, each built around one event (an occlusion of a second, look-alikes crossing,
an object that leaves and comes back), through the node's own track scheduler (node.scheduler, as the
node builds it from its settings, at their defaults: no LOST_FRAMES crutch). The detector is the world's
truth, every 10th frame, as in benchmarks/quality.py.

What is judged is identity, read at each detection round: which id the round's box of each true object
went to (the tracker re-prompts the track it matched with that box). That holds the lifecycle (matching,
ending, revival) to account on objects SAM 2 really follows, without resting on how closely the small
fixture's masks fit (test_fixture.py floors those)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "models" / "world-sam2"
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402

pytestmark = pytest.mark.skipif(not (FIXTURE / "model.safetensors").is_file(),
                                reason="models/world-sam2 is not in this checkout (scripts/make-fixture.sh makes it)")

DETECT_EVERY = 10  # 3 rounds a second at 30 fps
SEED = 2000  # held out: the fixture trains on seed 0


@pytest.fixture(scope="module")
def models():
    return quality.Models(str(FIXTURE))


def world_clip(scenario: str, frames: int, index: int = 0, **event) -> quality.Clip:
    from dora_sam2.world import Footage, Format, SCENARIOS

    fmt = Format(320, 240, fps=30.0, frames=frames)
    footage = Footage(quality.FOOTAGE) if quality.FOOTAGE.is_file() else None
    return quality.clip_of(SCENARIOS[scenario]((SEED, index), fmt, **event), fmt, footage, min_area=16)


def follow(models, clip: quality.Clip, **settings) -> tuple[dict[int, dict[int, int]], dict[int, list[int]]]:
    """Per detection round, {true object: the id its box went to}; per frame, the ids answered."""
    setting = quality.Setting("t", tuple(sorted({"DTYPE": "float32", "THREADS": "1", **settings}.items())))
    rounds, answered = {}, {}
    for t, answer, _ in quality.ours(clip, models, setting, DETECT_EVERY):
        answered[t] = answer.ids
        if t % DETECT_EVERY == 0:
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


def test_a_round_ends_an_object_that_left_and_adds_it_when_it_enters_again(models):
    """REVIVE_SECONDS=0: once gone for DETECTOR_MISSES rounds its track ends; back, a round starts a new id."""
    clip = world_clip("exit-and-return", 120, outside_seconds=2.0, others=2)
    last, back = left_and_back(clip)
    rounds, answered = follow(models, clip, REVIVE_SECONDS="0")
    first_id, later_id = ids_of(rounds, 1)[0], ids_of(rounds, 1)[-1]
    ended_by = (last // DETECT_EVERY + 1 + 3) * DETECT_EVERY  # the third round without it (DETECTOR_MISSES=3)
    assert ended_by < back  # the clip leaves it out long enough to judge
    assert all(first_id not in answered[t] for t in range(ended_by, len(clip.frames))), answered
    seen_again = min(t for t in rounds if t > back and 1 in rounds[t])  # the first round with it back
    assert later_id != first_id and all(later_id in answered[t] for t in range(seen_again, len(clip.frames)))
    assert all(len(set(ids_of(rounds, obj))) == 1 for obj in objects_of(clip) if obj != 1), rounds


def test_an_object_that_left_comes_back_under_its_id(models):
    """At the default REVIVE_SECONDS (10 s): the same clip, and the object's old id is given back."""
    clip = world_clip("exit-and-return", 120, outside_seconds=2.0, others=2)
    last, back = left_and_back(clip)
    rounds, answered = follow(models, clip)
    first_id = ids_of(rounds, 1)[0]
    assert any(first_id not in answered[t] for t in range(last, back)), answered  # it had ended
    assert_one_id_each(rounds, clip)


@pytest.fixture(scope="module")
def exit_clip() -> quality.Clip:
    """Object 1 leaves by an edge for 2 s and comes back; objects 2 and 3 stay in view throughout."""
    clip = world_clip("exit-and-return", 120, outside_seconds=2.0, others=2)
    assert all({2, 3} <= set(clip.present(t)) for t in range(len(clip.frames)))
    return clip


def part(clip: quality.Clip, start: int, stop: int) -> quality.Clip:
    """Frames start to stop of a clip: a clip of its own, its camera time from 0."""
    return dataclasses.replace(clip, frames=clip.frames[start:stop])


def first_round_from(t: int) -> int:
    """The first detection round on frame t or after."""
    return -(-t // DETECT_EVERY) * DETECT_EVERY


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
