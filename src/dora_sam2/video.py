"""SAM2's video memory on a live stream: every object of a frame in one batch, memory bounded.

transformers' `Sam2VideoModel.forward` runs objects one by one and its session keeps every frame's
pixels and every output for ever. This module runs the same modules with the same weights, but:

- all tracked objects of a frame go through memory attention and the mask decoder together; the
  frame's features are computed once and shared, never copied per object (memory_attention.py);
- all objects prompted on a frame share one image (no memory is read on a prompted frame), so their
  decoding shares the image work as `decoder.py` does for boxes;
- each object's `ObjectMemory` keeps only what SAM2 reads back: its prompted frames (the first and
  the newest) and the last few tracked frames. Memory use is flat however long the stream runs.

EdgeTAM runs through the same loop: its memory encoding ends in a perceiver that compresses each
object's memory of a frame to a few hundred latents, and its memory attention reads those.

tests/test_video.py holds it to transformers' own streaming results (tests/test_edgetam.py for EdgeTAM).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .decoder import DecoderOutput, choose_masks, is_ambiguous, run_decoder
from .domain import Frame, Prompt
from .measuring import best_seconds
from .memory_attention import AttentionPath, MemoryKeys, attend_memory, paths_for, remembered_keys, temporal_keys
from .model import Sam2Backend
from .processing import non_overlapping
from .settings import FixedLimits
from .streaming import FrameAnswer, ObjectMemory

# The numbers of objects per memory-encoder batch that choose_memory_group_by_measuring times.
MEMORY_GROUPS = (1, 2, 4, 8)
# The logit SAM2 writes over the whole mask of an object it does not see (transformers' NO_OBJ_SCORE).
NO_OBJECT_LOGIT = -1024.0


@dataclass(frozen=True)
class FrameFeatures:
    """A frame's encoder output, before any object's memory is mixed in."""

    image: torch.Tensor  # (1, C, H, W) top-level features
    position: torch.Tensor  # (1, C, H, W) their positional encoding
    high_res: list  # [(1, C/8, 4H, 4W), (1, C/4, 2H, 2W)], for the decoder's upscaling
    width: int
    height: int


@dataclass(frozen=True)
class Memory:
    """What one object leaves behind on one frame, for later frames to attend to."""

    features: torch.Tensor  # (tokens, mem_dim): SAM 2's HW feature tokens (bf16), EdgeTAM's latents
    position: torch.Tensor  # (tokens, mem_dim)
    pointer: torch.Tensor  # (C,): the object's summary token
    keys: tuple | None = None  # per memory attention layer, (tokens, C): memory_attention.remembered_keys


@dataclass(frozen=True)
class Step:
    """The model's answer for N objects on one frame."""

    logits: torch.Tensor  # (N, 4H, 4W) low-resolution mask logits
    scores: torch.Tensor  # (N,) predicted IoU
    object_score_logits: torch.Tensor  # (N,): <= 0 means SAM2 does not see the object
    pointers: torch.Tensor  # (N, C)

    @staticmethod
    def concat(steps: list["Step"], order: list[int]) -> "Step":
        """Steps of object groups joined, then put in `order` (indices into the concatenation)."""
        index = torch.as_tensor(order, dtype=torch.long, device=steps[0].logits.device)
        return Step(*(torch.cat([getattr(s, name) for s in steps])[index]
                      for name in ("logits", "scores", "object_score_logits", "pointers")))


def _answering(method):
    """Inference mode, as the node runs: unless the model is learning (training/), where the same steps
    keep their gradients."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with torch.inference_mode(not self.learning):
            return method(self, *args, **kwargs)

    return run


class Sam2StreamingModel:
    """Frames and prompts in, per-object masks and memories out. The caller (tracking.Tracker) owns the
    objects and their `ObjectMemory`; this class owns the maths.

    `learning` (the trainer sets it) runs the same steps with gradients: nothing that depends on the
    weights is then computed once and kept."""

    learning = False

    def __init__(self, backend: Sam2Backend):
        self.backend = backend  # pre/post-processing, device, dtype, the fast decoder copy
        self.model = backend.model  # a transformers Sam2VideoModel or EdgeTamVideoModel
        config = self.model.config
        self.config = config
        self.num_maskmem = config.num_maskmem
        self.max_pointers = config.max_object_pointers_in_encoder
        self.size = tuple(self.model.backbone_feature_sizes[-1])
        self._pointer_dtype = next(self.model.object_pointer_proj.parameters()).dtype
        self._memory_positions: dict[tuple, torch.Tensor] = {}  # see `remember`
        self._temporal_keys: dict[int, tuple] = {}  # per memory frame's tokens: memory_attention.temporal_keys
        self._no_point = {}  # per dtype: a tracked frame's prompt is "no point", the same embedding every time
        # The mask size the memory encoder reads: 16 x the feature grid (SAM 2: its input size; SAM 3: larger)
        self._mask_memory_size = 4 * self.model.prompt_encoder.mask_input_size[0]

    @property
    def device(self):
        return self.backend.device

    def fall_back_to_float32(self) -> bool:
        return self.backend.fall_back_to_float32()

    def new_memory(self) -> ObjectMemory:
        return ObjectMemory(recent=self.num_maskmem - 1, pointers=self.max_pointers - 1)

    # -- what the tracker calls

    @_answering
    def encode(self, frame: Frame) -> FrameFeatures:
        with self.backend.autocast():
            pixels, encoder = self.backend.preprocess(frame.rgb), self.backend.image_encoder
            if encoder is not None:  # the same maps, the cheaper way (image_encoder.py)
                maps, position = encoder.features(pixels, position=True)
            else:
                out = self.model.get_image_features(pixels, return_dict=True)
                maps = [f.permute(1, 2, 0).reshape(1, -1, *size)
                        for f, size in zip(out.fpn_hidden_states, self.model.backbone_feature_sizes)]
                position = out.fpn_position_encoding[-1].permute(1, 2, 0).reshape(1, -1, *self.size)
        maps = [f.to(self.backend.dtype) for f in maps]
        return FrameFeatures(maps[-1], position, maps[:-1], frame.width, frame.height)

    @_answering
    def prompt(self, features: FrameFeatures, prompt: Prompt) -> Step:
        """Objects given points or a box on this frame. As in SAM2, a prompted frame reads no memory.
        Objects given the same number of points share one batch (see `Prompt.by_point_count`)."""
        steps, order = [], []
        for members, group, out in self._prompted(features, prompt):
            steps.append(self.choose(out, self._ambiguous(group.num_points(), tracked=False)))
            order.extend(members.tolist())
        return Step.concat(steps, np.argsort(order).tolist())

    @_answering
    def candidates(self, features: FrameFeatures, prompt: Prompt) -> tuple[DecoderOutput, torch.Tensor]:
        """Everything the decoder proposes for each prompted object (the single mask and the three
        candidates, their IoU and object scores) and which prompts are ambiguous, in the prompt's object
        order: what `prompt` chooses from, and what training scores."""
        outs, ambiguous, order = [], [], []
        for members, group, out in self._prompted(features, prompt):
            outs.append(out)
            ambiguous.append(self._ambiguous(group.num_points(), tracked=False))
            order.extend(members.tolist())
        index = torch.as_tensor(np.argsort(order), device=self.device)
        joined = (torch.cat([getattr(o, name) for o in outs])[index] for name in DecoderOutput.__dataclass_fields__)
        return DecoderOutput(*joined), torch.cat(ambiguous)[index]

    def _prompted(self, features: FrameFeatures, prompt: Prompt):
        """(object indices, their prompt, the decoder's output), one batched call per number of points."""
        image = features.image + self.model.no_memory_embedding.view(1, -1, 1, 1).to(features.image.dtype)
        for members, group in prompt.by_point_count():
            points = self.backend.model_points(group, features.width, features.height)
            sparse, dense = self.backend.prompt_embeddings(points, group.point_labels)
            yield members, group, self._decode(image, sparse, dense, features.high_res)

    @_answering
    def track(self, features: FrameFeatures, memories: list[ObjectMemory], frame_index: int) -> Step:
        """Objects carried by their memory onto this frame: memory attention and decoding, batched."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, memory in enumerate(memories):
            groups.setdefault(memory.layout(frame_index), []).append(i)
        steps, order = [], []
        for members in groups.values():
            image = self._attend(features, [memories[i] for i in members], frame_index)
            sparse, dense = self._no_point_embeddings()
            out = self._decode(image, sparse.expand(-1, len(members), -1, -1), dense, features.high_res)
            steps.append(self.choose(out, self._ambiguous(np.zeros(len(members), int), tracked=True)))
            order.extend(members)
        inverse = np.argsort(order)
        return Step.concat(steps, inverse.tolist())

    def join(self, steps: list[Step], order: list[int]) -> Step:
        return Step.concat(steps, order)

    @property
    def attention_paths(self) -> tuple[AttentionPath, ...]:
        """The ways this model's memory attention can run, which `choose_attention_by_measuring` times."""
        return paths_for(self.model.memory_attention)

    @_answering
    def choose_attention_by_measuring(self, candidates: tuple[AttentionPath, ...] | None = None, repeats: int = 2,
                                      clock=time.perf_counter) -> dict[AttentionPath, float]:
        """Keep whichever way of running memory attention (memory_attention.AttentionPath) is fastest here
        in the backend's dtype: which one is depends on the CPU, the dtype and the window's length, not on a
        rule. Timed on one object whose memory window is full, through the first layer only (every layer
        costs the same), in measuring.best_seconds's rounds. Returns the seconds of each."""
        memories, features, frame_index = self._full_window()

        def attend(path: AttentionPath) -> None:
            self.backend.attention_path = path
            self._attend(features, memories, frame_index, layers=1)

        seconds = best_seconds(candidates or self.attention_paths, attend, repeats, clock)
        self.backend.attention_path = min(seconds, key=seconds.get)
        return seconds

    @_answering
    def choose_memory_group_by_measuring(self, candidates: tuple[int, ...] = MEMORY_GROUPS, repeats: int = 2,
                                         clock=time.perf_counter) -> dict[int, float]:
        """Keep the number of objects whose memories are encoded in one batch that costs the least per
        object here: which one depends on the CPU's caches, the input size and the dtype, not on a rule.
        Each candidate times one batch of that many blank objects (the values do not change its cost), in
        measuring.best_seconds's rounds. Returns the seconds per object of each."""
        features, steps = self._blank_frame(), {group: self._blank_step(group) for group in candidates}
        self.backend.memory_group = 0
        batch = best_seconds(candidates, lambda group: self.remember(features, steps[group], [False] * group),
                             repeats, clock)
        seconds = {group: s / group for group, s in batch.items()}
        self.backend.memory_group = min(seconds, key=seconds.get)
        return seconds

    def _full_window(self) -> tuple[list[ObjectMemory], FrameFeatures, int]:
        """One object that remembers blank features on its prompted frame and on every frame of its
        window: what memory attention reads once tracking has run a few seconds (the values do not change
        its cost)."""
        features = self._blank_frame()
        memory = self.new_memory()
        [remembered] = self.remember(features, self._blank_step(1), [True])
        memory.add(0, remembered, prompted=True)
        window = max(memory.recent.maxlen, memory.recent_pointers.maxlen)
        for frame_index in range(1, window + 1):
            memory.add(frame_index, remembered, prompted=False)
        return [memory], features, window + 1

    def _blank_frame(self) -> FrameFeatures:
        """A frame's features, all zeros: what measuring runs on (the values do not change the cost)."""
        channels, (height, width) = self.config.memory_attention_hidden_size, self.size
        blank = torch.zeros(1, channels, height, width, device=self.device, dtype=self.backend.dtype)
        return FrameFeatures(blank, blank, [], 4 * width, 4 * height)

    def _blank_step(self, objects: int) -> Step:
        """`objects` objects' answers on a blank frame, each seen, for their memory to be encoded."""
        height, width = self.size
        zeros = torch.zeros(objects, device=self.device)
        return Step(torch.zeros(objects, 4 * height, 4 * width, device=self.device), zeros, zeros + 1,
                    torch.zeros(objects, self.model.no_object_pointer.shape[-1], device=self.device))

    @_answering
    def remember(self, features: FrameFeatures, step: Step, prompted: list[bool],
                 apart: bool = False) -> list[Memory]:
        """Each object's memory of this frame: its mask fused with the frame's features, all in one batch.
        `apart` (NON_OVERLAP): each pixel remembered by the one object that claims it most, as Meta's video
        predictor does with `non_overlap_masks_for_mem_enc`, so that a mask that spread onto a neighbour is
        not remembered there (`step` holds all of a camera's objects of the frame)."""
        encoder = self.model.memory_encoder
        with self.backend.autocast():
            high_res = F.interpolate(step.logits[:, None].float(), size=(self.config.image_size,) * 2,
                                     mode="bilinear", align_corners=False)
            if apart:  # where Meta applies it: at the model's input size, before the sigmoid or binarising
                high_res = non_overlapping(high_res)
            if self._mask_memory_size != self.config.image_size:
                # SAM 3: masks at its 1008-pixel input, and a memory encoder that reads them at 16 x the feature
                # grid (1152), resampled as transformers does (antialiased)
                high_res = F.interpolate(high_res, size=(self._mask_memory_size,) * 2, mode="bilinear",
                                         align_corners=False, antialias=True)
            from_prompt = torch.as_tensor(prompted, device=high_res.device).view(-1, 1, 1, 1)
            # A prompted frame's mask is remembered hard, a tracked one soft (SAM2 does the same).
            mask = torch.where(from_prompt, (high_res > 0).to(high_res.dtype), torch.sigmoid(high_res))
            mask = mask * self.config.sigmoid_scale_for_mem_enc + self.config.sigmoid_bias_for_mem_enc
            # The frame's projection is the same for every object: computed once, then broadcast.
            image = encoder.feature_projection(features.image.to(encoder.feature_projection.weight.dtype))
            # In groups of `memory_group` objects where measured faster (choose_memory_group_by_measuring):
            # on a CPU, a batch of 8 masks at 512 outgrows the caches and costs more per object than 2.
            group = self.backend.memory_group or max(len(mask), 1)
            memory = torch.cat([encoder.projection(encoder.memory_fuser(image + encoder.mask_downsampler(part)))
                                for part in mask.split(group)])
            if self.model.occlusion_spatial_embedding_parameter is not None:
                hidden = (step.object_score_logits <= 0).to(memory.dtype).view(-1, 1, 1, 1)
                memory = memory + hidden * self.model.occlusion_spatial_embedding_parameter.view(1, -1, 1, 1)
        position = encoder.position_encoding(torch.Size((1, *memory.shape[1:])), memory.device, memory.dtype)
        perceiver = getattr(self.model, "spatial_perceiver", None)
        if perceiver is None:
            tokens = memory.to(torch.bfloat16).flatten(2).transpose(1, 2)  # (N, HW, mem_dim), as SAM2 stores it
            position = position[0].flatten(1).T.float()
        else:  # EdgeTAM: each object's memory compressed to the perceiver's latents, kept as computed
            # One object at a time: transformers' perceiver takes a batch of one (its 2-D step views an
            # expanded tensor), and it is cheap beside memory attention.
            with self.backend.autocast():
                compressed = [perceiver(memory[i : i + 1], position.to(high_res.dtype)) for i in range(len(memory))]
            tokens = torch.cat([t for t, _ in compressed])
            position = compressed[0][1][0].float()
        # The position depends on the memory's shape alone: one tensor shared by every memory, not one per frame.
        if not self.learning:
            position = self._memory_positions.setdefault(tuple(tokens.shape[1:]), position)
        keys = self._remembered_keys(tokens, position)
        return [Memory(tokens[i].contiguous(), position, step.pointers[i], keys and self._own_keys(keys, i))
                for i in range(len(prompted))]

    @staticmethod
    def _own_keys(keys: tuple, i: int) -> tuple:
        """Object i's keys, apart from the batch's: a prompted frame that one object keeps for the whole run
        must not keep the other objects' keys of that frame alive (4 MB each at 512)."""
        return tuple(k[i].clone() if len(k) > 1 else k[i] for k in keys)

    def _keeps_keys(self) -> bool:
        """Memory frames keep their keys on CPUs in fp32, where projecting and rotating them again at each step
        is memory traffic that costs (memory_attention.MemoryKeys), with single-head attention (their layout).
        Never while learning: they depend on the weights."""
        return (not self.learning and self.device.type == "cpu" and self.backend.dtype == torch.float32
                and self.attention_paths != (AttentionPath(0),))

    def _remembered_keys(self, tokens, position) -> tuple | None:
        """These memories' keys in every layer (N, T, C), where kept: within FixedLimits.MEMORY_KEYS_MB for the
        N objects' whole windows (past it, a frame's keys are projected again at each step)."""
        if not self._keeps_keys():
            return None
        layers = self.model.memory_attention.layers
        frame_bytes = len(layers) * tokens.shape[1] * layers[0].cross_attn_image.k_proj.out_features * 4
        window = self.num_maskmem + 1  # the prompted frames kept beside the tracked ones
        if len(tokens) * window * frame_bytes > FixedLimits.MEMORY_KEYS_MB * 2**20:
            return None
        return remembered_keys(self.model.memory_attention, tokens.to(self.backend.dtype), position)

    def postprocess(self, step: Step, frame: Frame, apart: bool = False) -> FrameAnswer:
        """Raises FloatingPointError on NaN or infinite outputs: then nothing of the frame is remembered.
        `apart` (NON_OVERLAP=all): no pixel in two objects' masks, decided at the frame's size (Meta's
        `non_overlap_masks`)."""
        visible = step.object_score_logits > 0
        return FrameAnswer(*self.backend.postprocess(step.logits, step.scores, frame.width, frame.height, visible,
                                                     apart=apart))

    # -- internals

    def _no_point_embeddings(self):
        dtype = self.backend.dtype
        if self.learning:
            return self.backend.prompt_embeddings(np.zeros((1, 1, 2)), -np.ones((1, 1)))
        if dtype not in self._no_point:
            self._no_point[dtype] = self.backend.prompt_embeddings(np.zeros((1, 1, 2)), -np.ones((1, 1)))
        return self._no_point[dtype]

    def _decode(self, image, sparse, dense, high_res) -> DecoderOutput:
        decoder = self.backend.decoder
        image_pe = self.model.get_image_wide_positional_embeddings() if self.learning else self.backend.image_pe
        return run_decoder(decoder, image.to(self.backend.dtype), image_pe, sparse, dense, high_res)

    def _ambiguous(self, num_points: np.ndarray, tracked: bool) -> torch.Tensor:
        return torch.from_numpy(np.asarray(is_ambiguous(self.config, num_points, tracked), bool)).to(self.device)

    def choose(self, out: DecoderOutput, ambiguous: torch.Tensor) -> Step:
        """One mask per object (the rule both modes share), its pointer and visibility, as transformers'
        `_single_frame_forward`."""
        logits, iou, token = choose_masks(self.backend.decoder, out, ambiguous)

        object_score = out.object_score_logits[:, 0].float()
        visible = (object_score > 0).view(-1, 1)
        logits = torch.where(visible.view(-1, 1, 1), logits.float(), NO_OBJECT_LOGIT)
        with self.backend.autocast():
            pointer = self.model.object_pointer_proj(token.to(self._pointer_dtype))
        pointer = torch.where(visible, pointer.float(), self.model.no_object_pointer.float())
        return Step(logits, iou.float(), object_score, pointer)

    def _attend(self, features: FrameFeatures, memories: list[ObjectMemory], frame_index: int,
                layers: int | None = None) -> torch.Tensor:
        """The frame's features conditioned on each object's memory: (B, C, H, W), one batch (after the
        first `layers` layers only, where given: what measuring times)."""
        memory, position, num_pointer_tokens = zip(*(self._memory_tokens(m, frame_index) for m in memories))
        memory, position = torch.stack(memory), torch.stack(position)  # (B, M, mem_dim)
        image = features.image.flatten(2).transpose(1, 2)  # (1, HW, C): shared by every object
        image_position = features.position.flatten(2).transpose(1, 2)
        frame_tokens = next((m.features.shape[0] for _, m in memories[0].spatial(frame_index)), None)
        keys = self._memory_keys(memories, frame_index, frame_tokens)
        with self.backend.autocast():
            out = attend_memory(self.model.memory_attention, image, image_position, memory, position,
                                num_pointer_tokens[0], self.backend.attention_path, frame_tokens, layers, keys)
        return out.transpose(1, 2).reshape(len(memories), -1, *self.size)

    def _memory_keys(self, memories: list[ObjectMemory], frame_index: int, frame_tokens: int | None):
        """The objects' memory frames with their kept keys, and the temporal encodings' part (computed once per
        frame size); None where no frame kept any."""
        frames = [[(m.keys, offset - 1) for offset, m in memory.spatial(frame_index)] for memory in memories]
        if not self._keeps_keys() or all(keys is None for window in frames for keys, _ in window):
            return None
        if frame_tokens not in self._temporal_keys:
            temporal = self.model.memory_temporal_positional_encoding
            self._temporal_keys[frame_tokens] = temporal_keys(self.model.memory_attention,
                                                              temporal.reshape(len(temporal), -1).float(), frame_tokens)
        return MemoryKeys(frames, self._temporal_keys[frame_tokens])

    def _memory_tokens(self, memory: ObjectMemory, frame_index: int):
        """One object's memory as SAM2's memory attention reads it: spatial memories with their
        temporal encoding, then its object pointers split into mem_dim-wide tokens. In the model's
        dtype: memory attention projects them once per layer, and a cast each time costs."""
        temporal = self.model.memory_temporal_positional_encoding
        tokens, positions = [], []
        for offset, m in memory.spatial(frame_index):
            tokens.append(m.features)
            positions.append(m.position + temporal[offset - 1].view(1, -1))
        pointers = memory.pointers(frame_index)
        if pointers:
            offsets = torch.tensor([o for o, _ in pointers], dtype=torch.float32, device=self.device)
            stacked = torch.stack([p for _, p in pointers])  # (P, C)
            channels, mem_dim = stacked.shape[1], self.model.mem_dim
            if self.config.enable_temporal_pos_encoding_for_object_pointers:
                from transformers.models.sam2_video.modeling_sam2_video import get_1d_sine_pe

                sine = get_1d_sine_pe(offsets / float(self.max_pointers - 1), dim=channels)
                pointer_position = self.model.temporal_positional_encoding_projection_layer(sine.to(stacked.dtype))
            else:
                pointer_position = stacked.new_zeros(len(pointers), mem_dim)
            splits = channels // mem_dim
            tokens.append(stacked.reshape(-1, splits, mem_dim).flatten(0, 1))
            positions.append(pointer_position.repeat_interleave(splits, dim=0))
            num_pointer_tokens = len(pointers) * splits
        else:
            num_pointer_tokens = 0
        dtype = self.backend.dtype
        return torch.cat([t.to(dtype) for t in tokens]), torch.cat(positions).to(dtype), num_pointer_tokens
