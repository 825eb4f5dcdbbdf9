"""SAM 3's detector through our own code, held to transformers' `Sam3Model` with `Sam3Processor` (its resize
and normalisation in, its `post_process_instance_segmentation` out) on the same random weights: the same
instances, the same scores and boxes, masks IoU >= 0.999. For a phrase, a phrase with a box exemplar,
and several phrases at once.

The processor's image half is torchvision's, which does not import beside the CPU torch of `.venv`:
tests/test_reference.py runs this file in the side environment (`scripts/reference-env.sh`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

try:
    from transformers import Sam3ImageProcessor, Sam3Processor
    Sam3ImageProcessor()
except Exception as error:  # ImportError, or a torchvision built for another torch
    pytest.skip(f"Sam3Processor needs torchvision ({type(error).__name__}); tests/test_reference.py runs this "
                "file in the side environment", allow_module_level=True)

from dora_sam2.domain import Frame, Phrases  # noqa: E402
from dora_sam2.loading import load_checkpoint  # noqa: E402
from dora_sam2.random_model import SAM3_TEST_SIZE  # noqa: E402

WIDTH, HEIGHT = 200, 150  # not square: the processor's resize and the boxes' scale both show


@pytest.fixture(scope="module")
def ours(sam3_dir):
    return load_checkpoint(str(sam3_dir), dtype="float32").finder


@pytest.fixture(scope="module")
def reference(sam3_dir):
    from transformers import AutoTokenizer, Sam3Model

    model = Sam3Model.from_pretrained(str(sam3_dir)).eval()
    size = {"height": SAM3_TEST_SIZE, "width": SAM3_TEST_SIZE}
    processor = Sam3Processor(Sam3ImageProcessor(size=size), AutoTokenizer.from_pretrained(str(sam3_dir)))
    return model, processor


def image() -> np.ndarray:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 90)], -1).astype(np.uint8)
    rgb[30:90, 40:110] = (230, 40, 40)
    rgb[80:140, 120:190] = (40, 200, 230)
    return rgb


def run_reference(reference, texts, **boxes):
    """Each phrase as one image-text pair of a batch, as the processor takes several phrases."""
    model, processor = reference
    rgb = image()
    inputs = processor(images=[rgb] * len(texts), text=list(texts), return_tensors="pt",
                       **{k: v * len(texts) for k, v in boxes.items()})
    with torch.inference_mode():
        out = model(**inputs)
    threshold = split((out.pred_logits.sigmoid() * out.presence_logits.sigmoid()).flatten())
    results = processor.post_process_instance_segmentation(out, threshold=threshold, mask_threshold=0.5,
                                                           target_sizes=[(HEIGHT, WIDTH)] * len(texts))
    return results, threshold


def split(scores: torch.Tensor) -> float:
    """A threshold that keeps some of the queries and drops the rest, in the middle of the widest gap between
    the middle half of their scores: at a score itself (the median), float noise between two computations of
    that one score decides whether it is kept."""
    ranked = scores.sort().values
    middle = ranked[len(ranked) // 4: len(ranked) - len(ranked) // 4]
    widest = int((middle[1:] - middle[:-1]).argmax())
    return float(middle[widest] + middle[widest + 1]) / 2


def assert_same_instances(found, results, texts):
    labels = [text for text, result in zip(texts, results) for _ in range(len(result["scores"]))]
    assert found.class_names == tuple(labels)
    scores = torch.cat([r["scores"] for r in results]).numpy()
    boxes = torch.cat([r["boxes"] for r in results]).numpy()
    masks = torch.cat([r["masks"] for r in results]).bool().numpy()
    assert 0 < len(scores) < 20 * len(texts)  # some instances kept and some dropped: the threshold is exercised
    np.testing.assert_allclose(found.scores, scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(found.boxes, boxes, rtol=1e-4, atol=1e-3)
    for i, (mine, theirs) in enumerate(zip(found.masks, masks)):
        union = (mine | theirs).sum()
        iou = (mine & theirs).sum() / union if union else 1.0
        assert iou >= 0.999, f"instance {i}: IoU {iou:.4f}"


def test_a_phrase_finds_what_sam3_model_and_its_processor_find(ours, reference):
    results, threshold = run_reference(reference, ["cup"])
    found = ours.find(Frame("image", image(), None, "rgb8"), Phrases(("cup",)), threshold, limit=1000)
    assert_same_instances(found, results, ["cup"])


def test_a_phrase_with_a_box_exemplar(ours, reference):
    box = [40.0, 30.0, 110.0, 90.0]
    results, threshold = run_reference(reference, ["red square"], input_boxes=[[box]], input_boxes_labels=[[1]])
    phrases = Phrases(("red square",), np.array([box], np.float32), np.array([1]))
    found = ours.find(Frame("image", image(), None, "rgb8"), phrases, threshold, limit=1000)
    assert_same_instances(found, results, ["red square"])
    plain = ours.find(Frame("image", image(), None, "rgb8"), Phrases(("red square",)), threshold, limit=1000)
    assert not np.array_equal(plain.scores, found.scores)  # the exemplar was read


def test_several_phrases_at_once(ours, reference):
    texts = ["cup", "blue bottle", "a person's hand"]
    results, threshold = run_reference(reference, texts)
    found = ours.find(Frame("image", image(), None, "rgb8"), Phrases(tuple(texts)), threshold, limit=1000)
    assert_same_instances(found, results, texts)
