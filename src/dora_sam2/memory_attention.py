"""SAM2's memory attention for B objects on one frame, without copying the frame B times.

transformers' `Sam2VideoMemoryAttention` takes the frame's features already replicated per object.
This module runs the same layers with the same weights, but the frame (and everything computed from it
alone, i.e. the first self-attention) keeps a batch of 1 until each object's memory comes in.

What stays per object is the attention itself, and it is most of an object's cost: each object's 4096
queries attend to 4096 keys per memory frame (about 550 GFLOP per object and frame for hiera-tiny with
its 7-frame memory as SAM2 computes it, against 207 GFLOP for encoding the frame). On CPUs it runs as
plain matrix products, one object at a time, with the value projection after attention (370 GFLOP,
the same result): about 2.3x faster than PyTorch's fused attention kernel (see `_per_object_attention`
and `_softmax_attention`). GPUs keep the fused kernel, batched over objects.

tests/test_video.py holds the result to transformers' streaming output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .decoder import merge_heads, split_heads


def attend_memory(attention, image, image_position, memory, memory_position, num_pointer_tokens: int,
                  fused: bool | None = None, frame_tokens: int | None = None):
    """image, image_position: (1, HW, C), the frame; memory, memory_position: (B, M, mem_dim), each
    object's memory tokens: its memory frames, `frame_tokens` each (default HW), then `num_pointer_tokens`
    object pointer tokens, which take no rotary encoding. Returns (B, HW, C): the frame as each object's
    memory sees it.

    SAM 2 remembers a frame as its HW feature tokens, all rotated as the queries are. EdgeTAM remembers it
    as a perceiver's latents: global ones, which take no rotary encoding, then a grid of spatial ones with
    rotary tables of their own (`position_ids_k`).

    `fused`: PyTorch's fused attention kernel; by default everywhere but on CPUs (see
    `_per_object_attention`), and always where attention has several heads."""
    if fused is None:
        fused = image.device.type != "cpu"
    fused = fused or attention.layers[0].self_attn.num_attention_heads != 1
    output = image + 0.1 * image_position
    rope = attention.rotary_emb(output, attention.position_ids)
    key_ids = getattr(attention, "position_ids_k", None)  # EdgeTAM
    key_rope = rope if key_ids is None else attention.rotary_emb(output, key_ids)
    rotate_keys = _KeyRotation(*key_rope, frame_tokens or image.shape[1], num_pointer_tokens)
    keys_with_position = memory + memory_position
    for layer in attention.layers:
        query = layer.layer_norm1(output)
        output = output + _rope_attention(layer.self_attn, query, query, query, rope, _KeyRotation(*rope), fused)
        query = layer.layer_norm2(output)
        output = output + _rope_attention(layer.cross_attn_image, query, keys_with_position, memory, rope,
                                          rotate_keys, fused)
        query = layer.layer_norm3(output)
        output = output + _feed_forward(layer, query)
    return attention.layer_norm(output)


def _feed_forward(layer, x):
    if hasattr(layer, "mlp"):  # EdgeTAM
        return layer.mlp(x)
    return layer.linear2(layer.activation(layer.linear1(x)))


class _KeyRotation:
    """Rotary encoding of keys laid out as frames of `frame_tokens`, then `pointers` unrotated tokens.
    In each frame the last len(cos) tokens rotate (all of them for SAM 2; the spatial latents for EdgeTAM)."""

    def __init__(self, cos, sin, frame_tokens: int | None = None, pointers: int = 0):
        self.cos, self.sin = cos, sin
        self.frame_tokens = frame_tokens or cos.shape[-2]
        self.pointers = pointers

    def __call__(self, k):
        rotated = k.shape[-2] - self.pointers
        frames = k[..., :rotated, :].unflatten(-2, (-1, self.frame_tokens))
        plain = self.frame_tokens - self.cos.shape[-2]
        if plain:
            frames = torch.cat([frames[..., :plain, :], _rotate(frames[..., plain:, :], self.cos, self.sin)], dim=-2)
        else:
            frames = _rotate(frames, self.cos, self.sin)
        return torch.cat([frames.flatten(-3, -2), k[..., rotated:, :]], dim=-2)


def _rope_attention(attn, query, key, value, rope, rotate_keys: _KeyRotation, fused: bool):
    q = split_heads(attn.q_proj(query), attn)
    cos, sin = rope
    if not fused:
        return attn.o_proj(attn.v_proj(_per_object_attention(attn, q, key, value, cos, sin, rotate_keys)))
    q = _rotate(q, cos, sin)
    k = rotate_keys(split_heads(attn.k_proj(key), attn))
    v = split_heads(attn.v_proj(value), attn)
    if q.shape[0] == 1 and k.shape[0] > 1:
        q = q.expand(k.shape[0], -1, -1, -1)
    return attn.o_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)))


def _per_object_attention(attn, q, key, value, cos, sin, rotate_keys: _KeyRotation):
    """Single-head attention, one object at a time, before the value projection: (B, L, kv_in_dim).

    Attention weights sum to 1, so they may average the raw values and the value projection follow,
    exactly: the 64-wide memory is averaged instead of its 256-wide projection. One object at a time
    keeps the working set to one object's keys (15 MB for hiera-tiny's full window) instead of every
    object's in fp32 (235 MB for 8), which made 8 objects cost more than twice 4.
    """
    dtype = q.dtype
    q = _rotate(q, cos, sin) * attn.scaling  # every object's queries at once
    averaged = []
    for b in range(key.shape[0]):
        k = rotate_keys(split_heads(attn.k_proj(key[b : b + 1]), attn))
        with torch.autocast(q.device.type, enabled=False):
            averaged.append(_softmax_attention(q[min(b, len(q) - 1), 0].to(dtype), k[0, 0].to(dtype),
                                               value[b].to(dtype)))
    return torch.stack(averaged)


def _rotate(x, cos, sin):
    """SAM2's 2-D rotary encoding, in fp32 as SAM2 computes it, of (..., F * L, C) tokens: F frames of the
    L positions the (L, C) tables cover. transformers repeats the tables once per memory frame on every
    call; broadcasting them over frames spares those copies."""
    from transformers.models.sam2_video.modeling_sam2_video import rotate_pairwise

    frames = x.float().unflatten(-2, (-1, cos.shape[-2]))
    return (frames * cos + rotate_pairwise(frames) * sin).flatten(-3, -2).to(x.dtype)


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
