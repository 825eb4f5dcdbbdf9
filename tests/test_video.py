"""Our batched streaming loop must give what transformers' own Sam2VideoModel gives, frame after frame,
and keep its memory bounded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from dora_sam2.domain import Frame, Prompt
from dora_sam2.video import Sam2StreamingModel

WIDTH, HEIGHT = 160, 120
BOXES = np.array([[20, 20, 70, 80], [90, 30, 150, 100]], np.float32)


@pytest.fixture(scope="module", params=["test", "micro"])
def streaming(request, model_dir, micro_model_dir):
    """The suite's model, and `micro` (the same at a 256-pixel input, so no size is taken for granted)."""
    from dora_sam2.model import Sam2ImageModel
    from dora_sam2.settings import Settings

    path = model_dir if request.param == "test" else micro_model_dir
    return Sam2StreamingModel(Sam2ImageModel.load(Settings(model=str(path), dtype="float32"), video=True))


def frames(count: int):
    """A bright square drifting right over a gradient: enough structure for features to differ."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    for t in range(count):
        rgb = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 80)], -1).astype(np.uint8)
        rgb[30:70, 25 + 3 * t : 65 + 3 * t] = 240
        yield Frame("image", rgb, None, "rgb8")


def run_ours(streaming, count, prompt_every=None):
    memories = [streaming.new_memory() for _ in BOXES]
    logits = []
    for index, frame in enumerate(frames(count)):
        features = streaming.encode(frame)
        prompted = index == 0 or (prompt_every and index % prompt_every == 0)
        if prompted:
            step = streaming.prompt(features, Prompt.from_boxes("bbox", BOXES))
        else:
            step = streaming.track(features, memories, index)
        for memory, m in zip(memories, streaming.remember(features, step, [bool(prompted)] * len(BOXES))):
            memory.add(index, m, prompted=bool(prompted))
        logits.append(step.logits)
    return logits, memories


def run_transformers(streaming, count):
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    model, image_model = streaming.model, streaming.image_model
    session = Sam2VideoInferenceSession(video_height=HEIGHT, video_width=WIDTH, dtype=torch.float32)
    logits = []
    for index, frame in enumerate(frames(count)):
        pixels = image_model.preprocess(frame.rgb)[0]
        if index == 0:
            session.add_new_frame(pixels)
            points = image_model.model_points(Prompt.from_boxes("bbox", BOXES), WIDTH, HEIGHT)
            for obj_id, corners in enumerate(points):
                obj_idx = session.obj_id_to_idx(obj_id)
                session.add_point_inputs(obj_idx, 0, {
                    "point_coords": torch.from_numpy(corners)[None, None],
                    "point_labels": torch.tensor([[[2, 3]]]),
                })
                session.obj_with_new_inputs.append(obj_id)
            out = model(inference_session=session, frame_idx=0)
        else:
            out = model(inference_session=session, frame=pixels)
        logits.append(out.pred_masks[:, 0])
    return logits


@pytest.fixture(params=["visible", "hidden"])
def visibility(request, streaming):
    """Random weights say "object present" at random: pin SAM2's presence score to test each path."""
    bias = streaming.model.mask_decoder.pred_obj_score_head.proj_out.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.add_(30.0 if request.param == "visible" else -30.0)
    yield request.param
    with torch.no_grad():
        bias.copy_(saved)


def test_matches_transformers_streaming(streaming, visibility):
    """A prompted frame, then tracked frames reading a growing, then full, then sliding memory window."""
    count = streaming.num_maskmem + 4
    with torch.inference_mode():
        ours, _ = run_ours(streaming, count)
        reference = run_transformers(streaming, count)
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        torch.testing.assert_close(mine, theirs.float(), rtol=1e-3, atol=1e-3, msg=f"frame {index}")
    hidden = torch.stack(ours) == -1024.0
    assert (~hidden).all() if visibility == "visible" else hidden.all()


def test_chunked_attention_is_softmax_attention():
    """Chunks that do not divide the queries; values narrower than keys (what SAM2's 64-wide memory is)."""
    from dora_sam2.memory_attention import _softmax_attention

    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(n, d, generator=g) for n, d in ((50, 16), (70, 16), (70, 8)))
    expected = torch.nn.functional.scaled_dot_product_attention(query[None], key[None], value[None], scale=1.0)[0]
    torch.testing.assert_close(_softmax_attention(query, key, value, rows=16), expected)


def test_both_memory_attention_paths_agree(streaming):
    """The CPU path (matrix products, value projection after attention) and the fused kernel GPUs use."""
    from dora_sam2.memory_attention import attend_memory

    g = torch.Generator().manual_seed(0)
    attention, mem_dim = streaming.model.memory_attention, streaming.model.mem_dim
    channels, tokens = streaming.config.memory_attention_hidden_size, streaming.size[0] * streaming.size[1]
    image, image_position = torch.randn(1, tokens, channels, generator=g), torch.randn(1, tokens, channels, generator=g)
    memory = torch.randn(3, 2 * tokens + 4, mem_dim, generator=g)  # 2 frames and 4 pointer tokens per object
    position = torch.randn(3, 2 * tokens + 4, mem_dim, generator=g)
    with torch.inference_mode():
        ours = attend_memory(attention, image, image_position, memory, position, 4, fused=False)
        fused = attend_memory(attention, image, image_position, memory, position, 4, fused=True)
    assert ours.shape == (3, tokens, channels)
    torch.testing.assert_close(ours, fused, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("streaming", ["micro"], indirect=True)  # bookkeeping: any size will do
def test_memory_stays_bounded(streaming):
    """Re-prompted every 4th frame for 30 frames: each object keeps 2 prompted frames and the window."""
    _, memories = run_ours(streaming, 30, prompt_every=4)
    for memory in memories:
        assert len(memory.prompted) == 2 and 0 in memory.prompted and 28 in memory.prompted
        assert len(memory.recent) == streaming.num_maskmem - 1
        assert len(memory.recent_pointers) <= streaming.max_pointers - 1
        tracked_frames = [i for i in range(30) if i % 4]
        assert [i for i, _ in memory.recent] == tracked_frames[-(streaming.num_maskmem - 1):]


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_memory_is_flat_over_hundreds_of_frames(micro_model_dir):
    """300 frames, two objects re-prompted every 15th frame, in the node's default dtype here: resident
    memory after warm-up does not grow past 150 MB, and no object's memory bank grows at all. (The
    `micro` model keeps this quick; benchmarks/track_memory.py runs 10,000 frames.)
    (Re-prompts name their object, as the click page does: with random weights a detection would not
    reliably land on its track.)"""
    from dora_sam2.model import Sam2ImageModel
    from dora_sam2.settings import Settings
    from dora_sam2.tracking import Tracker

    model = Sam2StreamingModel(Sam2ImageModel.load(Settings(model=str(micro_model_dir)), video=True))
    tracker = Tracker(model, lost_frames=10_000)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 80)], -1).astype(np.uint8)
    clicks = [Prompt.from_points("points", [[40, 50]], [1], object_ids=(0,)),
              Prompt.from_points("points", [[120, 60]], [1], object_ids=(1,))]
    warm = None
    for index in range(300):
        frame = Frame("image", np.roll(rgb, index, axis=1), None, "rgb8")
        masks = tracker.step(frame, clicks=clicks if index % 15 == 0 else ())
        if index == 30:
            warm = rss_mb()
    growth = rss_mb() - warm
    assert growth < 150, f"RSS grew {growth:.0f} MB from frame 30 to frame 300"
    assert tracker.started == 2 and masks.track_ids == (1, 2)
    for track in tracker.tracks:
        assert len(track.memory.prompted) == 2 and len(track.memory.recent) == model.num_maskmem - 1


def test_tracking_falls_back_to_float32_when_float16_overflows(model_dir):
    """As in segment mode (test_model.py): the failed frame runs again in float32, its new track kept."""
    from transformers import Sam2VideoModel

    from dora_sam2.model import Sam2ImageModel
    from dora_sam2.tracking import Tracker

    weights = Sam2VideoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        for mlp in weights.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(1e6)  # beyond float16's range
    image_model = Sam2ImageModel(weights, torch.device("cpu"), torch.float16, "overflowing")
    tracker = Tracker(Sam2StreamingModel(image_model))
    stream = list(frames(3))
    first = tracker.step(stream[0], Prompt.from_boxes("bbox", BOXES, ["a", "b"]))
    # the failed try's tracks were rolled back (ids are never reused, so the kept ones are new)
    assert image_model.dtype == torch.float32 and len(first) == 2 and tracker.started == 2
    assert np.isfinite(first.scores).all()
    assert [tracker.step(f).track_ids for f in stream[1:]] == [first.track_ids] * 2
