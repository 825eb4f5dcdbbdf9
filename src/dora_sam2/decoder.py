"""SAM2's mask decoder for N objects on one image, without replicating the image N times.

transformers' `Sam2MaskDecoder.forward` copies the image embedding, its positional encoding and both
high-resolution feature maps once per object before doing anything (about 14 MB per object for
hiera-tiny), then projects those identical copies N times. On a CPU that copying, not arithmetic, is
most of the cost of a box. This module runs the same layers with the same weights, but:

- tensors that are the same for every object (the image before the first image update, positional
  encodings, high-resolution features) keep a batch of 1 and are broadcast;
- in the first block, where every object attends to the same image, the key/value projections are
  computed once and all objects' queries go through one attention call.

The results match transformers' forward (tests/test_decoder.py holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DecoderOutput:
    """Everything SAM2's decoder says about N objects: its 4 candidate masks (the single-mask one first,
    then 3 multimask candidates), their predicted IoU, the mask tokens (tracking turns the chosen one
    into the object's pointer) and whether the object is in the image at all."""

    masks: torch.Tensor  # (N, 4, 4H, 4W) low-resolution logits
    iou: torch.Tensor  # (N, 4)
    mask_tokens: torch.Tensor  # (N, 4, C)
    object_score_logits: torch.Tensor  # (N, 1): > 0 when the object is visible


def predict_masks(decoder, image_embedding, image_pe, sparse, dense, high_res_features, ambiguous: torch.Tensor):
    """Low-resolution mask logits (N, 4H, 4W), predicted IoU (N,) and object score logits (N,; above 0
    when SAM 2 sees the object) for N prompts on one image, one mask per object as `choose_masks` picks it.

    image_embedding, image_pe, dense: (1, C, H, W); sparse: (1, N, T, C) from the prompt encoder;
    high_res_features: [(1, C/8, 4H, 4W), (1, C/4, 2H, 2W)]; ambiguous: (N,) bool, see `is_ambiguous`.
    """
    out = run_decoder(decoder, image_embedding, image_pe, sparse, dense, high_res_features)
    logits, iou, _ = choose_masks(decoder, out, ambiguous)
    return logits, iou, out.object_score_logits[:, 0]


def is_ambiguous(config, num_points: np.ndarray, tracked: bool = False) -> np.ndarray:
    """(N,) bool: SAM 2's rule for a prompt that may mean several objects (a single click on a shirt: the
    shirt, or the person?), where SAM 2 answers with three candidates and the best is taken. From 0 to 1
    points by default; on a tracked frame (no points at all) only if the checkpoint says so. Image-only
    checkpoints do not carry the settings: SAM 2's defaults then."""
    allowed = getattr(config, "multimask_output_in_sam", True) and (
        not tracked or getattr(config, "multimask_output_for_tracking", True))
    low, high = getattr(config, "multimask_min_pt_num", 0), getattr(config, "multimask_max_pt_num", 1)
    return allowed & (low <= num_points) & (num_points <= high)


def choose_masks(decoder, out: "DecoderOutput", ambiguous: torch.Tensor):
    """One mask per object, the same rule in both modes, as SAM 2 (and transformers'
    `_single_frame_forward`) picks it: for an ambiguous prompt, the best of the three candidates by
    predicted IoU; otherwise the single-mask output, or, where that one is unstable, the most stable
    candidate (`dynamic_multimask_via_stability`). Returns logits (N, 4H, 4W), IoU (N,) and the chosen
    mask tokens (N, C), from which tracking makes each object's pointer."""
    rows = torch.arange(out.masks.shape[0], device=out.masks.device)
    best = out.iou[:, 1:].argmax(dim=1) + 1
    if decoder.dynamic_multimask_via_stability:
        single_masks, single_iou = decoder._dynamic_multimask_via_stability(out.masks[None], out.iou[None])
        single_masks, single_iou = single_masks[0, :, 0], single_iou[0, :, 0]
    else:
        single_masks, single_iou = out.masks[:, 0], out.iou[:, 0]
    logits = torch.where(ambiguous.view(-1, 1, 1), out.masks[rows, best], single_masks)
    iou = torch.where(ambiguous, out.iou[rows, best], single_iou)
    token = torch.where(ambiguous.view(-1, 1), out.mask_tokens[rows, best], out.mask_tokens[:, 0])
    return logits, iou, token


def run_decoder(decoder, image_embedding, image_pe, sparse, dense, high_res_features) -> DecoderOutput:
    """The decoder's raw outputs for N objects. image_embedding may be one image shared by all objects
    (batch 1) or one per object (batch N: tracking conditions each object's image on its own memory)."""
    n = sparse.shape[1]
    _, channels, height, width = image_embedding.shape
    output_tokens = torch.cat(
        [decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0
    )
    tokens = torch.cat([output_tokens.expand(n, -1, -1), sparse[0]], dim=1).to(decoder.iou_token.weight.dtype)
    image = (image_embedding + dense).flatten(2).transpose(1, 2)  # (1 or N, HW, C)
    pe = image_pe.flatten(2).transpose(1, 2)

    queries, keys = _two_way_transformer(decoder.transformer, tokens, image, pe)

    iou_token_out = queries[:, 1]
    mask_tokens_out = queries[:, 2 : 2 + decoder.num_mask_tokens]
    feat_s0, feat_s1 = high_res_features
    embedded = keys.transpose(1, 2).reshape(n, channels, height, width)
    upscaled = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(embedded) + feat_s1))
    upscaled = decoder.activation(decoder.upscale_conv2(upscaled) + feat_s0)
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    masks = (hyper_in @ upscaled.flatten(2)).view(n, decoder.num_mask_tokens, *upscaled.shape[-2:])
    return DecoderOutput(
        masks=masks,
        iou=decoder.iou_prediction_head(iou_token_out),
        mask_tokens=mask_tokens_out,
        object_score_logits=decoder.pred_obj_score_head(queries[:, 0]),
    )


def _two_way_transformer(transformer, point_embeddings, image, image_pe):
    queries, keys = point_embeddings, image
    for layer in transformer.layers:
        queries, keys = _two_way_block(layer, queries, keys, point_embeddings, image_pe)
    attended = _attention(transformer.final_attn_token_to_image, queries + point_embeddings, keys + image_pe, keys)
    return transformer.layer_norm_final_attn(queries + attended), keys


def _two_way_block(layer, queries, keys, query_pe, key_pe):
    if layer.skip_first_layer_pe:
        queries = _attention(layer.self_attn, queries, queries, queries)
    else:
        query = queries + query_pe
        queries = queries + _attention(layer.self_attn, query, query, queries)
    queries = layer.layer_norm1(queries)

    attended = _attention(layer.cross_attn_token_to_image, queries + query_pe, keys + key_pe, keys)
    queries = layer.layer_norm2(queries + attended)
    queries = layer.layer_norm3(queries + layer.mlp(queries))

    # keys may still be the shared (1, HW, C) image here; from this update on they are per object
    attended = _attention(layer.cross_attn_image_to_token, keys + key_pe, queries + query_pe, queries)
    return queries, layer.layer_norm4(keys + attended)


def _attention(attn, query, key, value):
    """transformers' Sam2Attention, where either side may have a batch of 1 shared by all N objects."""
    q = split_heads(attn.q_proj(query), attn)
    k = split_heads(attn.k_proj(key), attn)
    v = split_heads(attn.v_proj(value), attn)
    if k.shape[0] == 1 and q.shape[0] > 1:
        # Every object attends to the same keys: one call with all objects' queries side by side.
        n, heads, length, dim = q.shape
        stacked = q.transpose(0, 1).reshape(1, heads, n * length, dim)
        out = F.scaled_dot_product_attention(stacked, k, v, scale=attn.scaling)
        out = out.reshape(heads, n, length, dim).transpose(0, 1)
    else:
        if q.shape[0] == 1 and k.shape[0] > 1:
            q = q.expand(k.shape[0], -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
    return attn.o_proj(merge_heads(out))


def split_heads(x, attn):
    """(B, L, heads * dim) -> (B, heads, L, dim), as transformers' SAM2 attention lays it out."""
    batch, length, _ = x.shape
    return x.view(batch, length, attn.num_attention_heads, attn.head_dim).transpose(1, 2)


def merge_heads(x):
    """(B, heads, L, dim) -> (B, L, heads * dim)."""
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)
