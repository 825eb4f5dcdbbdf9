"""The model backend: a SAM 2 family checkpoint through transformers (`Sam2Model`, or `Sam2VideoModel` /
`EdgeTamVideoModel` / SAM 3's `Sam3TrackerVideoModel` with their memory modules for tracking), with our own
pre/post-processing (no torchvision). A SAM 3 checkpoint's detector, which reads words, is its own object
(sam3.py's `Sam3Finder`), loaded beside this one on the same precision (loading.load_checkpoint).

Like Meta's image predictor: `encode` computes a frame's embedding once, `predict` answers any number of
objects on it (`decode`: one batched decoder call per point count, decoder.py; `postprocess`: the masks
at the frame's size).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from . import processing
from .decoder import is_ambiguous, predict_masks
from .domain import Frame, Prompt
from .geometry import clip_points, to_model_frame
from .image_encoder import ImageEncoder, runs_here
from .loading import is_sam3
from .measuring import best_seconds
from .memory_attention import AttentionPath
from .precision import Precision

# Objects per mask-decoder call: the decoder's working memory grows with the objects it holds at once
# (about 12 MB each), so a message of a hundred boxes runs in pieces of this many.
DECODE_BATCH = 16


@dataclass(frozen=True)
class ImageEmbedding:
    """A frame's encoder output: reused by every prompt on that frame."""

    features: list  # transformers' multi-level image embeddings, batch of 1
    width: int
    height: int


class Sam2Backend:
    def __init__(self, model, device: torch.device, dtype: torch.dtype, name: str):
        self.model = model
        self.precision = Precision(device, dtype)  # a SAM 3 checkpoint's finder shares it
        self.name = name
        self.input_size = int(model.config.prompt_encoder_config.image_size)
        sam3 = is_sam3(model.config)
        self.normalisation = processing.SAM3_NORMALISATION if sam3 else (processing.PIXEL_MEAN, processing.PIXEL_STD)
        self._in_dtype: tuple[torch.dtype, torch.Tensor, torch.nn.Module] | None = None  # see _dtype_bound
        # How tracking runs memory attention, measured at start-up (video.choose_attention_by_measuring) or
        # kept from an earlier start (choices.py); None: memory_attention.AttentionPath.default
        self.attention_path: AttentionPath | None = None
        # How many objects' memories are encoded in one batch, measured likewise
        # (video.choose_memory_group_by_measuring) or kept; 0: all of a frame's at once
        self.memory_group = 0

    @property
    def device(self) -> torch.device:
        return self.precision.device

    @property
    def dtype(self) -> torch.dtype:
        return self.precision.dtype

    @property
    def image_pe(self) -> torch.Tensor:
        """The image-wide positional embedding, in the dtype: it depends on the weights only, so it is
        computed once per dtype, not per prompt."""
        return self._dtype_bound()[1]

    @property
    def decoder(self) -> torch.nn.Module:
        """The mask decoder in the dtype throughout. Under autocast every large add in the decoder mixes fp32
        and bf16 and every layer casts the per-object image copies: a decoder in the fast dtype skips both
        (4 M parameters, copied once per dtype). The encoder stays under autocast, which is faster there."""
        return self._dtype_bound()[2]

    def _dtype_bound(self) -> tuple[torch.dtype, torch.Tensor, torch.nn.Module]:
        """What follows the dtype, made again when the precision changed it (measuring, a fall back)."""
        dtype = self.precision.dtype
        if self._in_dtype is None or self._in_dtype[0] != dtype:
            with torch.inference_mode():
                image_pe = self.model.get_image_wide_positional_embeddings().to(dtype)
            decoder = self.model.mask_decoder
            self._in_dtype = (dtype, image_pe, decoder if dtype == torch.float32 else _copy_in_dtype(decoder, dtype))
        return self._in_dtype

    def choose_dtype_by_measuring(self, candidates=(torch.float32, torch.bfloat16), repeats: int = 2,
                                  clock=time.perf_counter) -> dict[torch.dtype, float]:
        """Keep whichever dtype encodes a frame fastest here, timed on this model at its own input size
        (the encoder is most of a frame's cost): a CPU's flags say bf16 is native, not that it is faster
        (AVX512-BF16 without AMX can be slower than fp32). Timed in measuring.best_seconds's rounds.
        Returns the seconds per encode of each.

        The kept dtype has then encoded, its lazy set-up done: its last embedding is kept for `warmup`,
        which decodes it instead of encoding again."""
        frame = Frame("dtype", np.full((self.input_size, self.input_size, 3), 127, np.uint8), None, "rgb8")
        embeddings = {}

        def encode(dtype: torch.dtype) -> None:
            self.precision.use(dtype)
            embeddings[dtype] = self.encode(frame)

        seconds = best_seconds(candidates, encode, repeats, clock)
        kept = min(seconds, key=seconds.get)
        self.precision.use(kept)
        self._measured_embedding = (kept, embeddings[kept])
        return seconds

    _measured_embedding: tuple[torch.dtype, ImageEmbedding] | None = None  # see choose_dtype_by_measuring

    def keep_dtype(self, dtype: torch.dtype) -> None:
        """The dtype an earlier measurement on this machine chose (choices.py), without measuring."""
        self.precision.use(dtype)

    def fall_back_to_float32(self) -> bool:
        """After a float16 overflow: this checkpoint's models in float32 (said once); False where that
        would not help."""
        return self.precision.fall_back_to_float32()

    def autocast(self):
        return self.precision.autocast()

    @classmethod
    def load(cls, source: str, **options) -> "Sam2Backend":
        """This model alone, without a SAM 3 checkpoint's finder: loading.load_checkpoint's options."""
        from .loading import load_checkpoint

        return load_checkpoint(source, finder=False, **options).model

    # -- what the engine calls: encode a frame, then decode its prompts and postprocess (predict: both)

    @torch.inference_mode()
    def encode(self, frame: Frame) -> ImageEmbedding:
        with self.autocast():
            pixels, encoder = self.preprocess(frame.rgb), self.image_encoder
            if encoder is None:
                maps = self.model.get_image_embeddings(pixels)
            else:  # get_image_embeddings' maps, the cheaper way (image_encoder.py)
                maps, _ = encoder.features(pixels)
                maps[-1] = maps[-1] + self.model.no_memory_embedding.view(1, -1, 1, 1)  # no memory: an image alone
        # In the decoder's dtype once per frame, not once per prompt.
        return ImageEmbedding([f.to(self.dtype) for f in maps], frame.width, frame.height)

    @property
    def image_encoder(self) -> ImageEncoder | None:
        """This model's image encoder run by image_encoder.py, or None where transformers' forward runs it
        (neither Hiera nor RepViT, compiled, or hooked: asked at every frame, a hook may come at any time)."""
        if not runs_here(self.model):
            return None
        if self._image_encoder is None or self._image_encoder[0] is not self.model.vision_encoder:
            self._image_encoder = (self.model.vision_encoder, ImageEncoder(self.model))
        return self._image_encoder[1]

    _image_encoder: tuple | None = None  # (the encoder it was made for, its ImageEncoder and what it keeps)

    @torch.inference_mode()
    def predict(self, embedding: ImageEmbedding, prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) bool masks and (N,) predicted IoU, in the prompt's object order."""
        logits, scores, _ = self.decode(embedding, prompt)
        return self.postprocess(logits, scores, embedding.width, embedding.height)

    @torch.inference_mode()
    def decode(self, embedding: ImageEmbedding, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits (N, h, w) and predicted IoU (N,), on the device: all objects in one
        batched call."""
        if prompt.num_objects == 0:
            size = self.model.prompt_encoder.mask_input_size
            return torch.zeros((0, *size), device=self.device), *torch.zeros((2, 0), device=self.device)
        features = [f.to(self.dtype) for f in embedding.features]  # no copy when encode made them (see there)
        groups = prompt.by_point_count()  # boxes together, clicks by count: one call each
        outputs = [self._decode_group(features, group, embedding.width, embedding.height) for _, group in groups]
        if len(outputs) == 1:
            return outputs[0]
        order = torch.from_numpy(np.argsort(np.concatenate([members for members, _ in groups]))).to(self.device)
        return tuple(torch.cat(parts)[order] for parts in zip(*outputs))

    def _decode_group(self, features, prompt: Prompt, width: int, height: int):
        if prompt.num_objects > DECODE_BATCH:
            index = np.arange(prompt.num_objects)
            parts = [self._decode_group(features, prompt.keep((index >= i) & (index < i + DECODE_BATCH)), width, height)
                     for i in range(0, prompt.num_objects, DECODE_BATCH)]
            return tuple(torch.cat(outputs) for outputs in zip(*parts))
        sparse, dense = self.prompt_embeddings(self.model_points(prompt, width, height), prompt.point_labels)
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
        return processing.preprocess(rgb, self.input_size, self.device, self.normalisation)

    def model_points(self, prompt: Prompt, width: int, height: int) -> np.ndarray:
        return to_model_frame(clip_points(prompt.points, width, height), width, height, self.input_size)

    def postprocess(self, logits: torch.Tensor, scores: torch.Tensor, width: int, height: int,
                    *extra: torch.Tensor, apart: bool = False) -> tuple[np.ndarray, ...]:
        return processing.to_frame(logits, scores, width, height, *extra, apart=apart)

    def warmup(self, width: int = 640, height: int = 480) -> float:
        """One encode and decode, so the first real frame does not pay for lazy initialisation. Right after
        choose_dtype_by_measuring the decode alone: the measuring's encodes in this dtype did the rest."""
        started = time.perf_counter()
        frame = Frame("warmup", np.full((height, width, 3), 127, np.uint8), None, "rgb8")
        box = Prompt.from_boxes("warmup", np.array([[width / 4, height / 4, width * 3 / 4, height * 3 / 4]]))
        measured, self._measured_embedding = self._measured_embedding, None
        if measured is not None and measured[0] == self.dtype:  # its masks at the warm-up frame's size
            embedding = ImageEmbedding(measured[1].features, width, height)
        else:
            embedding = self.encode(frame)
        self.predict(embedding, box)
        return time.perf_counter() - started


def _copy_in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of a transformers module with its floating-point weights in `dtype`, the original untouched.
    Built empty and handed the converted weights, so they are copied once (and tensor subclasses, such as
    the fake tensors of the GPU tests, stay what they are)."""
    with torch.device("meta"):
        clone = type(module)(module.config)
    weights = {name: t.to(dtype) if t.is_floating_point() else t for name, t in module.state_dict().items()}
    clone.load_state_dict(weights, assign=True)
    return clone.eval()
