"""Our batched mask decoder must give what transformers' own forward gives, for any number of objects."""

from __future__ import annotations

import pytest
import torch

from support.dataflows import random_frame

from dora_sam2.decoder import predict_masks, run_decoder


@pytest.fixture(scope="module")
def embedded(model):
    torch.manual_seed(0)
    with torch.inference_mode():
        return model.model.get_image_embeddings(torch.randn(1, 3, 1024, 1024))


def prompts(n, k=2):
    generator = torch.Generator().manual_seed(n)
    points = torch.rand(1, n, k, 2, generator=generator) * 1024
    labels = torch.tensor([2, 3] if k == 2 else [1] * k).expand(1, n, k).clone()
    return points, labels


def clear(n):
    return torch.zeros(n, dtype=torch.bool)  # prompts of two or more points: not ambiguous


@pytest.mark.parametrize("n,k", [(1, 2), (5, 2), (3, 3)])
def test_matches_transformers_forward(model, embedded, n, k):
    points, labels = prompts(n, k)
    sam = model.model
    with torch.inference_mode():
        reference = sam(image_embeddings=embedded, input_points=points, input_labels=labels, multimask_output=False)
        sparse, dense = sam.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        logits, iou, _ = predict_masks(sam.mask_decoder, embedded[-1], sam.get_image_wide_positional_embeddings(),
                                    sparse, dense, embedded[:-1], clear(n))
    torch.testing.assert_close(logits, reference.pred_masks[0, :, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, reference.iou_scores[0, :, 0], rtol=1e-4, atol=1e-5)


def test_a_single_click_takes_the_best_of_three_candidates_as_sam2_does(model, embedded):
    """SAM 2's image predictor users ask for three masks on one click and keep the best-scored one; the
    node does the same (tracking's prompted frames too, test_a_single_click_picks_alike_in_both_modes)."""
    points, labels = prompts(4, k=1)
    sam = model.model
    with torch.inference_mode():
        reference = sam(image_embeddings=embedded, input_points=points, input_labels=labels, multimask_output=True)
        sparse, dense = sam.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        logits, iou, _ = predict_masks(sam.mask_decoder, embedded[-1], sam.get_image_wide_positional_embeddings(),
                                    sparse, dense, embedded[:-1], ~clear(4))
    best = reference.iou_scores[0].argmax(dim=1)
    torch.testing.assert_close(iou, reference.iou_scores[0].max(dim=1).values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, reference.pred_masks[0, torch.arange(4), best], rtol=1e-4, atol=1e-4)


def test_a_single_click_picks_alike_in_both_modes(model_dir, monkeypatch):
    """The same rule in segment and track mode: a lone click keeps the candidate SAM 2 scores best
    (the decoder's raw candidates recorded as each mode runs it)."""
    import dora_sam2.decoder
    import dora_sam2.video
    from dora_sam2.domain import Prompt
    from dora_sam2.model import Sam2Backend
    from dora_sam2.video import Sam2StreamingModel

    raw = []

    def recording(*args, **kwargs):
        raw.append(run_decoder(*args, **kwargs))
        return raw[-1]

    monkeypatch.setattr(dora_sam2.decoder, "run_decoder", recording)
    monkeypatch.setattr(dora_sam2.video, "run_decoder", recording)
    model = Sam2Backend.load(str(model_dir), dtype="float32", video=True)
    streaming = Sam2StreamingModel(model)
    frame = random_frame(2, 160, 120)
    click = Prompt.from_points("points", [[80, 60]], [1])
    with torch.inference_mode():
        _, segment_iou, _ = model.decode(model.encode(frame), click)
        track_iou = streaming.prompt(streaming.encode(frame), click).scores
    segment_raw, track_raw = raw
    assert segment_iou[0] == segment_raw.iou[0, 1:].max() and track_iou[0] == track_raw.iou[0, 1:].max()


def test_objects_do_not_leak_into_each_other(model, embedded):
    """Decoding an object alone or beside others gives the same answer: the shared work really is shared."""
    points, labels = prompts(4)
    sam = model.model
    pe = sam.get_image_wide_positional_embeddings()
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        together, _, _ = predict_masks(sam.mask_decoder, embedded[-1], pe, sparse, dense, embedded[:-1], clear(4))
        alone, _, _ = predict_masks(sam.mask_decoder, embedded[-1], pe, sparse[:, 2:3], dense, embedded[:-1], clear(1))
    torch.testing.assert_close(together[2:3], alone, rtol=1e-4, atol=1e-4)


def test_bfloat16_decoder_agrees_with_float32_per_object(model_dir):
    """The fast path keeps the decoder in bf16 throughout. Compared object by object with SAM2's
    candidate fallback off (a hard threshold that random weights sit on), the logits agree."""
    import numpy as np

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.model import Sam2Backend

    exact = Sam2Backend.load(str(model_dir), dtype="float32")
    fast = Sam2Backend.load(str(model_dir), dtype="bfloat16")
    for m in (exact, fast):
        m.decoder.dynamic_multimask_via_stability = False
    rng = np.random.default_rng(1)
    frame = Frame("image", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), None, "rgb8")
    xy = rng.uniform(0, 400, (6, 2))
    prompt = Prompt.from_boxes("bbox", np.concatenate([xy, xy + rng.uniform(20, 200, (6, 2))], axis=1))
    embedding = exact.encode(frame)
    a, _, _ = exact.decode(embedding, prompt)
    b, _, _ = fast.decode(embedding, prompt)
    assert b.dtype == torch.bfloat16
    for i in range(6):
        assert np.corrcoef(a[i].numpy().ravel(), b[i].float().numpy().ravel())[0, 1] > 0.999
