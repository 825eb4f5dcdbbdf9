"""Pairing answers with the frames they were computed on, when every frame is to be written once
(`EachFrameOnce`, the dataset writer's ledger)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from dora_sam2.timeline import EachFrameOnce, Settled

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(i: int) -> datetime:
    return T0 + timedelta(milliseconds=33 * i)


def collect(total: Settled, settled: Settled) -> Settled:
    for name in ("pairs", "unanswered", "pushed_out", "frameless", "repeated"):
        getattr(total, name).extend(getattr(settled, name))
    return total


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_each_answered_frame_pairs_with_its_own_answer_once_whatever_dora_delivers_first(answered, rng):
    """Frames and answers each come in order, but dora interleaves the two inputs as it likes (an answer
    may come before its frame). With room for all of them, every answer finds its own frame, and every
    frame without an answer is reported unanswered, by the end."""
    frames = [("frame", i) for i in range(len(answered))]
    answers = [("answer", i) for i, yes in enumerate(answered) if yes]
    arrivals = []
    while frames or answers:  # a random merge that keeps each input's own order
        source = frames if not answers or (frames and rng.random() < 0.5) else answers
        arrivals.append(source.pop(0))
    ledger, total = EachFrameOnce(size=64, max_waiting=64), Settled()
    for kind, i in arrivals:
        call = ledger.frame if kind == "frame" else ledger.answer
        collect(total, call("image", at(i), (kind, i)))
    collect(total, ledger.end())
    assert sorted(total.pairs) == [(("answer", i), ("frame", i)) for i, yes in enumerate(answered) if yes]
    assert sorted(total.unanswered) == [("frame", i) for i, yes in enumerate(answered) if not yes]
    assert total.frameless == total.pushed_out == total.repeated == []


def test_a_camera_that_runs_ahead_of_the_answers_pushes_its_oldest_frames_out_and_says_so():
    ledger = EachFrameOnce(size=2)
    assert ledger.frame("image", at(0), "f0").pushed_out == []
    ledger.frame("image", at(1), "f1")
    assert ledger.frame("image", at(2), "f2").pushed_out == ["f0"]
    late = ledger.answer("image", at(0), "a0")
    assert late.frameless == ["a0"] and late.pairs == []  # its frame is gone: never paired with another
    assert ledger.answer("image", at(2), "a2").pairs == [("a2", "f2")]


def test_an_answer_for_a_later_frame_passes_over_the_frames_before_it():
    ledger = EachFrameOnce()
    for i in range(3):
        ledger.frame("image", at(i), f"f{i}")
    settled = ledger.answer("image", at(2), "a2")
    assert settled.pairs == [("a2", "f2")] and settled.unanswered == ["f0", "f1"]
    assert ledger.unanswered == 0


def test_an_answer_that_comes_before_its_frame_passes_over_the_frames_before_it_all_the_same():
    """dora may hand over a later frame's answer before an earlier frame: the earlier one is passed over
    when the later frame and its answer meet, as it would be had they come in order."""
    ledger = EachFrameOnce()
    ledger.frame("image", at(0), "f0")
    assert ledger.answer("image", at(1), "a1").pairs == []  # its frame is not here yet: it waits
    settled = ledger.frame("image", at(1), "f1")
    assert settled.pairs == [("a1", "f1")] and settled.unanswered == ["f0"]
    assert ledger.unanswered == 0


def test_the_same_answer_twice_is_repeated_not_written_again():
    ledger = EachFrameOnce()
    ledger.frame("image", at(0), "f0")
    assert ledger.answer("image", at(0), "a0").pairs == [("a0", "f0")]
    again = ledger.answer("image", at(0), "a0 again")
    assert again.repeated == ["a0 again"] and again.pairs == []


def test_answers_that_came_before_their_frames_pair_once():
    """Answers ahead of their frames (dora hands inputs over by fairness), found by the dataset writer's fuzz
    test: the same answer twice is written once, the second repeated; without timestamps, where answers
    come in the frames' order, the second waits for the next frame."""
    ledger = EachFrameOnce()
    assert ledger.answer("image", at(0), "a0").pairs == ledger.answer("image", at(0), "a0 again").pairs == []
    settled = ledger.frame("image", at(0), "f0")
    assert settled.pairs == [("a0", "f0")] and settled.repeated == ["a0 again"]

    ledger = EachFrameOnce()
    assert ledger.answer("image", None, "a0").pairs == ledger.answer("image", None, "a1").pairs == []
    first = ledger.frame("image", None, "f0")
    assert first.pairs == [("a0", "f0")] and first.repeated == first.frameless == []
    assert ledger.frame("image", None, "f1").pairs == [("a1", "f1")] and ledger.unanswered == 0


def test_two_frames_stamped_within_the_tolerance_each_get_their_own_answer():
    """Two frames stamped closer than the tolerance that two stamps of one frame are held to (no camera
    sends that fast, but nothing here rests on it): the closest stamp wins."""
    ledger, first, second = EachFrameOnce(), T0, T0 + timedelta(microseconds=3)
    ledger.frame("image", first, "f0")
    ledger.frame("image", second, "f1")
    assert ledger.answer("image", first, "a0").pairs == [("a0", "f0")]
    assert ledger.answer("image", second, "a1").pairs == [("a1", "f1")]


def test_answers_that_come_before_their_frames_each_wait_for_their_own():
    """A camera sends frames back to back, 100 us apart (label.yml's camera sent a clip's first four
    within 335 us), and a writer that started late is handed two answers before either frame (dora hands
    inputs over by fairness): the first frame takes its own answer only, the second its own."""
    ledger, first, second = EachFrameOnce(), T0, T0 + timedelta(microseconds=100)
    assert ledger.answer("image", first, "a0").pairs == ledger.answer("image", second, "a1").pairs == []
    assert ledger.frame("image", first, "f0").pairs == [("a0", "f0")]
    settled = ledger.frame("image", second, "f1")
    assert settled.pairs == [("a1", "f1")] and not settled.frameless and not settled.unanswered


def test_answers_are_kept_per_camera_and_the_waiting_ones_are_bounded():
    ledger = EachFrameOnce(size=2, max_waiting=3, max_cameras=2)
    ledger.frame("left", at(0), "L0")
    ledger.frame("right", at(0), "R0")
    assert ledger.answer("right", at(0), "r0").pairs == [("r0", "R0")]
    assert ledger.frame("third", at(0), "X0").pushed_out == ["X0"]  # over max_cameras: not kept
    assert ledger.answer("third", at(0), "x0").frameless == ["x0"]
    waiting = [ledger.answer("left", at(i), f"l{i}") for i in (5, 6, 7)]  # before their frames
    assert [s.frameless for s in waiting] == [[], [], ["l5"]]  # two per camera may wait
    assert ledger.frame("left", at(6), "L6").pairs == [("l6", "L6")]
