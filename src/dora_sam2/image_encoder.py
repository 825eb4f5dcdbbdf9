"""SAM 2's image encoder (Hiera, then the FPN neck) with transformers' modules and weights, less the work
transformers does on every frame and throws away; and EdgeTAM's (timm's RepViT, then the same neck).

transformers' `Sam2VisionModel` is most of a segment-mode frame's cost and, with it, each Hiera attention
block computes a heads-by-heads matrix of scores for every token that nothing reads (a remnant beside the
fused kernel that does the attention), Hiera interpolates the background positional embedding to the
input size again, and builds sine position encodings for all four neck levels, one at a time through a
one-entry cache, of which segment mode reads none and tracking one; and where a map does not divide into
its windows it projects the padding too. Here the blocks run the same operations on each token in the
same order, without the unread scores and the padding's projections, each MLP in rows of tokens whose
hidden activations stay in cache, the narrow products' bias added after them, and what depends only on
the input size is kept: hiera-tiny at 512 on one thread encoded a frame in 626 ms against 711 in fp32,
277 against 355 in bf16 (BENCHMARKS.md), before the padding, the first stage's layout, the MLP's rows
and the bias were seen to, the features bit for bit the same. EdgeTAM's neck builds the same four
encodings at every frame, the largest 128x128 at 512; here its backbone runs its own forward and the
neck runs as SAM 2's does.

SAM 3's ViT and a `COMPILE=1` encoder run transformers' own forward. tests/test_image_encoder.py holds this
to transformers' output, tests/test_edgetam.py EdgeTAM's.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


# What this module reads of transformers' SAM 2 modelling: where a release moves any of it, the encoder
# runs transformers' own forward, slower and the same.
FUNCTIONS = ("do_pool", "window_unpartition")
INTERNALS = {
    "backbone": ("patch_embed", "pos_embed", "pos_embed_window", "_get_pos_embed", "blocks", "stage_ends"),
    "block": ("layer_norm1", "layer_norm2", "mlp", "attn", "dim", "dim_out", "window_size", "query_stride"),
    "attention": ("qkv", "proj", "num_attention_heads", "scale", "query_stride"),
    "mlp": ("proj_in", "proj_out", "activation", "layers", "sigmoid_output"),
    "neck": ("convs", "fpn_top_down_levels", "position_encoding"),
}


def runs_here(model) -> bool:
    """Whether `model`'s image encoder is one this module runs (SAM 2's Hiera, EdgeTAM's RepViT), with
    everything it reads (and not compiled: a compiled encoder runs its own forward)."""
    encoder = model.vision_encoder
    if _is_repvit(encoder):
        return all(hasattr(encoder.neck, name) for name in INTERNALS["neck"]) and not _hooked(
            [encoder, encoder.neck])  # the backbone runs its own forward, hooks and all
    from transformers.models.sam2 import modeling_sam2

    if type(encoder) is not modeling_sam2.Sam2VisionModel or not hasattr(encoder, "num_feature_levels"):
        return False
    backbone = encoder.backbone
    if not isinstance(backbone, modeling_sam2.Sam2HieraDetModel) or not backbone.blocks:
        return False
    parts = {"backbone": backbone, "block": backbone.blocks[0], "attention": backbone.blocks[0].attn,
             "mlp": backbone.blocks[0].mlp, "neck": encoder.neck}
    if not (all(hasattr(modeling_sam2, name) for name in FUNCTIONS) and all(
            hasattr(parts[part], name) for part, names in INTERNALS.items() for name in names)):
        return False
    # Its attention is the fused kernel, as transformers' `sdpa` path runs it; and it calls the parts of the
    # encoder, the backbone, the neck and the blocks directly, past any hook or gradient checkpointing set
    # on one of those (a hook that counts encodes, say).
    blocks = backbone.blocks
    modules = [encoder, backbone, encoder.neck, *(module for block in blocks for module in (block, block.attn))]
    return backbone.config._attn_implementation == "sdpa" and not _hooked(modules)


def _is_repvit(encoder) -> bool:
    """EdgeTAM's encoder: timm's RepViT, then the same neck as SAM 2's. By name: its module imports timm,
    which a SAM 2-only install may lack."""
    kind = type(encoder)
    return (kind.__module__, kind.__name__) == ("transformers.models.edgetam.modeling_edgetam", "EdgeTamVisionModel")


def _hooked(modules) -> bool:
    return any(module._forward_hooks or module._forward_pre_hooks or getattr(module, "gradient_checkpointing", False)
               for module in modules)


class ImageEncoder:
    """One model's image encoder, with what depends only on the input size kept between frames."""

    def __init__(self, model):
        self.model = model
        self._background: tuple[tuple, torch.Tensor] | None = None  # Hiera's positional embedding, sized
        self._kept_position: tuple[tuple, torch.Tensor] | None = None  # the neck's sine encoding, for one shape

    def features(self, pixels: torch.Tensor, position: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The maps transformers' `get_image_features` gives, high resolution first, each (1, C, h, w),
        the first two through the mask decoder's conv_s0 and conv_s1; and, with `position`, the sine
        position encoding of the last (what memory attention reads), else None."""
        encoder = self.model.vision_encoder
        if _is_repvit(encoder):
            stages = [stage.permute(0, 2, 3, 1) for stage in encoder.backbone(pixels).last_hidden_state]
        else:
            stages = self._backbone(encoder.backbone, pixels)
        maps = _neck(encoder.neck, stages)[-encoder.num_feature_levels:][::-1]
        decoder = self.model.mask_decoder
        maps[0], maps[1] = decoder.conv_s0(maps[0]), decoder.conv_s1(maps[1])
        return maps, self._position(encoder.neck, maps[-1]) if position else None

    def _backbone(self, backbone, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Hiera: the output of each stage's last block, (1, h, w, C)."""
        hidden = backbone.patch_embed(pixels)
        # Both are channels-first in memory behind a (1, h, w, C) view, and transformers' first stage keeps
        # that layout, where its blocks' adds and layer norms along C run 4-10x slower (15-20 ms of a
        # hiera-tiny@512 encode). Here the stage runs channels-last and leaves in transformers' layout: the
        # neck's convolution sums in the order of the memory it reads, and the maps stay bit for bit.
        hidden = (hidden + self._background_embedding(backbone, tuple(hidden.shape[1:3]))).contiguous()
        stages = []
        for index, block in enumerate(backbone.blocks):
            hidden = _block(block, hidden)
            if index in backbone.stage_ends:
                stages.append(hidden if stages else _channels_first_in_memory(hidden))
        return stages

    def _background_embedding(self, backbone, size: tuple[int, int]) -> torch.Tensor:
        """Hiera's positional embedding at `size`. Kept while its weights are unchanged; made afresh for
        each step where gradients flow (training changes the weights, and each step needs its own graph)."""
        if torch.is_grad_enabled():
            return backbone._get_pos_embed(size)
        weights = (backbone.pos_embed, backbone.pos_embed_window)  # the objects too: load_state_dict may replace them
        key = (size, *map(id, weights), *(w._version for w in weights), weights[0].device, weights[0].dtype)
        if self._background is None or self._background[0] != key:
            self._background = (key, backbone._get_pos_embed(size))
        return self._background[1]

    def _position(self, neck, features: torch.Tensor) -> torch.Tensor:
        """The neck's sine encoding for `features`' shape: it has no weights, so it is kept while the shape,
        device and dtype stay (one at a time: they change only when the model's input or dtype does)."""
        key = (tuple(features.shape), features.device, features.dtype)
        if self._kept_position is None or self._kept_position[0] != key:
            encoding = neck.position_encoding(features.shape, features.device, features.dtype)
            self._kept_position = (key, encoding.to(features.dtype))
        return self._kept_position[1]


def _channels_first_in_memory(hidden: torch.Tensor) -> torch.Tensor:
    """(1, h, w, C) the same, laid out in memory as (1, C, h, w): as one (h * w, C) matrix transposed,
    which PyTorch copies in cache-sized tiles (hiera-tiny's first stage at 512: 1.4 against 5.8 ms as a
    4-d permute on one Xeon core)."""
    batch, height, width, channels = hidden.shape
    if batch != 1 or not hidden.is_contiguous():
        return hidden.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    return hidden.view(-1, channels).T.contiguous().view(1, channels, height, width).permute(0, 2, 3, 1)


def _block(block, hidden: torch.Tensor) -> torch.Tensor:
    """transformers' `Sam2MultiScaleBlock.forward`, its attention through `_windowed_attention`."""
    from transformers.models.sam2.modeling_sam2 import do_pool

    residual = hidden
    hidden = block.layer_norm1(hidden)
    if block.dim != block.dim_out:
        residual = do_pool(_linear(block.proj, hidden), block.query_stride)
    hidden = residual + _windowed_attention(block, hidden, tuple(residual.shape[1:3]))
    return _with_mlp(block, hidden)


# Tokens the MLP takes at a time where no gradient is kept. Its hidden activations are 4x as wide as its
# input; for a whole 128x128 map (hiera-tiny's first stage at 512: 25 MB) they went out to memory and back
# between the products and the GELU. In rows of 2048 they stay in cache: 37 against 25 ms for that block's
# MLP on one Xeon core. Each token is computed alone, so the result is the same bit for bit.
MLP_TOKENS = 2048


def _with_mlp(block, hidden: torch.Tensor) -> torch.Tensor:
    """hidden + mlp(layer_norm2(hidden)), in rows of MLP_TOKENS tokens."""
    tokens = hidden.flatten(0, -2)
    if torch.is_grad_enabled() or len(tokens) <= MLP_TOKENS:
        return hidden + block.mlp(block.layer_norm2(hidden))
    out = torch.empty_like(tokens)
    for start in range(0, len(tokens), MLP_TOKENS):
        rows = tokens[start : start + MLP_TOKENS]
        torch.add(rows, _mlp(block.mlp, block.layer_norm2(rows)), out=out[start : start + MLP_TOKENS])
    return out.view(hidden.shape)


def _mlp(mlp, x: torch.Tensor) -> torch.Tensor:
    """transformers' `Sam2FeedForward` of two layers (Hiera's), its products through `_linear`."""
    if mlp.layers or mlp.sigmoid_output or _hooked([mlp]):
        return mlp(x)
    return _linear(mlp.proj_out, mlp.activation(_linear(mlp.proj_in, x)))


# Input channels beyond which a product's bias is never taken after it: no CPU measured sums wider products
# in one pass (an Intel Xeon's MKL up to 384, an AMD EPYC's up to 192), and the copy it saves matters less.
ONE_PASS_CHANNELS = 384


@functools.cache
def _sums_in_one_pass(channels: int) -> bool:
    """Whether this CPU's fp32 product over `channels` inputs sums in one pass, so that adding the bias after
    it gives what nn.Linear gives, bit for bit. The BLAS decides (on an Intel Xeon up to 384 channels, on an
    AMD EPYC up to 192, whatever the rows, outputs and threads), so it is tried, once per width."""
    generator = torch.Generator().manual_seed(0)
    for rows, outputs in ((64, channels), (1024, 3 * channels)):
        x = torch.randn(rows, channels, generator=generator)
        weight = torch.randn(outputs, channels, generator=generator)
        bias = torch.randn(outputs, generator=generator)
        if not torch.equal(F.linear(x, weight, bias), torch.matmul(x, weight.T).add_(bias)):
            return False
    return True


def _bias_after(layer, x: torch.Tensor) -> bool:
    """Whether `layer`'s product can take its bias after it: a plain fp32 layer on a CPU, no gradient kept,
    over input channels this CPU sums in one pass (`_sums_in_one_pass`). nn.Linear copies the bias into the
    output first, and for outputs far wider than their input (Hiera's first stage: 96 channels in, 576 out)
    that copy costs more than an add after the product: 10 ms of a hiera-tiny@512 frame on one Xeon core."""
    weight = layer.weight
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and layer.bias is not None
            and weight.shape[1] <= ONE_PASS_CHANNELS and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not _hooked([layer])
            and _sums_in_one_pass(weight.shape[1]))


def _linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x), the same bits, the bias added after the product where `_bias_after`."""
    if type(layer) is not torch.nn.Linear or not _bias_after(layer, x):
        return layer(x)
    return torch.matmul(x, layer.weight.T).add_(layer.bias)


def _windowed_attention(block, hidden: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The block's attention within its windows (over the whole map where it has none), at the output
    `size` (smaller than hidden's where the queries are pooled)."""
    from transformers.models.sam2.modeling_sam2 import window_unpartition

    attention, window = block.attn, block.window_size
    if window == 0:
        return _linear(attention.proj, _attend(attention, _linear(attention.qkv, hidden)))
    height, width = hidden.shape[1:3]
    if height % window or width % window:
        # transformers pads the normalised tokens with zeros to whole windows and projects the padding
        # too, into the projection's bias: the padding's keys and values take part, its outputs are
        # cropped. The same windows from the tokens' projection alone, the bias laid where the padding
        # was, and the output projected after the crop: at 512, hiera-tiny's later stages pad 32 to 42
        # and 16 to 21, and projected 72% more tokens than they have.
        qkv = _linear(attention.qkv, hidden)
        bias = attention.qkv.bias
        padding = qkv.new_zeros(qkv.shape[-1]) if bias is None else bias.to(qkv.dtype)
        windows = _attend(attention, _windows(qkv, window, padding))
        return _linear(attention.proj, _unwindowed(windows, size))
    windows, padded = _windows(hidden, window), (height, width)
    windows = _linear(attention.proj, _attend(attention, _linear(attention.qkv, windows)))
    if block.query_stride:  # pooled queries: the windows shrank with them
        window //= block.query_stride[0]
        padded = size
    return window_unpartition(windows, window, padded, size)


def _attend(attention, qkv: torch.Tensor) -> torch.Tensor:
    """transformers' `Sam2MultiScaleAttention.forward` through the fused kernel (its `sdpa` path), from
    the qkv projection of (B, h, w, C) windows to before the output projection; without the head scores
    it computes first and never reads."""
    batch, height, width, _ = qkv.shape
    heads = attention.num_attention_heads
    query, key, value = torch.unbind(qkv.reshape(batch, height * width, 3, heads, -1), 2)
    if attention.query_stride:
        query = _max_pool(query.reshape(batch, height, width, -1), attention.query_stride)
        height, width = query.shape[1:3]
        query = query.reshape(batch, height * width, heads, -1)
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                         scale=attention.scale)
    return out.transpose(1, 2).reshape(batch, height, width, -1)


def _max_pool(x: torch.Tensor, stride) -> torch.Tensor:
    """transformers' `do_pool` of x, (B, H, W, C), the same maxima: the queries are a strided slice of
    the qkv projection, which `max_pool2d` copies before it pools; the maximum of the strided views
    reads them where they are (block 1 of hiera-tiny at 512: 5 against 2 ms). Training pools as
    transformers does: its gradient goes to one of tied maxima, `maximum`'s to both halves."""
    if torch.is_grad_enabled() and x.requires_grad:
        from transformers.models.sam2.modeling_sam2 import do_pool

        return do_pool(x, stride)
    rows, cols = stride
    height, width = x.shape[1] // rows * rows, x.shape[2] // cols * cols  # max_pool2d drops a remainder
    pooled = None
    for row in range(rows):
        for col in range(cols):
            part = x[:, row:height:rows, col:width:cols]
            pooled = part.clone() if pooled is None else torch.maximum(pooled, part, out=pooled)
    return pooled


def _windows(x: torch.Tensor, window: int, padding: torch.Tensor | None = None) -> torch.Tensor:
    """transformers' `window_partition` of x, (B, H, W, C), with `padding` (C,) where it pads zeros (None
    where x divides into windows): (B * windows, window, window, C), in one pass over x (transformers'
    pads a copy, then copies that)."""
    batch, height, width, channels = x.shape
    rows, cols = -(-height // window), -(-width // window)
    if padding is not None and torch.is_grad_enabled():
        # Training lays the padding over every window first, as it did before the edges alone were
        # written: the padding's gradient is then summed in the same order. Another order rounds it
        # otherwise (1e-9), and a model trained from scratch follows that elsewhere.
        windows = padding.expand(batch * rows * cols, window, window, channels).contiguous()
    else:
        windows = x.new_empty(batch * rows * cols, window, window, channels)
        tiled = _tiled(windows, batch, rows, cols)
        cut_height, cut_width = height - (rows - 1) * window, width - (cols - 1) * window
        if cut_height < window:
            tiled[:, -1, cut_height:] = padding
        if cut_width < window:
            tiled[:, :, :, -1, cut_width:] = padding
    _as_image(windows, batch, rows, cols, x, lambda image_part, x_part: image_part.copy_(x_part))
    return windows


def _unwindowed(windows: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """transformers' `window_unpartition` of windows that cover `size` with padding: (B, *size, C)."""
    window, channels = windows.shape[1], windows.shape[-1]
    rows, cols = -(-size[0] // window), -(-size[1] // window)
    out = windows.new_empty(windows.shape[0] // (rows * cols), *size, channels)
    _as_image(windows, out.shape[0], rows, cols, out, lambda image_part, out_part: out_part.copy_(image_part))
    return out


def _as_image(windows, batch, rows, cols, image, copy):
    """Calls `copy` with each part of the windows' picture that `image` (B, H, W, C) covers (whole
    windows, and the cut ones along the bottom and the right), and that part of `image`, alike in shape."""
    tiled = _tiled(windows, batch, rows, cols)
    window = windows.shape[1]
    for (row_part, y_part), ys, (r, h) in _spans(image.shape[1], window):
        for (col_part, x_part), xs, (c, w) in _spans(image.shape[2], window):
            part = image[:, ys, xs].unflatten(1, (r, h)).unflatten(3, (c, w))
            copy(tiled[:, row_part, y_part, col_part, x_part], part)


def _tiled(windows: torch.Tensor, batch: int, rows: int, cols: int) -> torch.Tensor:
    """(B * rows * cols, window, window, C) windows viewed as their picture: (B, rows, y, cols, x, C)."""
    window = windows.shape[1]
    return windows.view(batch, rows, cols, window, window, -1).permute(0, 1, 3, 2, 4, 5)


def _spans(length: int, window: int):
    """Along one axis of `length` tokens: (windows, within a window), the tokens, and their shape as
    (windows, tokens a window); for the whole windows, then the cut one."""
    whole, cut = divmod(length, window)
    if whole:
        yield (slice(0, whole), slice(None)), slice(0, whole * window), (whole, window)
    if cut:
        yield (slice(whole, whole + 1), slice(0, cut)), slice(whole * window, length), (1, cut)


def _neck(neck, stages: list[torch.Tensor]) -> list[torch.Tensor]:
    """transformers' `Sam2VisionNeck.forward` without its position encodings: every level's map, lowest
    resolution first, each (1, C, h, w)."""
    last = len(neck.convs) - 1
    maps = []
    for level in range(last, -1, -1):
        lateral = neck.convs[last - level](stages[level].permute(0, 3, 1, 2).to(neck.convs[level].weight.dtype))
        if level not in neck.fpn_top_down_levels or level == last:
            above = lateral
        else:
            upsampled = F.interpolate(above.to(dtype=torch.float32), scale_factor=2.0, mode="nearest",
                                      align_corners=None, antialias=False)
            above = lateral + upsampled.to(lateral.dtype)
        maps.append(above)
    return maps
