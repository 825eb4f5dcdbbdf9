"""image_encoder.py against transformers' own image encoder, on the same weights: the same maps, bit for
bit, in both dtypes and both modes, and kept positional embeddings that follow the weights when
training changes them."""

from __future__ import annotations

import pytest
import torch

from support.dataflows import random_frame

from dora_sam2.image_encoder import ImageEncoder, runs_here
from dora_sam2.model import Sam2Backend
from dora_sam2.video import Sam2StreamingModel


@pytest.fixture(params=["test", "micro"])
def backend(request, model_dir, micro_model_dir):
    directory = model_dir if request.param == "test" else micro_model_dir
    return Sam2Backend.load(str(directory), video=True, device="cpu", dtype="float32")


def transformers_features(model, pixels):
    """What transformers' get_image_features gives, as (1, C, h, w) maps and the last one's position."""
    out = model.get_image_features(pixels, return_dict=True)
    sizes = model.backbone_feature_sizes
    maps = [f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(out.fpn_hidden_states, sizes)]
    return maps, out.fpn_position_encoding[-1].permute(1, 2, 0).reshape(1, -1, *sizes[-1])


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for index, (mine, reference) in enumerate(zip(ours, theirs)):
        assert mine.dtype == reference.dtype and torch.equal(mine, reference), f"map {index}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_maps_and_position_are_transformers_bit_for_bit(backend, dtype):
    assert runs_here(backend.model) and backend.image_encoder is not None
    pixels = backend.preprocess(random_frame(1, 96, 72).rgb)
    encoder = ImageEncoder(backend.model)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        reference, reference_position = transformers_features(backend.model, pixels)
        for _ in range(2):  # the second from what the first kept
            maps, position = encoder.features(pixels, position=True)
            assert_same(maps, reference)
            assert_same([position], [reference_position])


def test_segment_and_track_encodes_are_transformers_bit_for_bit(backend):
    frame = random_frame(2, 96, 72)
    with torch.inference_mode():
        embedding = backend.encode(frame)
        reference = backend.model.get_image_embeddings(backend.preprocess(frame.rgb))
        assert_same(embedding.features, reference)
        features = Sam2StreamingModel(backend).encode(frame)
        maps, position = transformers_features(backend.model, backend.preprocess(frame.rgb))
    assert_same([*features.high_res, features.image, features.position], [*maps, position])


def test_the_kept_positional_embedding_follows_the_weights_and_training_gets_gradients(backend):
    """An optimiser changes the weights in place between steps: the next frame is encoded with the new
    ones, and a step with gradients reaches the positional embedding."""
    pixels = backend.preprocess(random_frame(3, 96, 72).rgb)
    backbone = backend.model.vision_encoder.backbone
    with torch.inference_mode():
        backend.image_encoder.features(pixels)
    with torch.no_grad():
        backbone.pos_embed.add_(0.5)
    with torch.inference_mode():
        maps, _ = backend.image_encoder.features(pixels)
        assert_same(maps, transformers_features(backend.model, pixels)[0])
    backend.model.zero_grad()
    maps, _ = backend.image_encoder.features(pixels)
    maps[-1].sum().backward()
    assert backbone.pos_embed.grad is not None and backbone.pos_embed.grad.abs().sum() > 0


def test_a_compiled_encoder_runs_its_own_forward(backend):
    backend.model.vision_encoder = torch.compile(backend.model.vision_encoder)  # compiles lazily: nothing runs
    assert not runs_here(backend.model) and backend.image_encoder is None


def test_a_transformers_that_moved_what_it_reads_runs_its_own_forward(backend, monkeypatch):
    from transformers.models.sam2 import modeling_sam2

    monkeypatch.delattr(modeling_sam2, "window_unpartition")
    assert not runs_here(backend.model) and backend.image_encoder is None


def test_an_encoder_set_to_compute_otherwise_runs_its_own_forward(backend):
    """Another attention implementation than the fused kernel, or a hook on a block that calling its
    parts directly would pass by: transformers' forward, which honours both."""
    backbone = backend.model.vision_encoder.backbone
    assert runs_here(backend.model)
    for module in (backbone.blocks[1], backend.model.vision_encoder):
        handle = module.register_forward_hook(lambda *_: None)
        assert not runs_here(backend.model) and backend.image_encoder is None
        handle.remove()
        assert backend.image_encoder is not None
    backbone.config._attn_implementation = "eager"
    assert not runs_here(backend.model)


def test_hooks_on_a_blocks_own_layers_are_called(backend):
    """The products that take their bias after them read the layers' weights; a layer with a hook, or an
    MLP with one, is called as a module."""
    block = backend.model.vision_encoder.backbone.blocks[0]
    calls = []
    handles = [module.register_forward_hook(lambda module, *_: calls.append(module))
               for module in (block.attn.qkv, block.mlp)]
    pixels = backend.preprocess(random_frame(1, 96, 72).rgb)
    with torch.inference_mode():
        maps, _ = ImageEncoder(backend.model).features(pixels)
        for handle in handles:
            handle.remove()
        assert_same(maps, transformers_features(backend.model, pixels)[0])
    assert set(calls) == {block.attn.qkv, block.mlp}  # the MLP once for each row of tokens


def test_hiera_tiny_whose_windows_take_padding_is_transformers_bit_for_bit():
    """hiera-tiny's own layout at 512: its third stage's windowed blocks pad 32 tokens a side to 42, the
    fourth's 16 to 21, without pooled queries (the suite's small model pads only where queries are pooled)."""
    from dora_sam2.random_model import build

    model = build("tiny", seed=0, image_size=512).eval()
    pixels = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert runs_here(model)
        reference, _ = transformers_features(model, pixels)
        maps, _ = ImageEncoder(model).features(pixels)
    assert_same(maps, reference)
