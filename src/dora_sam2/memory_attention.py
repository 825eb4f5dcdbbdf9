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
                  fused: bool | None = None):
    """image, image_position: (1, HW, C), the frame; memory, memory_position: (B, M, mem_dim), each
    object's memory tokens (the last `num_pointer_tokens` are object pointers, which take no rotary
    encoding). Returns (B, HW, C): the frame as each object's memory sees it.

    `fused`: PyTorch's fused attention kernel; by default everywhere but on CPUs (see
    `_per_object_attention`), and always where attention has several heads."""
    if fused is None:
        fused = image.device.type != "cpu"
    fused = fused or attention.layers[0].self_attn.num_attention_heads != 1
    output = image + 0.1 * image_position
    rope = attention.rotary_emb(output, attention.position_ids)
    keys_with_position = memory + memory_position
    for layer in attention.layers:
        query = layer.layer_norm1(output)
        output = output + _rope_attention(layer.self_attn, query, query, query, rope, fused)
        query = layer.layer_norm2(output)
        output = output + _rope_attention(layer.cross_attn_image, query, keys_with_position, memory, rope, fused,
                                     num_pointer_tokens)
        query = layer.layer_norm3(output)
        output = output + layer.linear2(layer.activation(layer.linear1(query)))
    return attention.layer_norm(output)


def _rope_attention(attn, query, key, value, rope, fused: bool, num_k_exclude_rope: int = 0):
    # transformers is imported when the model runs, not when this module is imported
    from transformers.models.sam2_video.modeling_sam2_video import apply_rotary_pos_emb_2d

    q = split_heads(attn.q_proj(query), attn)
    cos, sin = rope
    if not fused:
        return attn.o_proj(attn.v_proj(_per_object_attention(attn, q, key, value, cos, sin, num_k_exclude_rope)))
    k = split_heads(attn.k_proj(key), attn)
    q, k = apply_rotary_pos_emb_2d(q, k, cos, sin, repeat_freqs_k=attn.rope_k_repeat,
                                   num_k_exclude_rope=num_k_exclude_rope)
    v = split_heads(attn.v_proj(value), attn)
    if q.shape[0] == 1 and k.shape[0] > 1:
        q = q.expand(k.shape[0], -1, -1, -1)
    return attn.o_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)))


def _per_object_attention(attn, q, key, value, cos, sin, num_k_exclude_rope):
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
        k = split_heads(attn.k_proj(key[b : b + 1]), attn)
        rotated = k.shape[-2] - num_k_exclude_rope  # object pointers take no rotary encoding
        k = torch.cat([_rotate(k[..., :rotated, :], cos, sin), k[..., rotated:, :]], dim=-2)
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


def _softmax_attention(query, key, value, rows: int = 512):
    """softmax(query key^T) value for one object: (L, E) queries, (S, E) keys, (S, Ev) values -> (L, Ev).

    PyTorch's fused CPU kernel runs at under half the speed of plain matrix products here (about 200
    against 500 GFLOP/s in bf16), and wants values as wide as keys. So: matrix products, `rows` queries
    at a time. The scores stay in the input dtype (as transformers' eager SAM2 attention keeps them)
    and their softmax is computed in fp32 inside. Transient memory is one (rows, S) block, about 30 MB
    for hiera-tiny's 7-frame memory. Measured here, one layer for one object over a full window:
    240 ms, against 565 ms fused.
    """
    out = value.new_empty(query.shape[0], value.shape[-1])
    key_t = key.T
    for start in range(0, query.shape[0], rows):
        out[start : start + rows] = torch.softmax(query[start : start + rows] @ key_t, dim=-1) @ value
    return out
