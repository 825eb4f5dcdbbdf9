"""The backend on the suite's random-weight SAM2: geometry in and out of the model, batching, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.dataflows import random_frame

from dora_sam2.domain import Frame, Prompt
from dora_sam2.devices import resolve_dtype
from dora_sam2.model import Sam2Backend
from dora_sam2.processing import upsample

W, H = 640, 480


def frame() -> Frame:
    return random_frame(3, W, H)


def test_preprocess_stretches_the_frame_onto_the_square_input(model):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:240, 320:] = 255  # top-right quadrant white
    pixels = model.preprocess(rgb)
    assert pixels.shape == (1, 3, 1024, 1024)
    # Sam2Processor's normalisation (ImageNet statistics), written out: (1 - mean) / std and -mean / std
    white = torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    black = torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    assert torch.allclose(pixels[0, :, 100, 800], white, atol=1e-4)  # inside the quadrant
    assert torch.allclose(pixels[0, :, 800, 100], black, atol=1e-4)  # outside
    assert torch.allclose(pixels[0, :, 505, 505], black, atol=1e-4)  # just outside its corner


def test_box_reaches_the_prompt_encoder_in_model_coordinates(model):
    seen = {}
    hook = model.model.prompt_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    try:
        model.predict(model.encode(frame()), Prompt.from_boxes("bbox", np.array([[64, 48, 320, 240]])))
    finally:
        hook.remove()
    np.testing.assert_allclose(seen["input_points"].numpy(), [[[[102.4, 102.4], [512.0, 512.0]]]], rtol=1e-6)
    np.testing.assert_array_equal(seen["input_labels"].numpy(), [[[2, 3]]])


def test_image_size_runs_the_same_weights_at_a_smaller_input(model_dir):
    """IMAGE_SIZE=512: the frame resized to 512, prompts scaled into 512, masks back at the frame's size."""

    small = Sam2Backend.load(str(model_dir), dtype="float32", image_size=512)
    assert small.input_size == 512 and small.preprocess(frame().rgb).shape == (1, 3, 512, 512)
    seen = {}
    hook = small.model.prompt_encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    try:
        masks, scores = small.predict(small.encode(frame()), Prompt.from_boxes("bbox", np.array([[64, 48, 320, 240]])))
    finally:
        hook.remove()
    np.testing.assert_allclose(seen["input_points"].numpy(), [[[[51.2, 51.2], [256.0, 256.0]]]], rtol=1e-6)
    assert masks.shape == (1, H, W) and np.isfinite(scores).all()
    assert small.model.config.prompt_encoder_config.image_size == 512


def test_postprocess_puts_low_res_logits_back_on_the_frame():
    """A positive patch on the 256x256 grid where the box is must come back as a 640x480 mask on the box."""
    logits = torch.full((1, 256, 256), -10.0)
    # box (64, 48)-(320, 240) on 640x480 is x 25.6..128, y 25.6..128 on the 256 grid
    logits[0, 26:128, 26:128] = 10.0
    mask = upsample(logits, W, H)[0].numpy()
    assert mask.shape == (H, W) and mask.dtype == np.bool_
    ys, xs = np.nonzero(mask)
    assert abs(xs.min() - 64) <= 3 and abs(xs.max() - 319) <= 3
    assert abs(ys.min() - 48) <= 3 and abs(ys.max() - 239) <= 3


def test_predict_returns_one_mask_per_object_at_frame_size(model):
    embedding = model.encode(frame())
    prompt = Prompt.from_boxes("bbox", np.array([[10, 10, 100, 100], [200, 150, 600, 470], [0, 0, 640, 480]]))
    masks, scores = model.predict(embedding, prompt)
    assert masks.shape == (3, H, W) and masks.dtype == np.bool_
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_batched_decode_equals_one_by_one(model):
    embedding = model.encode(frame())
    boxes = np.array([[10, 10, 100, 100], [200, 150, 600, 470], [300, 20, 340, 400]], np.float32)
    batched, batched_scores = model.predict(embedding, Prompt.from_boxes("bbox", boxes))
    for i, box in enumerate(boxes):
        single, score = model.predict(embedding, Prompt.from_boxes("bbox", box[None]))
        assert (single[0] == batched[i]).mean() > 0.999
        assert score[0] == pytest.approx(batched_scores[i], abs=1e-4)


def test_boxes_and_clicks_batched_together_get_the_masks_each_gets_alone(model):
    """SAM2's decoder attends over padding points too: a click padded to a box's two points would get
    another mask than alone (with any non-zero biases, as trained weights have)."""
    embedding = model.encode(frame())
    mixed = Prompt(
        "points", np.array([[[300, 200], [0, 0]], [[10, 10], [100, 100]], [[400, 300], [420, 310]]], np.float32),
        np.array([[1, Prompt.PAD], [2, 3], [1, 0]]), ("click", "box", "two clicks"))
    logits, scores, _ = model.decode(embedding, mixed)
    for i in range(3):
        alone = Prompt("points", mixed.points[i : i + 1, : mixed.num_points()[i]],
                       mixed.point_labels[i : i + 1, : mixed.num_points()[i]], ("",))
        single_logits, single_score, _ = model.decode(embedding, alone)
        torch.testing.assert_close(logits[i], single_logits[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(scores[i], single_score[0], rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_agrees_with_float32(model):
    """The fast path must not change what the encoder sees. (Random-weight mask logits sit near 0, so
    masks themselves flip sign under any noise; the embeddings are the meaningful comparison.)"""
    fast = Sam2Backend(model.model, model.device, torch.bfloat16, model.name)
    for fp32, bf16 in zip(model.encode(frame()).features, fast.encode(frame()).features):
        similarity = torch.nn.functional.cosine_similarity(fp32.flatten().float(), bf16.flatten().float(), dim=0)
        assert similarity > 0.99


def test_auto_dtype_on_cpu_follows_the_hardware(monkeypatch):
    import dora_sam2.devices as backend
    monkeypatch.setattr(backend, "cpu_has_fast_bf16", lambda: True)
    assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(backend, "cpu_has_fast_bf16", lambda: False)
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((7, 0), torch.float16),
                                                  ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_dtype_on_cuda_asks_the_chosen_gpu_for_native_bf16(monkeypatch, capability, expected):
    """T4 (7.5) and V100 (7.0) only emulate bf16: fp16 there. Asked of the chosen device, not the current."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    assert resolve_dtype("auto", torch.device("cuda:1")) == expected
    assert asked == [torch.device("cuda:1")]


def test_float16_overflow_falls_back_to_float32_for_the_rest_of_the_run(model_dir, caplog):
    """A weight beyond float16's range (65504) makes its float16 copy infinite while float32 is fine:
    the frame is answered in float32, one line says so, and later frames stay in float32."""
    from transformers import Sam2Model

    from dora_sam2.engine import Segmenter

    weights = Sam2Model.from_pretrained(model_dir).eval()
    with torch.no_grad():
        for mlp in weights.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(1e6)
    fp16 = Sam2Backend(weights, torch.device("cpu"), torch.float16, "overflowing")
    segmenter = Segmenter(fp16)
    segmenter.add_frame(frame())
    box = Prompt.from_boxes("bbox", np.array([[64, 48, 320, 240], [300, 200, 600, 450]]))
    with caplog.at_level("WARNING", logger="dora_sam2"):
        _, first = segmenter.segment(box)
        _, second = segmenter.segment(box)
    assert fp16.dtype == torch.float32 and fp16.decoder is weights.mask_decoder
    assert first.masks.shape == second.masks.shape == (2, H, W) and np.isfinite(first.scores).all()
    assert len([r for r in caplog.records if "float16 overflowed" in r.message]) == 1


def test_without_float16_a_non_finite_output_is_an_error(model_dir):
    from transformers import Sam2Model

    weights = Sam2Model.from_pretrained(model_dir).eval()
    with torch.no_grad():
        for mlp in weights.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.fill_(float("nan"))
    fp32 = Sam2Backend(weights, torch.device("cpu"), torch.float32, "broken")
    with pytest.raises(FloatingPointError):
        fp32.predict(fp32.encode(frame()), Prompt.from_boxes("bbox", np.array([[64, 48, 320, 240]])))
    assert fp32.dtype == torch.float32


class FakeClock:
    """A clock under which one encode takes 1 s in the `faster` dtype and 3 s in any other."""

    def __init__(self, backend, faster: str):
        self.backend, self.faster, self.now, self.calls = backend, faster, 0.0, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:  # read at the end of a timed encode
            self.now += 1.0 if str(self.backend.dtype) == f"torch.{self.faster}" else 3.0
        return self.now


@pytest.mark.parametrize("faster", ["float32", "bfloat16"])
def test_dtype_auto_keeps_the_dtype_that_encoded_faster(model_dir, faster):
    """The choice follows the measurement, not the CPU's flags, and the model is then wholly in that
    dtype, its decoder copy too."""
    backend = Sam2Backend.load(str(model_dir), dtype="bfloat16")
    seconds = backend.choose_dtype_by_measuring(clock=FakeClock(backend, faster))
    assert seconds == {torch.float32: 1.0 if faster == "float32" else 3.0,
                       torch.bfloat16: 1.0 if faster == "bfloat16" else 3.0}
    assert backend.dtype == getattr(torch, faster)
    assert next(backend.decoder.parameters()).dtype == getattr(torch, faster)
    if faster == "float32":  # no copy: the model's own decoder
        assert backend.decoder is backend.model.mask_decoder
