"""SAM2's memory attention for B objects on one frame, without copying the frame B times.

transformers' `Sam2VideoMemoryAttention` takes the frame's features already replicated per object.
This module runs the same layers with the same weights, but the frame (and everything computed from it
alone, i.e. the first self-attention) keeps a batch of 1 until each object's memory comes in.

What stays per object is the attention itself, and it is most of an object's cost: each object's 4096
queries attend to 4096 keys per memory frame (about 550 GFLOP per object and frame for hiera-tiny with
its 7-frame memory as SAM2 computes it, against 207 GFLOP for encoding the frame). It runs one of two
ways (`AttentionPath`):

- in blocks: plain matrix products, one object at a time, `rows` queries a block, with the value
  projection after attention (370 GFLOP, the same result). About 2.3x faster than PyTorch's fused
  kernel on CPUs in bf16; in fp32 at 1 thread, 495 against 622 ms a layer stack for one object.
- fused: PyTorch's fused kernel, batched over objects, as GPUs run it.

Which is faster, and the block size, depend on the machine and the dtype: the node measures them at
start-up (`Sam2StreamingModel.choose_attention_by_measuring`) and keeps the answer (choices.py).

tests/test_video.py holds the result to transformers' streaming output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decoder import merge_heads, split_heads


@dataclass(frozen=True)
class AttentionPath:
    """How memory attention runs: in blocks of `rows` query rows, one object at a time; or, with `rows`
    0, PyTorch's fused kernel over every object at once."""

    rows: int = 0

    @property
    def fused(self) -> bool:
        return self.rows == 0

    def __str__(self) -> str:
        return "fused" if self.fused else f"blocks of {self.rows}"

    @classmethod
    def named(cls, name: str) -> "AttentionPath":
        """The path `str` names; ValueError for any other name."""
        path = next((p for p in ATTENTION_PATHS if str(p) == name), None)
        if path is None:
            raise ValueError(f"{name[:40]!r} is not one of {', '.join(map(str, ATTENTION_PATHS))}")
        return path

    @classmethod
    def default(cls, device: torch.device) -> "AttentionPath":
        """Before (or without) a measurement: blocks of 256 on CPUs, where bf16 made them 2.3x faster than
        the fused kernel; the fused kernel elsewhere."""
        return cls(256) if device.type == "cpu" else cls(0)


FUSED = AttentionPath(0)
# What start-up measures on a CPU. Smaller blocks keep a longer window's scores in cache (fp32 doubles
# their bytes); larger ones cost fewer calls.
ATTENTION_PATHS = (FUSED, AttentionPath(128), AttentionPath(256), AttentionPath(512))


def paths_for(attention) -> tuple[AttentionPath, ...]:
    """The ways `attention` can run: blocks take single-head attention only."""
    return ATTENTION_PATHS if attention.layers[0].self_attn.num_attention_heads == 1 else (FUSED,)


def attend_memory(attention, image, image_position, memory, memory_position, num_pointer_tokens: int,
                  path: AttentionPath | None = None, frame_tokens: int | None = None, layers: int | None = None,
                  keys: "MemoryKeys | None" = None):
    """image, image_position: (1, HW, C), the frame; memory, memory_position: (B, M, mem_dim), each
    object's memory tokens: its memory frames, `frame_tokens` each (default HW), then `num_pointer_tokens`
    object pointer tokens, which take no rotary encoding. Returns (B, HW, C): the frame as each object's
    memory sees it (after the first `layers` layers only, where given: what measuring times).

    SAM 2 remembers a frame as its HW feature tokens, all rotated as the queries are. EdgeTAM remembers it
    as a perceiver's latents: global ones, which take no rotary encoding, then a grid of spatial ones with
    rotary tables of their own (`position_ids_k`).

    `path`: by default `AttentionPath.default`; fused where `paths_for` offers no other. `keys`: the memory
    frames' keys kept from when they were remembered, where the caller keeps them."""
    path = path or AttentionPath.default(image.device)
    if path not in paths_for(attention):
        path = FUSED
    output = image + 0.1 * image_position
    rope = attention.rotary_emb(output, attention.position_ids)
    rotate_frame = _Rotation(*rope)
    rotate_memory = _Rotation(*_memory_rope(attention, output, rope), frame_tokens or image.shape[1],
                              num_pointer_tokens)
    keys_with_position = memory + memory_position
    for index, layer in enumerate(attention.layers[:layers]):
        query = layer.layer_norm1(output)
        output = output + _rope_attention(layer.self_attn, query, query, query, rotate_frame, rotate_frame, path)
        query = layer.layer_norm2(output)
        keys_of = None if keys is None else functools.partial(keys.of, index, layer.cross_attn_image, rotate_memory,
                                                               keys_with_position)
        output = output + _rope_attention(layer.cross_attn_image, query, keys_with_position, memory, rotate_frame,
                                          rotate_memory, path, keys_of)
        query = layer.layer_norm3(output)
        output = output + _feed_forward(layer, query)
    return attention.layer_norm(output)


def _memory_rope(attention, like, frame_rope=None):
    """The rotary tables of a memory frame's tokens: the frame's own for SAM 2 (`frame_rope` where computed);
    EdgeTAM's spatial latents have their own (`position_ids_k`)."""
    key_ids = getattr(attention, "position_ids_k", None)
    if key_ids is not None:
        return attention.rotary_emb(like, key_ids)
    return frame_rope or attention.rotary_emb(like, attention.position_ids)


def remembered_keys(attention, tokens, position) -> tuple[torch.Tensor, ...]:
    """N objects' memories of one frame as keys, bar their temporal encoding: tokens (N, T, mem_dim) and their
    position (T, mem_dim) -> per layer (N, T, C), projected and rotated as cross-attention reads them."""
    rotation = _Rotation(*_memory_rope(attention, tokens), tokens.shape[1])
    with_position = tokens + position
    return tuple(_project_rotated(layer.cross_attn_image.k_proj, with_position, rotation) for layer in attention.layers)


def temporal_keys(attention, temporal, frame_tokens: int) -> tuple[torch.Tensor, ...]:
    """What each temporal encoding adds to a frame's keys: temporal (K, mem_dim) -> per layer (K, T, C), each
    encoding projected without the bias (the frame's own part has it) and rotated at every token."""
    rotation = _Rotation(*_memory_rope(attention, temporal), frame_tokens)
    spread = temporal[:, None].expand(-1, frame_tokens, -1)
    return tuple(rotation(F.linear(spread, layer.cross_attn_image.k_proj.weight)) for layer in attention.layers)


@dataclass(frozen=True)
class MemoryKeys:
    """Each object's memory frames with the keys kept from when they were remembered (`remembered_keys`).

    A frame stays in memory for up to 7 frames, and its keys in every layer are rot(W (tokens + position +
    temporal[age]) + b), where only the age changes. Projection and rotation are linear, so the keys split
    into the frame's part, computed once, and the age's part (`temporal_keys`), the same for every frame and
    object: one add per frame and step instead of projecting and rotating again (in fp32 on one core of the
    Intel Xeon, 0.9 against 7 ms a layer for one object's window at 512). The sum rounds differently from
    projecting the sum (about 1e-7 relative). A frame without kept keys is projected as before."""

    frames: list[list[tuple[tuple | None, int]]]  # [object][frame]: (per-layer keys (T, C) or None, temporal index)
    temporal: tuple[torch.Tensor, ...]  # per layer (K, T, C)

    def of(self, layer: int, attn, rotation: "_Rotation", keys_with_position, b: int) -> torch.Tensor:
        """Object b's keys in `layer`: (M, C); its object pointers' projected (they take no rotation)."""
        source = keys_with_position[b]
        out = source.new_empty(source.shape[0], attn.k_proj.out_features)
        tokens = self.temporal[layer].shape[1]
        start = 0
        for keys, temporal_index in self.frames[b]:
            span = slice(start, start + tokens)
            if keys is None:
                out[span] = _project_rotated(attn.k_proj, source[span], _Rotation(rotation.cos, rotation.sin, tokens))
            else:
                torch.add(keys[layer], self.temporal[layer][temporal_index], out=out[span])
            start += tokens
        out[start:] = attn.k_proj(source[start:])
        return out


# Tokens the feed-forward takes at a time in fp32: its hidden activations (8x as wide) stay in the core's
# cache between its two products, 2 MB for SAM 2's. For one object at 512 (1024 tokens): 21.6 against
# 17.8 ms a layer on one Xeon core. Each token is computed alone, so the result is the same bit for bit.
FEED_FORWARD_TOKENS = 256


def _feed_forward(layer, x):
    """In fp32, FEED_FORWARD_TOKENS tokens at a time: where all objects' hidden activations at once (64 MB
    for 8 at 512) were fresh pages each layer, a block's reuse one allocation and stay in cache. SAM 2's
    ReLU runs in place: one pass over the hidden activations, not a second block written (linear1's
    backward reads its input, not its output, so training may too)."""
    def forward(x):
        if hasattr(layer, "mlp"):  # EdgeTAM
            return layer.mlp(x)
        hidden = layer.linear1(x)
        hidden = hidden.relu_() if type(layer.activation) is torch.nn.ReLU else layer.activation(hidden)
        return layer.linear2(hidden)

    if not _in_float32(x) or torch.is_grad_enabled():
        return forward(x)
    tokens = x.flatten(0, -2)
    out = torch.empty_like(tokens)
    for start in range(0, len(tokens), FEED_FORWARD_TOKENS):
        out[start : start + FEED_FORWARD_TOKENS] = forward(tokens[start : start + FEED_FORWARD_TOKENS])
    return out.view(x.shape)


def _in_float32(x) -> bool:
    """Computing in fp32, not under autocast: where the fp32 reorderings here pay. bf16 keeps the order of
    operations it was tuned with, and so its results."""
    return x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)


class _Rotation:
    """Rotary encoding of tokens laid out as frames of `frame_tokens`, then `pointers` unrotated tokens.
    In each frame the last len(cos) tokens rotate (all of them for SAM 2; the spatial latents for EdgeTAM).
    Computed in fp32, as SAM2 computes it."""

    def __init__(self, cos, sin, frame_tokens: int | None = None, pointers: int = 0):
        self.cos, self.sin = cos, sin
        self.frame_tokens = frame_tokens or cos.shape[-2]
        self.pointers = pointers

    def __call__(self, k):
        """k: (..., S, C) -> k rotated."""
        return self.of_pair(k, rotate_pairwise(k))

    def of_pair(self, k, k_pair):
        """k rotated, given `k_pair`, k with each pair of channels turned (x, y) -> (-y, x)."""
        out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        rotated = k.shape[-2] - self.pointers
        out_frames, k_frames, pair_frames = (t[..., :rotated, :].unflatten(-2, (-1, self.frame_tokens))
                                             for t in (out, k, k_pair))
        plain = self.frame_tokens - self.cos.shape[-2]
        _rotate_into(out_frames[..., plain:, :], k_frames[..., plain:, :], pair_frames[..., plain:, :],
                     self.cos, self.sin)
        out_frames[..., :plain, :] = k_frames[..., :plain, :]
        out[..., rotated:, :] = k[..., rotated:, :]
        return out


def _rotate_into(out, k, k_pair, cos, sin):
    """out = k cos + k_pair sin, broadcast over frames; in fp32, then in out's dtype."""
    if out.dtype == torch.float32 and not (torch.is_grad_enabled() and k.requires_grad):
        # In place, no temporaries; autograd records no out= products, so training takes the other way.
        torch.mul(k, cos, out=out)
        out.addcmul_(k_pair, sin)
    else:
        out.copy_(torch.addcmul(k.float() * cos, k_pair.float(), sin))


def rotate_pairwise(x):
    from transformers.models.sam2_video.modeling_sam2_video import rotate_pairwise

    return rotate_pairwise(x)


def _rope_attention(attn, query, key, value, rotate_queries: _Rotation, rotate_keys: _Rotation,
                    path: AttentionPath, keys_of=None):
    """`keys_of(b)`: object b's keys, projected and rotated, where the caller keeps them (MemoryKeys.of)."""
    if not path.fused:
        return attn.o_proj(attn.v_proj(_per_object_attention(attn, query, key, value, rotate_queries, rotate_keys,
                                                              path.rows, keys_of)))
    q = rotate_queries(split_heads(attn.q_proj(query), attn))
    if keys_of is None:
        k = rotate_keys(split_heads(attn.k_proj(key), attn))
    else:
        k = split_heads(torch.stack([keys_of(b) for b in range(len(key))]), attn)
    v = split_heads(attn.v_proj(value), attn)
    if q.shape[0] == 1 and k.shape[0] > 1:
        q = q.expand(k.shape[0], -1, -1, -1)
    return attn.o_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)))


def _per_object_attention(attn, query, key, value, rotate_queries: _Rotation, rotate_keys: _Rotation, rows: int,
                          keys_of=None):
    """Single-head attention, one object at a time, before the value projection: (B, L, kv_in_dim).

    Attention weights sum to 1, so they may average the raw values and the value projection follow,
    exactly: the 64-wide memory is averaged instead of its 256-wide projection. One object at a time
    keeps the working set to one object's keys (15 MB for hiera-tiny's full window) instead of every
    object's in fp32 (235 MB for 8), which made 8 objects cost more than twice 4.
    """
    q = _project_rotated(attn.q_proj, query, rotate_queries) * attn.scaling  # every object's queries at once
    dtype = q.dtype
    averaged = []
    for b in range(key.shape[0]):
        k = _project_rotated(attn.k_proj, key[b], rotate_keys) if keys_of is None else keys_of(b)
        with torch.autocast(q.device.type, enabled=False):
            averaged.append(_softmax_attention(q[min(b, len(q) - 1)].to(dtype), k.to(dtype), value[b].to(dtype),
                                               rows))
    return torch.stack(averaged)


def _project_rotated(linear, x, rotation: _Rotation):
    """rotation(linear(x)) for single-head attention. In fp32 the pair-turned projection, which the
    rotation needs, comes from the same matrix product with the weights' rows turned alike: one wider
    product instead of two passes (a negation and an interleave) over the projected keys, 7 MB per object
    and layer at 512. In bf16 the product is the cheap part, and the rotation runs in fp32 anyway."""
    if not _in_float32(x):
        return rotation(linear(x))
    weight, bias = linear.weight, linear.bias
    both = F.linear(x, torch.cat([weight, rotate_pairwise(weight.T).T]), torch.cat([bias, rotate_pairwise(bias)]))
    return rotation.of_pair(both[..., : linear.out_features], both[..., linear.out_features :])


def _softmax_attention(query, key, value, rows: int = 256):
    """softmax(query key^T) value for one object: (L, E) queries, (S, E) keys, (S, Ev) values -> (L, Ev).

    PyTorch's fused CPU kernel runs at under half the speed of plain matrix products here (about 200
    against 500 GFLOP/s in bf16), and wants values as wide as keys. So: matrix products, `rows` queries
    at a time. The scores stay in the input dtype (as transformers' eager SAM2 attention keeps them)
    and their softmax is computed in fp32 inside. Transient memory is one (rows, S) block, 15 MB in
    bf16 for hiera-tiny's 7-frame memory at 1024. Measured here, one layer for one object over that
    window, best of 5: 300 ms in blocks of 256 rows, 450 ms in blocks of 512 (the scores of a larger
    block fall out of cache between the two products), against about 800 ms fused. At 512, where the
    window is a quarter as long, 256 and 512 rows cost the same.
    """
    out = value.new_empty(query.shape[0], value.shape[-1])
    key_t = key.T
    for start in range(0, query.shape[0], rows):
        out[start : start + rows] = torch.softmax(query[start : start + rows] @ key_t, dim=-1) @ value
    return out
