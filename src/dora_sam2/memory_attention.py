"""SAM2's memory attention for B objects on one frame, without copying the frame B times.

transformers' `Sam2VideoMemoryAttention` takes the frame's features already replicated per object.
This module runs the same layers with the same weights, but the frame (and everything computed from it
alone, i.e. the first self-attention) keeps a batch of 1 until each object's memory comes in.

What stays per object is the attention itself, and it is most of an object's cost: each object's 4096
queries attend to 4096 keys per memory frame (about 550 GFLOP per object and frame for hiera-tiny with
its 7-frame memory, against 207 GFLOP for encoding the frame). Plain chunked matrix products were
tried in place of PyTorch's fused kernel: no faster here once in the model, so the fused kernel stays.

tests/test_video.py holds the result to transformers' streaming output.
"""

from __future__ import annotations

import torch.nn.functional as F

from .decoder import merge_heads, split_heads


def attend_memory(attention, image, image_position, memory, memory_position, num_pointer_tokens: int):
    """image, image_position: (1, HW, C), the frame; memory, memory_position: (B, M, mem_dim), each
    object's memory tokens (the last `num_pointer_tokens` are object pointers, which take no rotary
    encoding). Returns (B, HW, C): the frame as each object's memory sees it."""
    output = image + 0.1 * image_position
    rope = attention.rotary_emb(output, attention.position_ids)
    keys_with_position = memory + memory_position
    for layer in attention.layers:
        query = layer.layer_norm1(output)
        output = output + _attention(layer.self_attn, query, query, query, rope)
        query = layer.layer_norm2(output)
        output = output + _attention(layer.cross_attn_image, query, keys_with_position, memory, rope,
                                     num_pointer_tokens)
        query = layer.layer_norm3(output)
        output = output + layer.linear2(layer.activation(layer.linear1(query)))
    return attention.layer_norm(output)


def _attention(attn, query, key, value, rope, num_k_exclude_rope: int = 0):
    # transformers is imported when the model runs, not when this module is imported
    from transformers.models.sam2_video.modeling_sam2_video import apply_rotary_pos_emb_2d

    q = split_heads(attn.q_proj(query), attn)
    k = split_heads(attn.k_proj(key), attn)
    v = split_heads(attn.v_proj(value), attn)
    cos, sin = rope
    q, k = apply_rotary_pos_emb_2d(q, k, cos, sin, repeat_freqs_k=attn.rope_k_repeat,
                                   num_k_exclude_rope=num_k_exclude_rope)
    if q.shape[0] == 1 and k.shape[0] > 1:
        q = q.expand(k.shape[0], -1, -1, -1)
    return attn.o_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)))
