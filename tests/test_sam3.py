"""SAM 3 in the node: its tracker through our streaming loop held to transformers' Sam3TrackerVideoModel, its
detector and tracker sharing one ViT, phrases as answers and as detection rounds, and the sentences for
what cannot work. (The detector's parity with Sam3Processor: test_sam3_processor.py, in the side
environment.)"""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pytest
import torch

from dora_sam2.domain import Frame, InputError, Phrases, Prompt
from dora_sam2.engine import Segmenter
from dora_sam2.loading import ModelLoadError, load_checkpoint
from dora_sam2.phrases import PhraseSearch
from dora_sam2.scheduling import SchedulePolicy, SegmentScheduler, TrackScheduler
from dora_sam2.settings import ConfigError, Settings
from dora_sam2.stats import Stages, Stats
from dora_sam2.tracking import LostAfter, TrackPolicy
from dora_sam2.video import NO_OBJECT_LOGIT, Sam2StreamingModel

from support.dataflows import T0, random_frame
from support.streaming_reference import BOX_A, BOX_B, Presence, run_ours, run_through_occlusion, run_transformers


@pytest.fixture(scope="module")
def checkpoint(sam3_dir):
    return load_checkpoint(str(sam3_dir), dtype="float32")


@pytest.fixture(scope="module")
def sam3(checkpoint):
    """SAM 3's tracker: boxes, clicks, following."""
    return checkpoint.model


@pytest.fixture(scope="module")
def finder(checkpoint):
    """SAM 3's detector: words."""
    return checkpoint.finder


def frame(index: int, seconds: float = 0.25) -> Frame:
    """Frame `index` of a clip at `seconds` a frame, its pixels random."""
    return random_frame(index, 160, 120, T0 + timedelta(seconds=index * seconds))


def test_a_sam3_checkpoint_loads_its_tracker_and_its_detector_over_one_vit(sam3, finder):
    assert type(sam3.model).__name__ == "Sam3TrackerVideoModel"
    assert type(finder.detector).__name__ == "Sam3Model"
    assert sam3.model.vision_encoder.backbone is finder.detector.vision_encoder.backbone


def test_a_frame_both_find_and_track_read_runs_the_vit_once(sam3, finder):
    vit = finder.detector.vision_encoder.backbone.vit
    calls = []
    hook = vit.register_forward_hook(lambda *args: calls.append(1))
    try:
        one, other = frame(0), frame(1)
        finder.find(one, Phrases(("cup",)), 0.0, 10)
        Sam2StreamingModel(sam3).encode(one)
        assert len(calls) == 1
        Sam2StreamingModel(sam3).encode(other)  # other pixels: computed, not taken from the last frame
        assert len(calls) == 2
    finally:
        hook.remove()


# -- the tracker, held to transformers' own


@pytest.fixture(scope="module")
def streaming(sam3):
    return Sam2StreamingModel(sam3)


def test_tracker_matches_sam3_tracker_video_model_streaming(streaming):
    """A prompted frame, then a growing, full and sliding memory window."""
    presence = Presence(streaming)
    presence.pin(True)
    try:
        count = streaming.num_maskmem + 4
        prompts = {0: {0: BOX_A, 1: BOX_B}}
        with torch.inference_mode():
            ours, _ = run_ours(streaming, count, prompts)
            reference = run_transformers(streaming, count, prompts)
    finally:
        presence.restore()
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3, msg=f"frame {index}")
    assert not (torch.stack(ours) == NO_OBJECT_LOGIT).any()


def test_tracker_matches_through_occlusion_and_a_re_prompt_while_another_is_tracked(sam3):
    config = sam3.model.config
    saved = config.max_object_pointers_in_encoder
    config.max_object_pointers_in_encoder = 4  # a short run fills and slides the pointer window
    try:
        ours, reference = run_through_occlusion(Sam2StreamingModel(sam3), 10)
    finally:
        config.max_object_pointers_in_encoder = saved
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3, msg=f"frame {index}")


def test_boxes_and_clicks_are_answered_by_sam3s_tracker_in_segment_mode(sam3):
    segmenter = Segmenter(sam3)
    segmenter.add_frame(frame(0))
    boxes = Prompt.from_boxes("bbox", np.array([[10, 10, 80, 90], [60, 20, 150, 110]]), timestamp=T0)
    _, masks = segmenter.segment(boxes)
    assert masks.masks.shape == (2, 120, 160) and len(masks.scores) == 2


def test_float16_overflow_in_the_finder_runs_the_whole_checkpoint_in_float32(sam3_dir, caplog):
    """A text projection beyond float16's range (65504) overflows under float16 autocast while float32 is
    fine: the frame's phrases are found again in float32, one line says so, and the tracker, which shares the
    finder's precision, is in float32 too. What was kept in float16 (the phrase's text, the frame's ViT
    output) is computed again: the answer is the one a float32 checkpoint gives."""
    answers = {}
    for dtype in ("float16", "float32"):
        checkpoint = load_checkpoint(str(sam3_dir), dtype=dtype)
        with torch.no_grad():
            checkpoint.finder.detector.text_projection.weight.mul_(1e6)
        search = PhraseSearch(checkpoint.finder, "sam3", Phrases(("cup",)), min_score=0.0, limit=5)
        with caplog.at_level(logging.WARNING, logger="dora_sam2"):
            answers[dtype] = search.found(frame(0))
            search.found(frame(0))
        assert checkpoint.finder.precision is checkpoint.model.precision
        assert checkpoint.model.dtype == torch.float32
        assert checkpoint.model.decoder is checkpoint.model.model.mask_decoder
    assert len([r for r in caplog.records if "float16 overflowed" in r.message]) == 1
    # equal, not close: the frame's ViT output kept from float16 would move the scores by about 1e-7
    np.testing.assert_array_equal(answers["float16"].scores, answers["float32"].scores)
    np.testing.assert_array_equal(answers["float16"].masks, answers["float32"].masks)


# -- phrases through the schedulers


def test_segment_mode_answers_each_frame_with_every_instance_labelled_by_phrase(sam3, finder):
    search = PhraseSearch(finder, "sam3", min_score=0.0, limit=7)
    scheduler = SegmentScheduler(Segmenter(sam3), Stats(Stages(), 0), search=search)
    answers = list(scheduler.handle([frame(0), Phrases(("cup", "bottle")), frame(1)]))
    assert [f.timestamp for f, _ in answers] == [frame(1).timestamp]  # live: the batch's newest frame
    masks = answers[0][1]
    assert len(masks) == 7 and set(masks.class_names) <= {"cup", "bottle"}  # MAX_OBJECTS: the 7 best
    assert list(scheduler.handle([Phrases(()), frame(2)])) == []  # cleared: frames are not answered


def test_track_mode_finds_on_detection_rounds_and_tracks_between(sam3, finder):
    streaming = Sam2StreamingModel(sam3)
    rounds = []
    search = PhraseSearch(finder, "sam3", Phrases(("cup",)), min_score=0.0, limit=3)
    find = search.found
    search.found = lambda f: (rounds.append(f.timestamp), find(f))[1]
    tracks = TrackPolicy(3, LostAfter(100), detector_misses=0, revive_seconds=0)
    scheduler = TrackScheduler(streaming, Stats(Stages(), 0), ["image"], SchedulePolicy(tracks, True, 1.0),
                               search=search)
    answers = [m for i in range(6) for _, m in scheduler.handle([frame(i)])]
    assert rounds == [frame(0).timestamp, frame(4).timestamp]  # 0.25 s frames, a round every camera second
    assert all(m.class_names == ("cup",) * 3 for m in answers) and answers[0].track_ids == (1, 2, 3)
    answers = [m for i in range(6, 8) for _, m in scheduler.handle([Phrases(("bottle",)), frame(i)] if i == 6
                                                                   else [frame(i)])]
    assert rounds[-1] == frame(6).timestamp  # replaced phrases: looked for at once
    assert "bottle" in answers[0].class_names  # a matched track takes the newest phrase as its label


def test_a_frame_where_no_phrase_is_found_is_answered_with_no_objects(sam3, finder):
    """A random SAM 3 scores nothing near 1 (about 0.3): at 1.0 nothing is kept. The answer says "none here",
    in the frame's size, and box readers get an empty set; a track mode round finding nothing leaves
    tracking going."""
    from dora_sam2 import codecs

    search = PhraseSearch(finder, "sam3", Phrases(("cup", "bottle")), min_score=1.0)
    scheduler = SegmentScheduler(Segmenter(sam3), Stats(Stages(), 0), search=search)
    [(_, masks)] = scheduler.handle([frame(0)])
    assert masks.masks.shape == (0, 120, 160) and masks.class_names == ()
    value, metadata = codecs.encode_boxes2d(masks)
    assert value.to_pylist() == [{"bbox": [], "conf": [], "labels": []}] and metadata["width"] == 160
    tracks = TrackPolicy(3, detector_misses=0, revive_seconds=0)
    tracking = TrackScheduler(Sam2StreamingModel(sam3), Stats(Stages(), 0), ["image"],
                              SchedulePolicy(tracks, every_frame=True), search=search)
    answers = [m for i in range(3) for _, m in tracking.handle([frame(i)])]
    assert [len(m) for m in answers] == [0, 0, 0]


def test_a_phrase_found_nowhere_stands_beside_one_found(finder):
    """One phrase with instances, another with none, on one frame: the first's masks are the answer."""
    best = {p: float((o.pred_logits[0].sigmoid() * o.presence_logits[0].sigmoid()).max())
            for p, o in zip(("cup", "bottle"), finder.detect(frame(0), Phrases(("cup", "bottle"))))}
    found, missing = sorted(best, key=best.get, reverse=True)
    assert best[found] > best[missing]  # random weights: the two phrases' scores differ
    threshold = (best[found] + best[missing]) / 2
    masks = finder.find(frame(0), Phrases(("cup", "bottle")), threshold, 16)
    assert len(masks) >= 1 and set(masks.class_names) == {found} and masks.masks.shape[1:] == (120, 160)


def test_an_instance_scored_exactly_min_confidence_is_kept(finder):
    """MIN_CONFIDENCE has one rule for boxes and instances: kept at the bound (test_scheduling.py holds
    boxes to it). The bound here is the best instance's score, computed as Sam3Processor computes it."""
    phrases, image = Phrases(("cup",)), frame(0)
    [out] = finder.detect(image, phrases)
    scores = (out.pred_logits[0].float().sigmoid() * out.presence_logits[0].float().sigmoid()).numpy()
    best = float(scores.max())
    assert (scores == best).sum() == 1  # random weights: one instance scores the most
    masks = finder.find(image, phrases, best, 16)
    assert masks.scores.tolist() == [best]


def test_phrases_to_a_model_that_cannot_read_words_are_one_line(model, caplog):
    scheduler = SegmentScheduler(Segmenter(model), Stats(Stages(), 0), search=PhraseSearch(None, "sam2-test"))
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        assert list(scheduler.handle([frame(0), Phrases(("cup",))])) == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "MODEL=sam2-test cannot read words" in lines[0] and "facebook/sam3" in lines[0]


def test_text_setting_with_a_sam2_model_is_one_sentence_at_start(model_dir):
    from dora_sam2.node import phrase_search

    sam2 = load_checkpoint(str(model_dir), dtype="float32")
    assert sam2.finder is None
    with pytest.raises(ConfigError, match=r"TEXT is set, but MODEL=.* cannot read words.*facebook/sam3"):
        phrase_search(Settings.from_env({"TEXT": "cup", "MODEL": "sam2-test"}), sam2.finder)
    with pytest.raises(InputError):
        PhraseSearch(None, "sam2").use(Phrases(("cup",)))


def test_the_text_setting_is_held_to_the_bounds_of_a_text_message():
    """MAX_PHRASES (16 by default) and PHRASE_CHARS (200), the README's bounds on a `text` message, hold for
    TEXT too, one sentence each; a phrase of exactly 200 characters and 16 phrases are taken."""
    longest = "a" * 200
    assert Settings.from_env({"TEXT": f"cup, {longest}"}).text == ("cup", longest)
    with pytest.raises(ConfigError, match=r"TEXT holds a phrase of 201 characters, over PHRASE_CHARS=200: give"):
        Settings.from_env({"TEXT": f"cup, {longest}a"})
    assert len(Settings.from_env({"TEXT": ",".join(f"thing {i}" for i in range(16))}).text) == 16
    with pytest.raises(ConfigError, match="TEXT holds 17 phrases, over MAX_PHRASES=16: raise MAX_PHRASES"):
        Settings.from_env({"TEXT": ",".join(f"thing {i}" for i in range(17))})


def test_a_gated_checkpoint_says_how_to_get_access(monkeypatch):
    """The hub cannot be reached from here: its answer for a gated repository is what this stands in for."""
    from transformers import AutoConfig

    def gated(*args, **kwargs):
        raise OSError("You are trying to access a gated repo. Access to model facebook/sam3 is restricted (401).")

    monkeypatch.setattr(AutoConfig, "from_pretrained", gated)
    with pytest.raises(ModelLoadError) as error:
        load_checkpoint("facebook/sam3", dtype="float32")
    text = str(error.value)
    assert "gated" in text and "huggingface.co/facebook/sam3" in text and "hf auth login" in text
    assert "tokenizer.json" in text and "\n" not in text


def test_a_sam3_directory_without_its_tokenizer_says_what_it_holds(sam3_dir, tmp_path):
    import shutil

    copy = tmp_path / "sam3-no-tokenizer"
    shutil.copytree(sam3_dir, copy)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (copy / name).unlink()
    with pytest.raises(ModelLoadError, match="no readable tokenizer.*tokenizer.json"):
        load_checkpoint(str(copy), dtype="float32")


def test_image_size_runs_sam3_at_a_smaller_input(sam3_dir):
    small = load_checkpoint(str(sam3_dir), dtype="float32", image_size=168)
    assert small.model.input_size == small.finder.input_size == 168
    found = small.finder.find(frame(0), Phrases(("cup",)), 0.0, 5)
    assert found.masks.shape == (5, 120, 160)
    with pytest.raises(ModelLoadError, match="IMAGE_SIZE=100 does not fit.*multiple of 28"):
        load_checkpoint(str(sam3_dir), dtype="float32", image_size=100)


def test_exemplar_boxes_without_torchvision_are_one_line_and_the_phrases_are_used(finder, caplog):
    if finder.reads_exemplars:
        pytest.skip("torchvision is here: exemplars are read (test_sam3_processor.py holds them to Sam3Processor)")
    search = PhraseSearch(finder, "sam3")
    with caplog.at_level(logging.WARNING, logger="dora_sam2"):
        search.use(Phrases(("cup",), np.array([[1, 2, 30, 40]], np.float32), np.array([1])))
    assert search.phrases == Phrases(("cup",))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "need torchvision" in lines[0]


def test_a_flood_of_phrase_changes_is_a_few_finding_lines_each_quoting_a_few_phrases_cut_short(finder, caplog,
                                                                                                monkeypatch):
    """A sender that changes the phrases with every message, each message at MAX_PHRASES phrases of 200
    characters: at most 3 "finding" lines per 10 s (the clock is the test's), then one saying how many were
    held back; each names 8 phrases of at most 40 characters, and counts the rest. The phrases are used."""
    from dora_sam2 import throttle

    clock = [1000.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: clock[0])
    search = PhraseSearch(finder, "sam3")
    messages = [Phrases(tuple(f"{m} {p} " + "x" * 190 for p in range(16))) for m in range(100)]
    with caplog.at_level(logging.INFO, logger="dora_sam2"):
        for phrases in messages:
            search.use(phrases)
        clock[0] += 10
        search.use(Phrases(("cup",)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finding")]
    assert len(lines) == 4 and search.phrases == Phrases(("cup",))
    assert lines[0] == "finding " + ", ".join(repr(f"0 {p} " + "x" * 36 + "...") for p in range(8)) + " and 8 more"
    assert lines[3] == "finding 'cup' (97 more like this held back since the last one)"
    assert all(len(line) < 600 for line in lines)
