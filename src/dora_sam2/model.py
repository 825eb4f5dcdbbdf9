"""SAM2 through transformers' `Sam2Model`, with our own pre/post-processing (no torchvision).

Like Meta's image predictor: `encode` computes a frame's embedding once, `decode` runs any number of
objects against it in one batched call (decoder.py), `postprocess` brings the masks to the frame.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .decoder import is_ambiguous, predict_masks
from .domain import Frame, Prompt
from .geometry import clip_points, to_model_frame
from .settings import Settings

log = logging.getLogger("dora_sam2")

# SAM2's input normalisation (ImageNet statistics), applied after scaling pixels to [0, 1].
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
SAM2_MODEL_TYPES = ("sam2", "sam2_video")


class ModelLoadError(Exception):
    """The model cannot be had. Its text is the one sentence telling the user what to do."""


@dataclass(frozen=True)
class ImageEmbedding:
    """A frame's encoder output: reused by every prompt on that frame."""

    features: list  # transformers' multi-level image embeddings, batch of 1
    width: int
    height: int


class Sam2Backend:
    def __init__(self, model, device: torch.device, dtype: torch.dtype, name: str):
        self.model = model
        self.device = device
        self.name = name
        self.input_size = int(model.config.prompt_encoder_config.image_size)
        self._mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
        self._use_dtype(dtype)

    def _use_dtype(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        with torch.inference_mode():  # depends on the weights only: computed once, not per prompt
            self.image_pe = self.model.get_image_wide_positional_embeddings().to(dtype)
        # Under autocast every large add in the decoder mixes fp32 and bf16 and every layer casts the
        # per-object image copies: a decoder that is in the fast dtype throughout skips both (4 M
        # parameters, copied once). The encoder stays under autocast, which is faster there.
        decoder = self.model.mask_decoder
        self.decoder = decoder if dtype == torch.float32 else _copy_in_dtype(decoder, dtype)

    def fall_back_to_float32(self) -> bool:
        """After float16 gave NaN or infinity (its range ends at 65504; bf16's does not): the rest of the
        run in float32, said once. False when the model is not in float16, where a retry would not help."""
        if self.dtype != torch.float16:
            return False
        log.warning("float16 overflowed (NaN or infinite outputs) on %s: running in float32 from now on. "
                    "Set DTYPE=float32 to start that way.", self.device)
        self._use_dtype(torch.float32)
        return True

    @classmethod
    def load(cls, settings: Settings, video: bool = False) -> "Sam2Backend":
        """`video` loads SAM2 with its memory modules (transformers' Sam2VideoModel), for tracking."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if device.type == "cpu":
            # torch's default is every core of the machine, which oversubscribes a pinned container
            torch.set_num_threads(settings.threads or len(os.sched_getaffinity(0)))
        started = time.perf_counter()
        model = _load_sam2(settings.model, video).to(device).eval()
        if settings.compile:
            # The encoder is ~95% of a frame's cost and sees one fixed input shape: compile it alone.
            model.vision_encoder = torch.compile(model.vision_encoder, dynamic=False)
        self = cls(model, device, dtype, settings.model)
        log.info(
            "model %s on %s (%d threads), %s%s, loaded in %.1f s",
            settings.model, device, torch.get_num_threads(), str(dtype).removeprefix("torch."),
            ", compiled encoder" if settings.compile else "", time.perf_counter() - started,
        )
        return self

    # -- the two calls the engine makes

    @torch.inference_mode()
    def encode(self, frame: Frame) -> ImageEmbedding:
        with self.autocast():
            features = self.model.get_image_embeddings(self.preprocess(frame.rgb))
        # In the decoder's dtype once per frame, not once per prompt.
        return ImageEmbedding([f.to(self.dtype) for f in features], frame.width, frame.height)

    @torch.inference_mode()
    def predict(self, embedding: ImageEmbedding, prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks and (N,) predicted IoU, in the prompt's object order."""
        logits, scores = self.decode(embedding, prompt)
        return self.postprocess(logits, scores, embedding.width, embedding.height)

    @torch.inference_mode()
    def decode(self, embedding: ImageEmbedding, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits (N, h, w) and predicted IoU (N,), on the device: all objects in one
        batched call."""
        if prompt.num_objects == 0:
            size = self.model.prompt_encoder.mask_input_size
            return torch.zeros((0, *size), device=self.device), torch.zeros(0, device=self.device)
        sparse, dense = self.prompt_embeddings(self.model_points(prompt, embedding.width, embedding.height),
                                               prompt.point_labels)
        features = [f.to(self.dtype) for f in embedding.features]  # no copy when encode made them (see there)
        ambiguous = torch.from_numpy(is_ambiguous(self.model.config, prompt.num_points())).to(self.device)
        return predict_masks(self.decoder, features[-1], self.image_pe, sparse, dense, features[:-1], ambiguous)

    def prompt_embeddings(self, points: np.ndarray, point_labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM2's prompt encoder on (N, K, 2) model-frame points and their (N, K) labels, in the decoder's
        dtype: sparse (1, N, K', C) and dense (1, C, h, w) embeddings."""
        points = torch.from_numpy(np.asarray(points, np.float32)).to(self.device)[None]
        labels = torch.from_numpy(np.asarray(point_labels, np.int64)).to(self.device)[None]
        with self.autocast():
            sparse, dense = self.model.prompt_encoder(
                input_points=points, input_labels=labels, input_boxes=None, input_masks=None
            )
        return sparse.to(self.dtype), dense[:1].to(self.dtype)

    # -- pre / post-processing, public so the parity check can compare them with Sam2Processor

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, S, S) normalised, resized to the square model input.

        As transformers' Sam2Processor does it: the uint8 image is resized (bilinear, antialiased, on the
        CPU, where torch has a uint8 kernel) and only then scaled to [0, 1]. Resizing float pixels instead
        differs by up to 0.017 after normalisation. The one transfer to the device is the resized uint8."""
        pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        size = (self.input_size, self.input_size)
        resized = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        pixels = resized.to(self.device).float().div_(255.0)
        return (pixels - self._mean) / self._std

    def model_points(self, prompt: Prompt, width: int, height: int) -> np.ndarray:
        return to_model_frame(clip_points(prompt.points, width, height), width, height, self.input_size)

    def postprocess(self, logits: torch.Tensor, scores: torch.Tensor, width: int, height: int,
                    *extra: torch.Tensor) -> tuple[np.ndarray, ...]:
        """The answer brought to the frame and to the CPU, in the one transfer back per answer:
        (N, H, W) bool masks, (N,) scores, and any `extra` per-object tensors as numpy.

        Raises FloatingPointError when the model produced NaN or infinity (fp16 overflow, a broken
        checkpoint): checked here, once, so the device is waited for once."""
        masks = self.upsample(logits, width, height)
        finite = torch.isfinite(logits).all() & torch.isfinite(scores).all()
        if not bool(finite.cpu()):
            raise FloatingPointError("the model produced NaN or infinite outputs")
        return masks.cpu().numpy(), scores.float().cpu().numpy(), *(t.cpu().numpy() for t in extra)

    @staticmethod
    def upsample(low_res_logits: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """(N, h, w) mask logits -> (N, H, W) bool on their device: one batched bilinear upsample, then
        logit > 0."""
        upsampled = F.interpolate(
            low_res_logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False
        )
        return upsampled[:, 0] > 0

    def warmup(self, width: int = 640, height: int = 480) -> float:
        """One encode and decode, so the first real frame does not pay for lazy initialisation."""
        started = time.perf_counter()
        frame = Frame("warmup", np.full((height, width, 3), 127, np.uint8), None, "rgb8")
        box = Prompt.from_boxes("warmup", np.array([[width / 4, height / 4, width * 3 / 4, height * 3 / 4]]))
        self.predict(self.encode(frame), box)
        return time.perf_counter() - started

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def _copy_in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of a transformers module with its floating-point weights in `dtype`, the original untouched.
    Built empty and handed the converted weights, so they are copied once (and tensor subclasses, such as
    the fake tensors of the GPU tests, stay what they are)."""
    with torch.device("meta"):
        clone = type(module)(module.config)
    weights = {name: t.to(dtype) if t.is_floating_point() else t for name, t in module.state_dict().items()}
    clone.load_state_dict(weights, assign=True)
    return clone.eval()


# ---------------------------------------------------------------------------- device and dtype


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"DEVICE={name} but this torch build sees no CUDA GPU: set DEVICE=cpu (or auto), "
                "or install a CUDA build of torch."
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ModelLoadError(f"DEVICE={name} but only {torch.cuda.device_count()} CUDA device(s) exist.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("DEVICE=mps but Metal is not available here: set DEVICE=cpu (or auto).")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` picks the fastest dtype that is numerically safe on the device (applied as autocast)."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        # bf16 where the chosen GPU computes it natively (Ampere, compute capability 8.0, and later);
        # is_bf16_supported() also says yes where it is only emulated (T4, V100), and asks the current
        # device, not the chosen one.
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls run natively (2.5x faster than fp32 on our 2-core machine)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# ---------------------------------------------------------------------------- loading


def _load_sam2(source: str, video: bool = False):
    # heavy: imported when the node starts, not at import
    from transformers import AutoConfig, Sam2Model, Sam2VideoModel

    local = _local_checkpoint(source)
    with _quiet_hub():
        try:
            config = _from_cache_or_hub(AutoConfig.from_pretrained, source, local)
        except OSError as error:
            raise ModelLoadError(_explain_missing(source, local, error)) from None
        if config.model_type not in SAM2_MODEL_TYPES:
            raise ModelLoadError(
                f"MODEL={source} is a {config.model_type!r} checkpoint, not SAM2: set MODEL to a SAM2 hub id "
                "such as facebook/sam2.1-hiera-tiny or to a directory holding one."
            )
        if video and config.model_type != "sam2_video":
            raise ModelLoadError(
                f"MODE=track needs SAM2's video memory, and MODEL={source} is an image-only SAM2 checkpoint: "
                "use a facebook/sam2.1-hiera-* hub id (they hold both), or MODE=segment."
            )
        try:
            return _from_cache_or_hub((Sam2VideoModel if video else Sam2Model).from_pretrained, source, local)
        except OSError as error:
            raise ModelLoadError(_explain_missing(source, local, error)) from None


def _local_checkpoint(source: str) -> Path | None:
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        if not path.is_dir():
            raise ModelLoadError(
                f"MODEL={source} is not a directory: set MODEL to a directory holding a SAM2 checkpoint "
                "(config.json and model.safetensors) or to a hub id such as facebook/sam2.1-hiera-tiny."
            )
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"MODEL={source} holds no config.json: point MODEL at a directory saved with "
                "save_pretrained (config.json and model.safetensors), or at a hub id."
            )
        return path
    return None


def _from_cache_or_hub(load, source: str, local: Path | None):
    """The local cache first: no network round trip when the weights are already here."""
    if local is not None:
        return load(str(local), local_files_only=True)
    try:
        return load(source, local_files_only=True)
    except OSError:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise
        log.info("fetching %s from the Hugging Face hub (first run only)", source)
        return load(source)


def _explain_missing(source: str, local: Path | None, error: OSError) -> str:
    text = str(error)
    if local is not None:
        return f"MODEL={source} could not be read as a SAM2 checkpoint ({text.splitlines()[0]})."
    if "couldn't connect" in text.lower() or "offline" in text.lower() or "connection" in text.lower():
        return (
            f"MODEL={source} is not in the Hugging Face cache and the hub cannot be reached: connect this "
            "machine to the internet once (the weights are then cached), or download the model elsewhere "
            f"(`hf download {source} --local-dir sam2-model`) and set MODEL to that directory."
        )
    return (
        f"MODEL={source} was not found on the Hugging Face hub: use one of facebook/sam2.1-hiera-tiny, "
        "-small, -base-plus, -large (or facebook/sam2-hiera-*), or a local checkpoint directory."
    )


@contextlib.contextmanager
def _quiet_hub():
    """The hub's retry warnings and progress bars would bury the one line that matters."""
    import huggingface_hub.utils as hub_utils
    import transformers

    hub_level = hub_utils.logging.get_verbosity()
    tf_level = transformers.logging.get_verbosity()
    hub_utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        hub_utils.logging.set_verbosity(hub_level)
        transformers.logging.set_verbosity(tf_level)
