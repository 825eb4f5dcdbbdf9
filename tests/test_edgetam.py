"""EdgeTAM through our own code: held to transformers' EdgeTamModel and EdgeTamVideoModel, and run
end to end in both modes.

EdgeTAM's image encoder comes from timm, which needs torchvision; neither imports beside the CPU torch
of `.venv`. tests/test_reference.py runs this file in the side environment (`scripts/reference-env.sh`),
where both do; here, without timm, it is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.dataflows import assert_no_traceback, assert_the_pair_followed, random_frame, seed_flow, text_pair_flow

try:
    import timm  # noqa: F401
except Exception as error:  # ImportError, or a torchvision built for another torch
    pytest.skip(f"EdgeTAM needs timm ({type(error).__name__}); tests/test_reference.py runs this file "
                "in the side environment", allow_module_level=True)

from support.streaming_reference import BOX_A, BOX_B, Presence, run_ours, run_through_occlusion, run_transformers  # noqa: E402

from dora_sam2.domain import Prompt  # noqa: E402
from dora_sam2.model import Sam2Backend  # noqa: E402
from dora_sam2.random_model import make_random_model  # noqa: E402
from dora_sam2.video import Sam2StreamingModel  # noqa: E402


@pytest.fixture(scope="session")
def edgetam_dir(tmp_path_factory):
    """EdgeTAM's exact layout (RepViT-M1 encoder, 2-layer memory attention, 256 + 256 perceiver latents)
    with random weights."""
    return make_random_model(tmp_path_factory.mktemp("edgetam") / "edgetam", size="edgetam", seed=0)


def streaming(edgetam_dir, image_size=0, dtype="float32"):
    return Sam2StreamingModel(Sam2Backend.load(str(edgetam_dir), dtype=dtype, image_size=image_size, video=True))


def test_loads_edgetam_in_both_modes(edgetam_dir):
    from transformers import EdgeTamModel, EdgeTamVideoModel

    image = Sam2Backend.load(str(edgetam_dir), dtype="float32")
    video = Sam2Backend.load(str(edgetam_dir), dtype="float32", image_size=512, video=True)
    assert type(image.model) is EdgeTamModel and type(video.model) is EdgeTamVideoModel
    assert image.input_size == 1024 and video.input_size == 512


def test_the_folded_repvit_gives_the_features_of_transformers_unfolded_one(edgetam_dir, tmp_path):
    """The node folds RepViT's parallel convolutions and batch norms into one convolution each
    (loading.fold_repvit_branches), on weights whose batch norms have statistics of their own (random
    models have none: mean 0, variance 1), held to transformers' EdgeTamModel as saved."""
    from safetensors.torch import load_file, save_file
    from transformers import EdgeTamModel

    weights = load_file(edgetam_dir / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    for name, value in weights.items():
        if ".bn." in name and value.is_floating_point():
            spread = torch.rand(value.shape, generator=generator)
            weights[name] = 0.5 + spread if name.endswith(("running_var", "bn.weight")) else spread - 0.5
    (tmp_path / "model").mkdir()
    save_file(weights, tmp_path / "model" / "model.safetensors")
    (tmp_path / "model" / "config.json").write_text((edgetam_dir / "config.json").read_text())

    ours = Sam2Backend.load(str(tmp_path / "model"), dtype="float32")
    unfolded = EdgeTamModel.from_pretrained(tmp_path / "model").eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.model.vision_encoder.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.vision_encoder.modules())
    pixels = ours.preprocess(random_frame(0, 640, 480).rgb)
    with torch.inference_mode():
        mine, theirs = (model.vision_encoder(pixels).fpn_hidden_states for model in (ours.model, unfolded))
    for level, (a, b) in enumerate(zip(mine, theirs)):
        assert b.std() > 0.01, level  # features with a spread, so a wrong fold shows
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()), msg=f"level {level}")


def test_the_encoder_is_transformers_bit_for_bit_without_its_position_encodings(edgetam_dir):
    """image_encoder.py runs EdgeTAM's backbone and its neck without the four sine encodings transformers'
    neck builds at every frame: the maps and the last level's encoding are transformers', bit for bit."""
    from dora_sam2.image_encoder import runs_here

    backend = Sam2Backend.load(str(edgetam_dir), dtype="float32", image_size=512, video=True)
    assert runs_here(backend.model) and backend.image_encoder is not None
    pixels = backend.preprocess(random_frame(0, 640, 480).rgb)
    with torch.inference_mode():
        maps, position = backend.image_encoder.features(pixels, position=True)
        theirs = backend.model.get_image_features(pixels, return_dict=True)
    sizes = backend.model.backbone_feature_sizes
    expected = [f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(theirs.fpn_hidden_states, sizes)]
    assert len(maps) == len(expected) and all(torch.equal(a, b) for a, b in zip(maps, expected))
    assert torch.equal(position, theirs.fpn_position_encoding[-1].permute(1, 2, 0).reshape(1, -1, *sizes[-1]))
    hook = backend.model.vision_encoder.neck.register_forward_hook(lambda *_: None)
    try:
        assert backend.image_encoder is None  # a hook on the neck: transformers' forward, which calls it
    finally:
        hook.remove()


@pytest.mark.parametrize("image_size", [0, 512], ids=["1024", "512"])
def test_segment_mode_matches_edgetam_model(edgetam_dir, image_size):
    """Three boxes in one batched call against transformers' EdgeTamModel forward on the same pixels."""
    backend = Sam2Backend.load(str(edgetam_dir), dtype="float32", image_size=image_size)
    frame = random_frame(0, 640, 480)
    boxes = np.array([[10, 10, 200, 300], [150, 100, 600, 470], [300, 20, 340, 400]], np.float32)
    prompt = Prompt.from_boxes("bbox", boxes)
    with torch.inference_mode():
        logits, scores, _ = backend.decode(backend.encode(frame), prompt)
        model_boxes = backend.model_points(prompt, 640, 480).reshape(1, -1, 4)
        reference = backend.model(pixel_values=backend.preprocess(frame.rgb), input_boxes=torch.from_numpy(model_boxes),
                                  multimask_output=False)
    assert logits.std() > 0.01  # random weights that give masks a spread, so a wrong step shows
    torch.testing.assert_close(logits, reference.pred_masks[0, :, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores, reference.iou_scores[0, :, 0], rtol=1e-4, atol=1e-5)


def test_tracking_matches_edgetam_video_model(edgetam_dir):
    """At EdgeTAM's own 1024: two objects prompted, then tracked through a growing, full and sliding
    memory window, each memory frame compressed by the perceiver."""
    model = streaming(edgetam_dir)
    presence = Presence(model)
    presence.pin(visible=True)
    prompts = {0: {0: BOX_A, 1: BOX_B}}
    try:
        with torch.inference_mode():
            ours, memories = run_ours(model, model.num_maskmem + 2, prompts)
            reference = run_transformers(model, model.num_maskmem + 2, prompts)
    finally:
        presence.restore()
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        assert theirs.std() > 0.01
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3, msg=f"frame {index}")
    config = model.config  # what EdgeTAM remembers of a frame: the perceiver's latents, not 64 x 64 features
    latents = config.perceiver_resampler_num_latents + config.perceiver_resampler_num_latents_2d
    for memory in memories.values():
        assert {m.features.shape for _, m in memory.recent} == {(latents, model.model.mem_dim)}
        assert len(memory.recent) == model.num_maskmem - 1


def test_tracking_at_512_through_occlusion_clicks_and_re_prompts(edgetam_dir):
    """IMAGE_SIZE=512 (the perceiver's windows and the rotary tables follow it): a box and a single
    click, both hidden on frames 3-4, the click re-prompted with two clicks on frame 6 while the box is
    tracked, 10 frames."""
    ours, reference = run_through_occlusion(streaming(edgetam_dir, image_size=512), 10)
    for index, (mine, theirs) in enumerate(zip(ours, reference)):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3, msg=f"frame {index}")


def test_both_memory_attention_paths_agree_on_perceiver_latents(edgetam_dir):
    """The CPU path and the fused kernel GPUs take, on EdgeTAM's memory layout: per frame 256 global
    latents without rotary encoding, then 16 x 16 spatial latents with their own tables; then pointers."""
    from dora_sam2.memory_attention import FUSED, AttentionPath, attend_memory

    model = streaming(edgetam_dir, image_size=512)
    g = torch.Generator().manual_seed(0)
    tokens, channels = model.size[0] * model.size[1], model.config.memory_attention_hidden_size
    image, image_position = (torch.randn(1, tokens, channels, generator=g) for _ in range(2))
    memory, position = (torch.randn(3, 2 * 512 + 4, model.model.mem_dim, generator=g) for _ in range(2))
    with torch.inference_mode():
        args = (model.model.memory_attention, image, image_position, memory, position, 4)
        ours = attend_memory(*args, AttentionPath(256), frame_tokens=512)
        fused = attend_memory(*args, FUSED, frame_tokens=512)
    torch.testing.assert_close(ours, fused, rtol=1e-4, atol=1e-4)


def edgetam_env(edgetam_dir, mode: str) -> dict:
    # float32: a CPU without native bf16 emulates it ~10x slower; 512: a quarter of the pixels; LOST_FRAMES: a
    # plumbing test, whose random weights' masks are noise, so SAM 2's random losses would end tracks
    return {"MODEL": str(edgetam_dir), "MODE": mode, "IMAGE_SIZE": "512", "DTYPE": "float32",
            "EVERY_FRAME": "1", "LOST_FRAMES": "1000"}


@pytest.mark.dataflow
@pytest.mark.parametrize("mode", ["segment", "track"])
def test_edgetam_runs_the_seed_pipeline_in_both_modes(dataflow, edgetam_dir, mode):
    """The seed's camera -> detector -> SAM 2 wiring with MODEL set to an EdgeTAM checkpoint: every frame
    answered with the seed's `mask` and per-object `masks`; in track mode, ids that stay."""
    boxes = [[100, 120, 300, 360, "cup"], [400, 200, 560, 400, "bottle"]]
    run = dataflow(seed_flow(edgetam_dir, boxes, 5, 2, ("mask", "masks"), edgetam_env(edgetam_dir, mode)))
    assert run.returncode == 0, run.log[-4000:]
    assert_no_traceback(run)
    assert any("at 512x512" in line for line in run.node_log("sam2")), run.log[-3000:]
    events = run.events()
    unions = [e for e in events if e["id"] == "mask"]
    stacks = [e for e in events if e["id"] == "masks"]
    assert len(unions) == len(stacks) >= 4  # dora may stop the detector before the last frame
    if mode == "track":  # a frame the detector has not answered yet has no tracks (dora orders inputs by fairness)
        while stacks and stacks[0]["metadata"]["num_masks"] == 0:
            unions, stacks = unions[1:], stacks[1:]
        assert len(stacks) >= 3, [e["metadata"]["num_masks"] for e in events if e["id"] == "masks"]
    for union, stack in zip(unions, stacks):
        meta = stack["metadata"]
        assert meta["num_masks"] == 2 and meta["labels"] == ["cup", "bottle"]
        masks = stack["value"].reshape(-1, 480, 640)
        np.testing.assert_array_equal(union["value"].reshape(480, 640), masks.any(axis=0).astype(np.uint8))
    if mode == "track":
        assert {tuple(e["metadata"]["track_ids"]) for e in stacks} == {(1, 2)}


@pytest.mark.dataflow
def test_edgetam_follows_what_sam3_finds_as_text_cpu_yml_wires_them(dataflow, sam3_dir, edgetam_dir):
    """examples/text-cpu.yml with the follower it names: EdgeTAM at 512 tracking SAM 3's boxes."""
    assert_the_pair_followed(dataflow(text_pair_flow(sam3_dir, edgetam_dir, 6)), 6)
