"""The GPU paths, checked on a machine without a GPU.

torch's FakeTensorMode makes `cuda` tensors that carry shapes, dtypes and devices but no data, and
raises FakeTensorDeviceMismatchError on any op that mixes devices: a tensor left on the CPU (built from
numpy, `arange` without a device, ...) that meets the model's tensors fails here as it would on a GPU.
What cannot run on fake tensors is the one transfer back to the CPU per answer (`postprocess`): these
tests stop just before it and check that everything up to there is on the GPU.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._subclasses import fake_tensor
from torch._subclasses.fake_tensor import FakeTensorMode

from support.fake_cuda import HEIGHT, WIDTH, decode_boxes_and_a_click, frame, on_cuda, prompt_track_and_prompt_again

from dora_sam2.domain import Prompt
from dora_sam2.loading import Checkpoint
from dora_sam2.model import Sam2Backend
from dora_sam2.processing import upsample
from dora_sam2.video import Sam2StreamingModel

CUDA = torch.device("cuda")


@pytest.fixture(scope="session")
def fake_cuda_guard(tmp_path_factory):
    """c10's own no-op device guard, registered for CUDA. A CPU-only torch has none, and the Python
    bindings that open a device guard (`Tensor.to`, indexing, `contiguous`, ...) would refuse every
    fake `cuda` tensor before FakeTensorMode sees the op. Built with the machine's C++ compiler."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the fake CUDA device guard")
    torch_dir = Path(torch.__file__).parent
    library = tmp_path_factory.mktemp("fake_cuda") / "fake_cuda_guard.so"
    # C++20: torch 2.14's headers need it (std::strong_ordering); 2.13's build with it as well
    subprocess.run([compiler, "-std=c++20", "-shared", "-fPIC", f"-I{torch_dir / 'include'}",
                    str(Path(__file__).parent / "support" / "fake_cuda_guard.cpp"),
                    f"-L{torch_dir / 'lib'}", "-lc10", "-o", str(library)], check=True)
    ctypes.CDLL(str(library))


@pytest.fixture(scope="session")
def fake_mode(fake_cuda_guard):
    """One mode for every test: transformers caches some position encodings across models, by device."""
    return FakeTensorMode()


@pytest.fixture(params=[torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def cuda_model(request, model_dir, fake_mode, monkeypatch):
    """The suite's SAM2 (with its video memory) on a fake `cuda` device, under autocast as on a GPU."""
    from transformers import Sam2VideoModel

    # autocast refuses `cuda` on a torch without CUDA; the fake tensors need only its dispatch rules
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    # one-element tensors would be kept as real CPU constants and copied to a `cuda` that is not there
    monkeypatch.setattr(fake_tensor, "CONSTANT_NUMEL_LIMIT", 0)
    model = Sam2VideoModel.from_pretrained(model_dir).eval()
    with fake_mode:
        model._apply(lambda t: fake_mode.from_tensor(t).to(CUDA))
        yield Sam2Backend(model, CUDA, request.param, "fake-cuda")




def test_model_lives_on_cuda(cuda_model):
    assert on_cuda(*cuda_model.model.parameters(), *cuda_model.model.buffers(), *cuda_model.decoder.parameters())


def test_cuda_segment_encode_and_batched_decode(cuda_model):
    embedding = cuda_model.encode(frame())
    assert on_cuda(*embedding.features)
    decode_boxes_and_a_click(cuda_model, embedding)


def test_cuda_empty_detection(cuda_model):
    logits, scores, _ = cuda_model.decode(cuda_model.encode(frame()), Prompt.from_boxes("bbox", np.zeros((0, 4))))
    assert on_cuda(logits, scores) and len(logits) == len(scores) == 0


def test_cuda_track_prompt_remember_and_memory_attention(cuda_model):
    """Boxes and a click on frame 0, a re-prompt on frame 3, tracking in between and after: objects with
    different memory layouts go through memory attention (the fused kernel GPUs use) in separate groups."""
    for _, step, _ in prompt_track_and_prompt_again(Sam2StreamingModel(cuda_model)):
        assert step.logits.shape[0] == step.scores.shape[0] == 3
        assert on_cuda(upsample(step.logits, WIDTH, HEIGHT), step.object_score_logits > 0)


@pytest.fixture(params=[torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def cuda_sam3(request, sam3_dir, fake_mode, monkeypatch):
    """The suite's SAM 3 on a fake `cuda` device: its tracker as the backend, its detector as the finder,
    the two on one ViT as the node loads them."""
    from transformers import AutoTokenizer, Sam3Model, Sam3TrackerVideoModel

    from dora_sam2.sam3 import Sam3Finder, share_vit

    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(fake_tensor, "CONSTANT_NUMEL_LIMIT", 0)
    tracker = Sam3TrackerVideoModel.from_pretrained(sam3_dir).eval()
    detector = Sam3Model.from_pretrained(sam3_dir).eval()
    with fake_mode:
        for model in (tracker, detector):
            model._apply(lambda t: fake_mode.from_tensor(t).to(CUDA))
        share_vit(detector, tracker)
        backend = Sam2Backend(tracker, CUDA, request.param, "fake-cuda")
        yield Checkpoint(backend, Sam3Finder(detector, AutoTokenizer.from_pretrained(sam3_dir), backend.precision))


def test_cuda_sam3_encodes_frames_and_phrases_on_the_gpu(cuda_sam3):
    """The finder's frame (its preprocessing, the shared ViT, the detector's neck) and its phrases (the
    tokens moved to the GPU, the text encoder) on cuda. The DETR pass after them reads its feature map's size
    back from a tensor (`torch.arange(0, height)`), which a fake tensor has no value for:
    benchmarks/gpu_check.py runs it on a real GPU."""
    finder = cuda_sam3.finder
    with finder.precision.autocast():
        vision = finder.detector.get_vision_features(pixel_values=finder.preprocess(frame().rgb))
    assert on_cuda(*vision.fpn_hidden_states, *vision.fpn_position_encoding)
    features, mask = finder.text_embedding("red bottle")
    assert on_cuda(features, mask) and features.shape[:2] == mask.shape == (1, 32)


def test_cuda_sam3_tracker_prompts_remembers_and_tracks(cuda_sam3):
    streaming = Sam2StreamingModel(cuda_sam3.model)
    memory = streaming.new_memory()
    boxes = Prompt.from_boxes("bbox", np.array([[10, 10, 60, 60]]))
    for index in range(3):
        features = streaming.encode(frame(index))
        step = streaming.prompt(features, boxes) if index == 0 else streaming.track(features, [memory], index)
        assert on_cuda(step.logits, step.scores, step.pointers)
        (remembered,) = streaming.remember(features, step, [index == 0])
        assert on_cuda(remembered.features, remembered.position, remembered.pointer)
        memory.add(index, remembered, index == 0)


def test_cuda_training_steps_keep_every_tensor_and_gradient_on_the_gpu(model_dir, fake_mode, monkeypatch):
    """dora-sam2-train's image and video steps on the suite's SAM2 on `cuda` in fp32 (as the trainer runs
    them): targets, prompts and every loss are made on the model's device, with their gradients' graph.
    The backward pass itself cannot run here: autograd's engine asks the CUDA runtime for a stream."""
    from transformers import Sam2VideoModel

    from dora_sam2.training import steps
    from dora_sam2.training.data import ClipSample, ImageSample

    monkeypatch.setattr(fake_tensor, "CONSTANT_NUMEL_LIMIT", 0)
    model = Sam2VideoModel.from_pretrained(model_dir).train()
    masks = np.zeros((2, HEIGHT, WIDTH), bool)
    masks[0, 10:60, 10:60] = masks[1, 40:110, 50:150] = True
    rng = np.random.default_rng(0)
    with fake_mode:
        model._apply(lambda t: fake_mode.from_tensor(t).to(CUDA))
        streaming = Sam2StreamingModel(Sam2Backend(model, CUDA, torch.float32, "fake-cuda"))
        streaming.learning = True
        scored = [steps.image_step(streaming, ImageSample(frame(0).rgb, masks), rng, box_share=0.5),
                  steps.clip_step(streaming, ClipSample([frame(i).rgb for i in range(3)], np.stack([masks] * 3),
                                                        (1, 2)), rng, box_share=0.5),
                  # --prompt-again: prompted on frame 2 as well, so frame 3 reads both prompts and frame 1
                  steps.clip_step(streaming, ClipSample([frame(i).rgb for i in range(4)], np.stack([masks] * 4),
                                                        (1, 2)), rng, box_share=0.5, prompt_again=1.0)]
        for losses in scored:
            parts = [losses.focal, losses.dice, losses.iou, losses.object, losses.total]
            assert on_cuda(*parts) and all(part.grad_fn is not None for part in parts)
