"""Our batched mask decoder must give what transformers' own forward gives, for any number of objects."""

from __future__ import annotations

import pytest
import torch

from dora_sam2.decoder import decode_masks


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


@pytest.mark.parametrize("n,k", [(1, 2), (5, 2), (3, 3)])
def test_matches_transformers_forward(model, embedded, n, k):
    points, labels = prompts(n, k)
    sam = model.model
    with torch.inference_mode():
        reference = sam(image_embeddings=embedded, input_points=points, input_labels=labels, multimask_output=False)
        sparse, dense = sam.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        logits, iou = decode_masks(sam.mask_decoder, embedded[-1], sam.get_image_wide_positional_embeddings(),
                                   sparse, dense, embedded[:-1])
    torch.testing.assert_close(logits, reference.pred_masks[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, reference.iou_scores[0], rtol=1e-4, atol=1e-5)


def test_objects_do_not_leak_into_each_other(model, embedded):
    """Decoding an object alone or beside others gives the same answer: the shared work really is shared."""
    points, labels = prompts(4)
    sam = model.model
    pe = sam.get_image_wide_positional_embeddings()
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        together, _ = decode_masks(sam.mask_decoder, embedded[-1], pe, sparse, dense, embedded[:-1])
        alone, _ = decode_masks(sam.mask_decoder, embedded[-1], pe, sparse[:, 2:3], dense, embedded[:-1])
    torch.testing.assert_close(together[2:3], alone, rtol=1e-4, atol=1e-4)


def test_bfloat16_decoder_agrees_with_float32_per_object(model_dir):
    """The fast path keeps the decoder in bf16 throughout. Compared object by object with SAM2's
    candidate fallback off (a hard threshold that random weights sit on), the logits agree."""
    import numpy as np

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.model import Sam2ImageModel
    from dora_sam2.settings import Settings

    exact = Sam2ImageModel.load(Settings(model=str(model_dir), dtype="float32"))
    fast = Sam2ImageModel.load(Settings(model=str(model_dir), dtype="bfloat16"))
    for m in (exact, fast):
        m.decoder.dynamic_multimask_via_stability = False
    rng = np.random.default_rng(1)
    frame = Frame("image", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), None, "rgb8")
    xy = rng.uniform(0, 400, (6, 2))
    prompt = Prompt.from_boxes("bbox", np.concatenate([xy, xy + rng.uniform(20, 200, (6, 2))], axis=1))
    embedding = exact.encode(frame)
    a, _ = exact.decode(embedding, prompt)
    b, _ = fast.decode(embedding, prompt)
    assert b.dtype == torch.bfloat16
    for i in range(6):
        assert np.corrcoef(a[i].numpy().ravel(), b[i].float().numpy().ravel())[0, 1] > 0.999
