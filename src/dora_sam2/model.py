"""The model backend: a SAM 2 family checkpoint through transformers (`Sam2Model`, or `Sam2VideoModel` /
`EdgeTamVideoModel` / SAM 3's `Sam3TrackerVideoModel` with their memory modules for tracking), with our own
pre/post-processing (no torchvision). A SAM 3 checkpoint also brings its detector, which reads words
(`finder`, sam3.py).

Like Meta's image predictor: `encode` computes a frame's embedding once, `predict` answers any number of
objects on it (`decode`: one batched decoder call per point count, decoder.py; `postprocess`: the masks
at the frame's size).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import processing
from .decoder import is_ambiguous, predict_masks
from .devices import resolve_device, resolve_dtype
from .domain import Frame, Phrases, Prompt
from .geometry import clip_points, to_model_frame
from .loading import is_sam3, load_sam2, load_sam3_detector

log = logging.getLogger("dora_sam2")

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
    def __init__(self, model, device: torch.device, dtype: torch.dtype, name: str, finder=None):
        self.model = model
        self.device = device
        self.name = name
        self.input_size = int(model.config.prompt_encoder_config.image_size)
        sam3 = is_sam3(model.config)
        self.normalisation = processing.SAM3_NORMALISATION if sam3 else (processing.PIXEL_MEAN, processing.PIXEL_STD)
        self.finder = finder  # sam3.Sam3Finder: what reads words, on SAM 3 checkpoints only
        self._use_dtype(dtype)

    def _use_dtype(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        if self.finder is not None:
            self.finder.dtype = dtype
        with torch.inference_mode():  # depends on the weights only: computed once, not per prompt
            self.image_pe = self.model.get_image_wide_positional_embeddings().to(dtype)
        # Under autocast every large add in the decoder mixes fp32 and bf16 and every layer casts the
        # per-object image copies: a decoder that is in the fast dtype throughout skips both (4 M
        # parameters, copied once). The encoder stays under autocast, which is faster there.
        decoder = self.model.mask_decoder
        self.decoder = decoder if dtype == torch.float32 else _copy_in_dtype(decoder, dtype)

    def choose_dtype_by_measuring(self, candidates=(torch.float32, torch.bfloat16), repeats: int = 2,
                                  clock=time.perf_counter) -> dict[torch.dtype, float]:
        """Keep whichever dtype encodes a frame fastest here, timed on this model at its own input size
        (the encoder is most of a frame's cost): a CPU's flags say bf16 is native, not that it is faster
        (AVX512-BF16 without AMX can be slower than fp32). Each is timed best of `repeats`, after one
        untimed run for its lazy set-up. Returns the seconds per encode of each.

        The kept dtype has then encoded, its lazy set-up done: its last embedding is kept for `warmup`,
        which decodes it instead of encoding again."""
        frame = Frame("dtype", np.full((self.input_size, self.input_size, 3), 127, np.uint8), None, "rgb8")
        seconds, embeddings = {}, {}
        for dtype in candidates:
            self._use_dtype(dtype)
            embeddings[dtype] = self.encode(frame)
            runs = []
            for _ in range(repeats):
                started = clock()
                self.encode(frame)
                runs.append(clock() - started)
            seconds[dtype] = min(runs)
        kept = min(seconds, key=seconds.get)
        self._use_dtype(kept)
        self._measured_embedding = (kept, embeddings[kept])
        return seconds

    _measured_embedding: tuple[torch.dtype, ImageEmbedding] | None = None  # see choose_dtype_by_measuring

    def keep_dtype(self, dtype: torch.dtype) -> None:
        """The dtype an earlier measurement on this machine chose (choices.py), without measuring."""
        self._use_dtype(dtype)

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
    def load(cls, source: str, *, video: bool = False, device: str = "auto", dtype: str = "auto",
             image_size: int = 0, threads: int = 0, compile: bool = False) -> "Sam2Backend":
        """A checkpoint (hub id or directory) on `device` in `dtype` ("auto": the fastest this device
        has); `video` loads it with its memory modules, for tracking. `image_size` 0 keeps the
        checkpoint's input size; `threads` 0 uses the cores this process may run on."""
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        if device.type == "cpu":
            # torch's default is every core of the machine, which oversubscribes a pinned container
            torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        started = time.perf_counter()
        model = load_sam2(source, video, image_size).to(device).eval()
        finder = _sam3_finder(source, image_size, model, device, dtype) if is_sam3(model.config) else None
        if compile:
            # The encoder is ~95% of a frame's cost and sees one fixed input shape: compile it alone.
            model.vision_encoder = torch.compile(model.vision_encoder, dynamic=False)
        self = cls(model, device, dtype, source, finder)
        log.info(
            "model %s at %dx%d on %s (%d threads), %s%s, loaded in %.1f s",
            source, self.input_size, self.input_size, device, torch.get_num_threads(),
            str(dtype).removeprefix("torch."), ", compiled encoder" if compile else "",
            time.perf_counter() - started,
        )
        return self

    # -- what the engine calls: encode a frame, then decode its prompts and postprocess (predict: both)

    @torch.inference_mode()
    def encode(self, frame: Frame) -> ImageEmbedding:
        with self.autocast():
            features = self.model.get_image_embeddings(self.preprocess(frame.rgb))
        # In the decoder's dtype once per frame, not once per prompt.
        return ImageEmbedding([f.to(self.dtype) for f in features], frame.width, frame.height)

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
                    *extra: torch.Tensor) -> tuple[np.ndarray, ...]:
        return processing.to_frame(logits, scores, width, height, *extra)

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
        if self.finder is not None:
            self.finder.find(frame, Phrases(("object",)), min_score=1.0, limit=1)
        return time.perf_counter() - started

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def _sam3_finder(source: str, image_size: int, tracker, device: torch.device, dtype: torch.dtype):
    """SAM 3's detector beside its tracker, the two reading one ViT."""
    from .sam3 import Sam3Finder, share_vit

    detector, tokenizer = load_sam3_detector(source, image_size)
    detector = detector.to(device).eval()
    share_vit(detector, tracker)
    return Sam3Finder(detector, tokenizer, device, dtype)


def _copy_in_dtype(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of a transformers module with its floating-point weights in `dtype`, the original untouched.
    Built empty and handed the converted weights, so they are copied once (and tensor subclasses, such as
    the fake tensors of the GPU tests, stay what they are)."""
    with torch.device("meta"):
        clone = type(module)(module.config)
    weights = {name: t.to(dtype) if t.is_floating_point() else t for name, t in module.state_dict().items()}
    clone.load_state_dict(weights, assign=True)
    return clone.eval()
