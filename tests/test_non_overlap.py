"""NON_OVERLAP: SAM 2's non-overlapping constraint (Meta's `_apply_non_overlapping_constraints`), on what the
memory encoder sees and on the masks sent, with the trained fixture's memory encoder (models/world-sam2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from support.colour_scenes import RED, ColourSegmenter, detect, render
from dora_sam2.domain import Frame
from dora_sam2.processing import non_overlapping
from dora_sam2.settings import Settings
from dora_sam2.tracking import Tracker, TrackPolicy
from dora_sam2.video import Sam2StreamingModel, Step

FIXTURE = Path(__file__).resolve().parents[1] / "models" / "world-sam2"


def test_each_pixel_is_left_to_the_object_with_the_higher_logit_the_other_clamped_to_minus_ten():
    first = torch.tensor([[2.0, 5.0, -3.0, -20.0]])
    second = torch.tensor([[4.0, 1.0, -1.0, -30.0]])
    apart = non_overlapping(torch.stack([first, second]))
    # pixel by pixel: second wins, first wins, second wins (-1 > -3), first wins (-20 > -30)
    assert apart[0].tolist() == [[-10.0, 5.0, -10.0, -20.0]]
    assert apart[1].tolist() == [[4.0, -10.0, -1.0, -30.0]]
    alone = torch.stack([first])
    assert torch.equal(non_overlapping(alone), alone)  # one object claims nothing from anyone


def test_a_tie_goes_to_the_first_object_as_metas_argmax_gives_it():
    tied = torch.tensor([[[3.0, 0.5], [7.0, -2.0]]])
    apart = non_overlapping(torch.cat([tied, tied, tied - 9]))
    assert apart[0].tolist() == tied[0].tolist()  # the first of the tied keeps every pixel
    assert apart[1].tolist() == [[-10.0, -10.0], [-10.0, -10.0]]
    assert apart[2].tolist() == [[-10.0, -10.0], [-10.0, -11.0]]  # -11 is under the clamp already


@pytest.fixture(scope="module")
def fixture_model():
    if not (FIXTURE / "model.safetensors").is_file():
        pytest.skip("models/world-sam2 is not in this checkout (scripts/make-fixture.sh makes it)")
    from dora_sam2.model import Sam2Backend

    return Sam2StreamingModel(Sam2Backend.load(str(FIXTURE), dtype="float32", video=True))


def two_objects_on_the_same_pixels(model: Sam2StreamingModel, first: float, second: float) -> Step:
    """Two tracked objects whose masks cover the whole frame, at logits `first` and `second` everywhere."""
    height, width = model.size
    logits = torch.stack([torch.full((4 * height, 4 * width), first), torch.full((4 * height, 4 * width), second)])
    return Step(logits, torch.ones(2), torch.ones(2), torch.zeros(2, model.model.no_object_pointer.shape[-1]))


def test_apart_the_memory_encoder_sees_the_weaker_object_gone_where_the_stronger_claims_its_pixels(fixture_model):
    model = fixture_model
    ys, xs = np.mgrid[0:240, 0:320]
    rgb = np.stack([xs * 255 // 320, ys * 255 // 240, np.full_like(xs, 80)], -1).astype(np.uint8)
    features = model.encode(Frame("image", rgb, None, "rgb8"))
    both = two_objects_on_the_same_pixels(model, 5.0, 8.0)
    together = model.remember(features, both, [False, False])
    apart = model.remember(features, both, [False, False], apart=True)
    # what the weaker object would leave with -10 everywhere: the second claims every pixel of the frame
    outclaimed = model.remember(features, two_objects_on_the_same_pixels(model, -10.0, -10.0), [False, False])

    def same(a, b):
        return torch.allclose(a.features.float(), b.features.float(), atol=1e-2, rtol=1e-2)

    assert not same(together[0], apart[0])  # the option changes what the memory encoder sees...
    assert same(apart[0], outclaimed[0])  # ...into the weaker object's mask cleared where the other is stronger
    assert torch.equal(apart[1].features, together[1].features)  # the stronger keeps its own


def test_apart_the_masks_sent_share_no_pixel(fixture_model):
    model = fixture_model
    height, width = model.size
    both = two_objects_on_the_same_pixels(model, 5.0, 8.0)
    both.logits[1, :, : 2 * width] = -20.0  # the stronger object covers the right half only
    frame = Frame("image", np.zeros((240, 320, 3), np.uint8), None, "rgb8")
    together, apart = model.postprocess(both, frame), model.postprocess(both, frame, apart=True)
    assert together.masks[0].all() and together.masks[1][:, 170:].all()  # off: both claim the right half
    assert not (apart.masks[0] & apart.masks[1]).any()
    assert apart.masks[0][:, :150].all() and not apart.masks[0][:, 170:].any()  # the weaker keeps the left half
    assert apart.masks[1][:, 170:].all() and (apart.masks[0] | apart.masks[1]).all()  # each pixel to one of them


class Recording(ColourSegmenter):
    """The colour stand-in, noting what the tracker asks of `remember` and `postprocess`."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def remember(self, frame, step, prompted, apart=False):
        self.asked.append(("remember", apart))
        return super().remember(frame, step, prompted, apart)

    def postprocess(self, step, frame, apart=False):
        self.asked.append(("postprocess", apart))
        return super().postprocess(step, frame, apart)


@pytest.mark.parametrize("setting, asked", [("off", [("remember", False), ("postprocess", False)]),
                                            ("memory", [("remember", True), ("postprocess", False)]),
                                            ("all", [("remember", True), ("postprocess", True)])])
def test_the_setting_reaches_the_model_through_the_tracker(setting, asked):
    policy = TrackPolicy.from_settings(Settings.from_env({"NON_OVERLAP": setting}))
    model = Recording()
    objects = {RED: (10, 10)}
    frame = render(0, objects)
    Tracker(model, policy).step(frame, detect(frame, objects))
    assert model.asked == asked
