"""EdgeTAM's GPU paths, checked on a machine without a GPU, as tests/test_cuda.py checks SAM 2's.

EdgeTAM's image encoder comes from timm, which imports only in the side environment
(`scripts/reference-env.sh`); tests/test_reference.py runs this file there, and here, without timm, it is
skipped. The side environment's torch is a CUDA build: without a GPU, FakeTensorMode puts a no-op device
guard in place of CUDA's own when it is entered (`torch._C._ensureCUDADeviceGuardSet`), so the C++ guard
tests/test_cuda.py builds for the CPU-only torch is not needed (and `torch.cuda.is_available` must not be
patched: the mode would then keep the real guard, which asks the missing driver).

Fake `cuda` tensors carry shapes, dtypes and devices but no data, and any op that mixes devices raises
FakeTensorDeviceMismatchError, as a GPU would. The one transfer back per answer (`postprocess`) cannot
run on them: the tests stop just before it.
"""

from __future__ import annotations

import pytest
import torch

try:
    import timm  # noqa: F401
except Exception as error:  # ImportError, or a torchvision built for another torch
    pytest.skip(f"EdgeTAM needs timm ({type(error).__name__}); tests/test_reference.py runs this file "
                "in the side environment", allow_module_level=True)

from torch._subclasses import fake_tensor  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode  # noqa: E402

from support.fake_cuda import (  # noqa: E402
    HEIGHT, WIDTH, decode_boxes_and_a_click, frame, on_cuda, prompt_track_and_prompt_again)

from dora_sam2 import devices, loading, processing  # noqa: E402
from dora_sam2.model import Sam2Backend  # noqa: E402
from dora_sam2.processing import upsample  # noqa: E402
from dora_sam2.random_model import make_random_model  # noqa: E402
from dora_sam2.video import Sam2StreamingModel  # noqa: E402

CUDA = torch.device("cuda")


@pytest.fixture(scope="session")
def edgetam_dir(tmp_path_factory):
    """EdgeTAM's exact layout with random weights (tests/test_edgetam.py's)."""
    return make_random_model(tmp_path_factory.mktemp("edgetam") / "edgetam", size="edgetam", seed=0)


@pytest.fixture(scope="session")
def fake_mode():
    """One mode for every test: transformers caches some position encodings across models, by device."""
    return FakeTensorMode()


def load_on_fake_cuda(edgetam_dir, fake_mode, monkeypatch, dtype: torch.dtype, video: bool,
                      image_size: int = 0) -> Sam2Backend:
    """Sam2Backend.load with DEVICE=cuda: loading.load_checkpoint's own steps, the model moved to the
    device where the node moves it (`.to(device)`, here to fake tensors) and RepViT folded there."""
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    # one-element tensors would be kept as real CPU constants and copied to a `cuda` that is not there
    monkeypatch.setattr(fake_tensor, "CONSTANT_NUMEL_LIMIT", 0)
    monkeypatch.setattr(devices, "resolve_device", lambda name: CUDA)  # it would refuse: no GPU here
    load_sam2 = loading.load_sam2

    def load_to_fake_device(*args, **kwargs):
        with fake_tensor.unset_fake_temporarily():  # the checkpoint's real weights, read on the CPU
            model = load_sam2(*args, **kwargs)
        model.to = lambda device: model._apply(lambda t: fake_mode.from_tensor(t).to(device))
        return model

    monkeypatch.setattr(loading, "load_sam2", load_to_fake_device)
    return Sam2Backend.load(str(edgetam_dir), device="cuda", dtype=str(dtype).removeprefix("torch."),
                            image_size=image_size, video=video)


@pytest.fixture(params=[torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def cuda_edgetam(request, edgetam_dir, fake_mode, monkeypatch):
    """Segment mode's EdgeTamModel at its own 1024, on a fake `cuda` device under autocast as on a GPU."""
    with fake_mode:
        yield load_on_fake_cuda(edgetam_dir, fake_mode, monkeypatch, request.param, video=False)


@pytest.fixture(params=[torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def cuda_edgetam_video(request, edgetam_dir, fake_mode, monkeypatch):
    """Track mode's EdgeTamVideoModel at IMAGE_SIZE=512 (examples/text-cpu.yml's), on a fake `cuda` device."""
    with fake_mode:
        yield load_on_fake_cuda(edgetam_dir, fake_mode, monkeypatch, request.param, video=True, image_size=512)




def test_edgetam_loads_onto_cuda_and_folds_its_repvit_there(cuda_edgetam_video):
    """The node folds RepViT's branches after moving the model (load_checkpoint): timm's fold makes new
    convolutions, which must be made on the model's device, as must every weight and buffer."""
    model = cuda_edgetam_video.model
    assert type(model).__name__ == "EdgeTamVideoModel" and cuda_edgetam_video.device.type == "cuda"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.vision_encoder.modules())
    assert on_cuda(*model.parameters(), *model.buffers(), *cuda_edgetam_video.decoder.parameters())


def test_cuda_edgetam_segment_encode_and_batched_decode(cuda_edgetam):
    """RepViT through image_encoder.py (not transformers' forward), the neck, then boxes and clicks."""
    assert cuda_edgetam.image_encoder is not None  # else this would check transformers' path, not ours
    embedding = cuda_edgetam.encode(frame())
    assert on_cuda(*embedding.features) and embedding.features[-1].shape == (1, 256, 64, 64)
    decode_boxes_and_a_click(cuda_edgetam, embedding)


def test_cuda_edgetam_tracks_through_its_perceiver_memory(cuda_edgetam_video):
    """Boxes and a click on frame 0, a re-prompt on frame 3, tracking past a full memory window: each
    memory compressed by the perceiver (its latents and their own rotary tables) and read by memory
    attention's fused kernel, with NON_OVERLAP's masks kept apart (remember, then the frame's masks)."""
    streaming = Sam2StreamingModel(cuda_edgetam_video)
    config = streaming.config
    latents = config.perceiver_resampler_num_latents + config.perceiver_resampler_num_latents_2d
    for _, step, remembered in prompt_track_and_prompt_again(streaming, apart=True):
        assert step.logits.shape == (3, 128, 128)
        assert {m.features.shape for m in remembered} == {(latents, streaming.model.mem_dim)}
        assert on_cuda(upsample(step.logits, WIDTH, HEIGHT, apart=True), step.object_score_logits > 0)


def test_a_cpu_tensor_meeting_the_gpu_ones_is_caught_here(cuda_edgetam_video, monkeypatch):
    """These checks rest on torch's own no-op guard, not the one tests/test_cuda.py builds: the mix of
    devices they are for must still fail here (the normalisation's statistics left on the CPU)."""
    on_device = processing._on_device
    monkeypatch.setattr(processing, "_on_device", lambda normalisation, device: on_device(normalisation, "cpu"))
    with pytest.raises(FakeTensorDeviceMismatchError):
        Sam2StreamingModel(cuda_edgetam_video).encode(frame())
