"""SAM 2 and EdgeTAM checkpoints from the Hugging Face hub or a local directory, and the one sentence to
say when one cannot be had. No remote code is ever run.

EdgeTAM (transformers' `EdgeTamModel` / `EdgeTamVideoModel`) is SAM 2's architecture with a RepViT image
encoder from timm and a perceiver that compresses each memory frame: the node runs it as it runs SAM 2.

SAM 3 (`facebook/sam3`, a `sam3_video` checkpoint) holds two models over one ViT: the detector that reads
words (`Sam3Model`) and a SAM 2-style tracker (`Sam3TrackerVideoModel`), which answers boxes and clicks and
follows objects as SAM 2 does. Both are loaded from the one checkpoint, sharing the ViT (sam3.py).

`load_checkpoint` returns what a checkpoint holds, each model its own object, the two on one precision."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import compat
from .quoting import first_line

if TYPE_CHECKING:
    from .model import Sam2Backend
    from .sam3 import Sam3Finder

log = logging.getLogger("dora_sam2")

SAM3_MODEL_TYPE = "sam3_video"  # the hub layout of facebook/sam3: detector, tracker and their shared ViT
SAM2_MODEL_TYPES = ("sam2", "sam2_video", "edgetam", "edgetam_video", SAM3_MODEL_TYPE)
VIDEO_MODEL_TYPES = ("sam2_video", "edgetam_video", SAM3_MODEL_TYPE)
EDGETAM_HUB_ID = "yonigozlan/EdgeTAM-hf"  # the id transformers' EdgeTAM docs load
SAM3_HUB_ID = "facebook/sam3"
SAM3_FILES = "config.json, model.safetensors, tokenizer.json and tokenizer_config.json"
# The offline sentence's words, which demo.sh's failure report recognises (scripts/demo_run.py).
NOT_CACHED_OFFLINE = "is not in the Hugging Face cache and the hub cannot be reached"


class ModelLoadError(Exception):
    """The model cannot be had. Its text is the one sentence telling the user what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """The models one checkpoint holds, sharing one precision (precision.py): `model` answers boxes and
    clicks and follows objects (SAM 2, EdgeTAM, SAM 3's tracker); `finder` reads words (SAM 3's detector),
    None where the checkpoint has none."""

    model: Sam2Backend
    finder: Sam3Finder | None = None

    def warmup(self, width: int = 640, height: int = 480) -> float:
        """Seconds for each model's first work (model.Sam2Backend.warmup says what that is)."""
        started = time.perf_counter()
        self.model.warmup(width, height)
        if self.finder is not None:
            self.finder.warmup(width, height)
        return time.perf_counter() - started


def load_checkpoint(source: str, *, video: bool = False, device: str = "auto", dtype: str = "auto",
                    image_size: int = 0, threads: int = 0, compile: bool = False, finder: bool = True) -> Checkpoint:
    """A checkpoint (hub id or directory) on `device` in `dtype` ("auto": the fastest this device has);
    `video` loads it with its memory modules, for tracking. `image_size` 0 keeps the checkpoint's input
    size; `threads` 0 uses the cores this process may run on. A SAM 3 checkpoint's detector comes too,
    unless `finder` is False. ModelLoadError, ConfigError: one sentence."""
    import torch

    from .devices import prepare_cpu, resolve_device, resolve_dtype
    from .model import Sam2Backend  # imports this module: the models are imported when loaded

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if device.type == "cpu":
        prepare_cpu(threads)
    started = time.perf_counter()
    tracker = load_sam2(source, video, image_size).to(device).eval()
    if is_edgetam(tracker.config):
        fold_repvit_branches(tracker)
    model = Sam2Backend(tracker, device, dtype, source)
    words = _sam3_finder(source, image_size, model) if finder and is_sam3(tracker.config) else None
    if compile:
        # The encoder is ~95% of a frame's cost and sees one fixed input shape: compile it alone.
        tracker.vision_encoder = torch.compile(tracker.vision_encoder, dynamic=False)
    log.info(
        "model %s at %dx%d on %s (%d threads), %s%s, loaded in %.1f s",
        source, model.input_size, model.input_size, device, torch.get_num_threads(),
        str(dtype).removeprefix("torch."), ", compiled encoder" if compile else "",
        time.perf_counter() - started,
    )
    return Checkpoint(model, words)


def _sam3_finder(source: str, image_size: int, model: Sam2Backend) -> Sam3Finder:
    """SAM 3's detector beside its tracker, the two reading one ViT on one precision."""
    from .sam3 import Sam3Finder, share_vit

    detector, tokenizer = load_sam3_detector(source, image_size)
    detector = detector.to(model.device).eval()
    share_vit(detector, model.model)
    return Sam3Finder(detector, tokenizer, model.precision)



def load_sam2(source: str, video: bool = False, image_size: int = 0):
    """transformers' video model (video) or image model of a SAM 2 or EdgeTAM checkpoint, from a hub id or a
    local directory, the local cache first; ModelLoadError with one sentence saying what to do when it
    cannot be had. `image_size` (0: the checkpoint's own) runs the same weights at another square input."""
    # heavy: imported when the node starts, not at import
    from transformers import AutoConfig

    _supported(compat.check_transformers)
    local = _local_checkpoint(source)
    with _quiet_hub():
        try:
            config = _from_cache_or_hub(AutoConfig.from_pretrained, source, local)
        except OSError as error:
            raise ModelLoadError(_explain_missing(source, local, error)) from None
        if config.model_type not in SAM2_MODEL_TYPES:
            sam3_part = config.model_type.startswith("sam3")
            raise ModelLoadError(
                f"MODEL={source} is a {config.model_type!r} checkpoint, "
                + (f"one part of SAM 3: set MODEL to the whole checkpoint, {SAM3_HUB_ID} or a directory of its "
                   f"files ({SAM3_FILES})." if sam3_part else
                   f"not SAM2: set MODEL to a SAM2 hub id such as facebook/sam2.1-hiera-tiny, to {EDGETAM_HUB_ID}, "
                   f"to {SAM3_HUB_ID}, or to a directory holding one.")
            )
        if video and config.model_type not in VIDEO_MODEL_TYPES:
            raise ModelLoadError(
                f"MODE=track needs SAM2's video memory, and MODEL={source} is an image-only SAM2 checkpoint: "
                "use a facebook/sam2.1-hiera-* hub id (they hold both), or MODE=segment."
            )
        if is_edgetam(config):
            _require_timm(source)
        if image_size:
            config = at_input_size(config, image_size, source)
        # SAM 3's tracker is its video model in both modes: boxes and clicks are answered by the same modules.
        video = video or is_sam3(config)
        load = functools.partial(_model_class(config, video).from_pretrained, config=config)
        try:
            model = _from_cache_or_hub(load, source, local)
        except OSError as error:
            raise ModelLoadError(_explain_missing(source, local, error)) from None
    _supported(lambda: compat.check_model(model, video))
    return model


def _supported(check) -> None:
    try:
        check()
    except compat.UnsupportedTransformers as error:
        raise ModelLoadError(str(error)) from None


def load_sam3_detector(source: str, image_size: int = 0):
    """SAM 3's detector (`Sam3Model`) and its tokenizer, from the checkpoint `load_sam2` read the tracker of."""
    from transformers import AutoConfig, AutoTokenizer, Sam3Model

    local = _local_checkpoint(source)
    with _quiet_hub():
        try:
            config = _from_cache_or_hub(AutoConfig.from_pretrained, source, local)
            if image_size:
                config = at_input_size(config, image_size, source)
            detector = _from_cache_or_hub(functools.partial(Sam3Model.from_pretrained, config=config), source, local)
        except OSError as error:
            raise ModelLoadError(_explain_missing(source, local, error)) from None
        try:
            tokenizer = _from_cache_or_hub(AutoTokenizer.from_pretrained, source, local)
            problem = None
        except (OSError, ValueError) as error:
            problem = first_line(error, 160)
        # Without its files, transformers makes an empty tokenizer of the config's kind: every word unknown.
        if problem or len(tokenizer) <= len(tokenizer.all_special_tokens):
            raise ModelLoadError(
                f"MODEL={source} has no readable tokenizer, which SAM 3 reads words with "
                f"({problem or 'no vocabulary'}): a SAM 3 directory holds {SAM3_FILES}.")
    return detector, tokenizer


def is_edgetam(config) -> bool:
    return config.model_type.startswith("edgetam")


def fold_repvit_branches(model) -> None:
    """EdgeTAM's RepViT in its inference form, for a model that only infers: each block's parallel
    convolutions and its batch norms folded into one convolution (timm's reparameterize_model, in place).
    The features are the same to rounding (3e-7 at 512); the backbone costs a third less (158 to 102 ms
    at 512 in fp32 on one thread). Never for training: the folded model has no batch norm to train."""
    from timm.utils.model import reparameterize_model

    backbone = model.vision_encoder.backbone
    backbone.timm_model = reparameterize_model(backbone.timm_model, inplace=True)


def is_sam3(config) -> bool:
    """A SAM 3 checkpoint, or its tracker as loaded from one."""
    return config.model_type in (SAM3_MODEL_TYPE, "sam3_tracker_video")


def _model_class(config, video: bool):
    import transformers

    if is_sam3(config):
        return transformers.Sam3TrackerVideoModel
    family = "EdgeTam" if is_edgetam(config) else "Sam2"
    return getattr(transformers, f"{family}VideoModel" if video else f"{family}Model")


def _require_timm(source: str) -> None:
    """EdgeTAM's image encoder is timm's RepViT, and timm imports torchvision: both must import here."""
    try:
        import timm  # noqa: F401
    except Exception as error:  # ImportError, or torchvision built for another torch
        raise ModelLoadError(
            f"MODEL={source} is EdgeTAM, whose image encoder needs timm (and torchvision built for this "
            f"torch): pip install 'dora-sam2[edgetam]' ({type(error).__name__}: {str(error).splitlines()[0]})."
        ) from None


def at_input_size(config, size: int, source: str = "the model"):
    """The checkpoint's config at a square input of `size` pixels. The weights do not depend on it (Hiera
    interpolates its position embeddings; RepViT is convolutional); everything that follows from the size
    does: the feature map sizes, the prompt encoder's grid and coordinate scale, memory attention's rotary
    tables and the memory encoder's mask size."""
    multiple, smallest = _size_multiple(config)
    if size % multiple or size < smallest:
        trained = "1008 is what SAM 3 was" if is_sam3(config) else "1024 is what SAM 2 and EdgeTAM were"
        example = "504 or 756" if is_sam3(config) else "512 or 768"
        raise ModelLoadError(f"IMAGE_SIZE={size} does not fit {source}: use a multiple of {multiple} from "
                             f"{smallest} up (e.g. {example}; {trained} trained at).")
    config = copy.deepcopy(config)
    if is_sam3(config):  # its config carries the size to the detector, the tracker and their feature maps
        config.image_size = size
        return config
    if not is_edgetam(config):
        config.vision_config.backbone_config.image_size = [size, size]
    config.vision_config.backbone_feature_sizes = [[size // stride] * 2 for stride in (4, 8, 16)]
    config.prompt_encoder_config.image_size = size
    if hasattr(config, "memory_attention_rope_feat_sizes"):  # the video model
        config.image_size = size
        config.memory_attention_rope_feat_sizes = [size // 16] * 2
    return config


def _size_multiple(config) -> tuple[int, int]:
    """(multiple, smallest). Hiera tiles its window position embedding over the first stage's features
    (size / 4), so the size is a multiple of 4 x that window, two windows at least. RepViT downsamples 32x,
    and EdgeTAM's perceiver cuts the memory (size / 16) into a fixed grid of windows (16 x 16). SAM 3's ViT
    cuts 14-pixel patches, and its coarsest feature map halves that grid."""
    if is_sam3(config):
        return 2 * 14, 8 * 14
    if not is_edgetam(config):
        multiple = 4 * config.vision_config.backbone_config.window_size_per_stage[0]
        return multiple, 2 * multiple
    grid = math.isqrt(getattr(config, "perceiver_resampler_num_latents_2d", 0) or 1)
    multiple = math.lcm(32, 16 * grid)
    return multiple, multiple


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


class HubUnreachable(OSError):
    """The hub did not answer one request: no network, no name resolution, or a proxy that refuses."""


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
        _probe_hub(source)
        log.info("fetching %s from the Hugging Face hub (first run only)", source)
        return load(source)


def _probe_hub(source: str) -> None:
    """One request for the checkpoint's config.json, without retries; HubUnreachable if it gets no answer.
    The download itself retries a failed connection with backoff (23 s, five retries), right for a flaky
    network, a long silence on a machine that has none. Any HTTP answer (even 401 or 404) means the hub is
    there: the load that follows says what it means."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        import httpx2 as http  # huggingface_hub 2.x
    except ImportError:
        import httpx as http  # huggingface_hub 1.x

    try:
        get_hf_file_metadata(hf_hub_url(source, "config.json"))
    except http.TransportError as error:
        raise HubUnreachable(first_line(error, 160) or type(error).__name__) from None
    except Exception:  # noqa: BLE001  the hub answered: the real load reports what it said
        pass


def _explain_missing(source: str, local: Path | None, error: OSError) -> str:
    text = str(error)
    if local is not None:
        return f"MODEL={source} could not be read as a SAM2 checkpoint ({text.splitlines()[0]})."
    if any(word in text.lower() for word in ("gated", "401", "403", "restricted", "awaiting")):
        return (f"MODEL={source} is gated on the Hugging Face hub: ask for access on "
                f"https://huggingface.co/{source}, then log in on this machine (`hf auth login`, or set HF_TOKEN), "
                f"or download it where you have access ({_download(source)}) and set MODEL "
                f"to that directory ({SAM3_FILES}).")
    if source.lower() == "facebook/edgetam":
        return (f"MODEL={source} could not be loaded: it holds Meta's original EdgeTAM checkpoint; "
                f"transformers loads the same model as MODEL={EDGETAM_HUB_ID}.")
    unreachable = isinstance(error, HubUnreachable)
    if unreachable or any(word in text.lower() for word in ("couldn't connect", "offline", "connection")):
        reason = f" ({text})" if unreachable else ""
        return f"MODEL={source} {NOT_CACHED_OFFLINE}{reason}: {_fetch_once(source)}"
    return (
        f"MODEL={source} was not found on the Hugging Face hub: use one of facebook/sam2.1-hiera-tiny, "
        "-small, -base-plus, -large (or facebook/sam2-hiera-*), or a local checkpoint directory."
    )


def _fetch_once(source: str) -> str:
    """What to do to have `source` here. SAM 3 is gated: access and a login come before any download."""
    if source.lower() == SAM3_HUB_ID:
        return (f"it is gated, so with access granted (https://huggingface.co/{source}) run `hf auth login` and "
                f"{_download(source)} on a machine with a network, and set MODEL to that directory ({SAM3_FILES}).")
    return ("connect this machine to the internet once (the weights are then cached), or download the model "
            f"elsewhere ({_download(source)}) and set MODEL to that directory.")


def _download(source: str) -> str:
    """The `hf download` of the hub id `source`, into a directory named after the model."""
    return f"`hf download {source} --local-dir {source.rstrip('/').rsplit('/', 1)[-1]}`"


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
