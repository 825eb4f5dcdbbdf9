"""Write a SAM2 checkpoint with random weights: for plumbing, format and cost checks where no weights
can be downloaded. Its masks are meaningless.

    dora-sam2-random-model DIR [--size tiny|test|micro|edgetam|sam3|sam3-test] [--image-size N] [--seed 0]

`tiny` has exactly the layout and cost of facebook/sam2.1-hiera-tiny (156 MB); `test` is a 1.3 M-parameter
model of the same architecture that makes the test suite fast; `micro` is `test` at a 256-pixel input
(memory attention over 256 tokens instead of 4096), for runs of thousands of tracked frames. `edgetam`
has the layout and cost of EdgeTAM (yonigozlan/EdgeTAM-hf, 56 MB; its encoder needs timm). `sam3` has the
layout and cost of facebook/sam3 (detector, tracker and their ViT, 3.4 GB), `sam3-test` the same architecture
shrunk to 17 M parameters at a 224-pixel input; both come with tokenizer files written here (a byte-level
vocabulary: any phrase tokenizes, none means anything).
`--image-size` writes the checkpoint for another square input (e.g. `tiny` at 512), as IMAGE_SIZE runs one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SIZES = ("tiny", "test", "micro", "edgetam", "sam3", "sam3-test")
SAM3_TEST_SIZE = 224


def make_random_model(directory, size: str = "test", seed: int = 0, image_size: int = 0) -> Path:
    directory = Path(directory)
    build(size, seed, image_size).save_pretrained(directory)
    if size.startswith("sam3"):
        _byte_level_tokenizer().save_pretrained(directory)
    return directory


def build(size: str = "test", seed: int = 0, image_size: int = 0):
    """The random-weight model itself (transformers' video model of `size`), in memory: what
    `make_random_model` writes, and what `dora-sam2-train --new` starts from."""
    import torch

    from .loading import at_input_size

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    torch.manual_seed(seed)
    model_class, config = _architecture(size)
    if image_size:
        config = at_input_size(config, image_size, f"the {size} model")
    model = model_class(config)
    _spread_weights(model)
    _share_positional_embedding(model)
    return model


def _byte_level_tokenizer():
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols of byte-level BPE (alone and word-final),
    a few merges and CLIP's two special tokens: 516 ids, within any SAM 3 text encoder's vocabulary."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {symbol: i for i, symbol in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges = [("c", "u"), ("cu", "p</w>")]  # "cup" is one token: merges are read, not only bytes
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-symbol table, which CLIP's byte-level BPE reads: printable bytes stand for
    themselves, the others for characters from 256 up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = dict(zip(printable, printable)) | {b: 256 + i for i, b in enumerate(others)}
    return [chr(table[b]) for b in range(256)]


def _spread_weights(model) -> None:
    """PyTorch's default initialisation for every linear and convolution layer. transformers' own (normal,
    std 0.02, zero biases) leaves a random SAM2's outputs near zero, where a wrong step barely shows:
    padding points, for one, have no effect with zero biases and do with trained weights. The memory's
    temporal encodings as Meta's sam2 draws them (transformers zeroes them): at zero, a memory frame's age
    would change nothing."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.reset_parameters()
    temporal = getattr(model, "memory_temporal_positional_encoding", None)
    if temporal is not None:
        with torch.no_grad():
            torch.nn.init.trunc_normal_(temporal, std=0.02)


def _share_positional_embedding(model) -> None:
    """SAM 2 places points and image features with one random Fourier embedding (a trained checkpoint
    holds the same matrix twice). transformers draws the two copies apart in a new model, and a decoder
    that reads points and image in unrelated coordinates cannot learn where a prompt is: trained from
    here, it learns one mask for every prompt. So the prompt encoder gets the image's copy, as in every
    published checkpoint. (SAM 3's detector has no such pair.)"""
    import torch

    image = getattr(model, "shared_image_embedding", None)
    prompts = getattr(getattr(model, "prompt_encoder", None), "shared_embedding", None)
    if image is not None and prompts is not None:
        with torch.no_grad():
            prompts.positional_embedding.copy_(image.positional_embedding)


def _architecture(size: str):
    from transformers import Sam2VideoConfig, Sam2VideoModel

    if size.startswith("sam3"):
        from transformers import Sam3VideoConfig, Sam3VideoModel

        return Sam3VideoModel, Sam3VideoConfig() if size == "sam3" else _sam3_test_config(SAM3_TEST_SIZE)
    if size == "edgetam":
        from transformers import EdgeTamVideoConfig, EdgeTamVideoModel
        from transformers.models.edgetam.configuration_edgetam import EdgeTamVisionConfig

        vision = EdgeTamVisionConfig()
        # transformers' default spells the key `archirecture`, and timm then builds a resnet50
        vision.backbone_config.architecture = "repvit_m1"
        return EdgeTamVideoModel, EdgeTamVideoConfig(vision_config=vision)
    if size == "tiny":
        return Sam2VideoModel, Sam2VideoConfig()
    return Sam2VideoModel, _test_config(Sam2VideoConfig, 256 if size == "micro" else 1024)


def _test_config(config_class, image_size: int):
    # Every stage and both attention kinds of Hiera stay; only widths and depths (and for `micro` the
    # input size, and with it every feature map) shrink.
    return config_class(
        image_size=image_size,
        vision_config=dict(
            backbone_feature_sizes=[[image_size // stride] * 2 for stride in (4, 8, 16)],
            backbone_config=dict(
                image_size=[image_size, image_size],
                model_type="sam2_hiera_det_model",
                hidden_size=16,
                embed_dim_per_stage=[16, 32, 64, 128],
                blocks_per_stage=[1, 1, 2, 1],
                num_attention_heads_per_stage=[1, 1, 2, 2],
                global_attention_blocks=[3],  # a global block may not open a stage (it would pool)
            ),
            backbone_channel_list=[128, 64, 32, 16],
            fpn_hidden_size=128,  # object pointers are cut into several memory-wide (64) tokens
        ),
        prompt_encoder_config=dict(hidden_size=128, image_size=image_size),
        mask_decoder_config=dict(hidden_size=128, iou_head_hidden_dim=32, mlp_dim=64, num_attention_heads=2),
        memory_attention_hidden_size=128,
        memory_attention_rope_feat_sizes=[image_size // 16] * 2,
        # Memory attention (every object's queries over its memory frames) dominates tracking cost:
        # one layer over a 3-frame window keeps the streaming logic whole and the suite fast.
        num_maskmem=3,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,  # transformers fixes the memory's width at 64
        mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=64,
    )


def _sam3_test_config(image_size: int):
    """SAM 3's hub layout (detector + tracker over one ViT), every part kept and shrunk: a 2-layer ViT with a
    windowed and a global block, a 2-layer CLIP text encoder, one layer each of geometry encoder, DETR
    encoder and decoder (20 queries), the tracker's memory as in SAM 2's test model. The FPN keeps SAM 3's
    256 channels: the tracker's decoder and memory are built for them."""
    from transformers import Sam3VideoConfig

    grid = image_size // 14
    vision = dict(model_type="sam3_vision_model", fpn_hidden_size=256,
                  backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
                  backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                                       window_size=8, global_attn_indexes=[1], pretrain_image_size=112))
    text = dict(model_type="clip_text_model", vocab_size=520, hidden_size=32, intermediate_size=64, projection_dim=32,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                bos_token_id=514, eos_token_id=515, pad_token_id=515)
    layer = dict(hidden_size=256, num_layers=1, num_attention_heads=2, intermediate_size=64)
    detector = dict(model_type="sam3", vision_config=vision, text_config=text, geometry_encoder_config=layer,
                    detr_encoder_config=layer, detr_decoder_config=dict(layer, num_queries=20),
                    mask_decoder_config=dict(hidden_size=256, num_attention_heads=2))
    tracker = dict(model_type="sam3_tracker_video", vision_config=vision, image_size=image_size, num_maskmem=3,
                   memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
                   mask_decoder_config=dict(mlp_dim=64, iou_head_hidden_dim=32, num_attention_heads=2))
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--image-size", type=int, default=0, help="a square input other than the size's own")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_random_model(args.directory, args.size, args.seed, args.image_size)
    family = "SAM 3" if args.size.startswith("sam3") else "SAM2"
    print(f"random-weight {family} ({args.size}) written to {path}: set MODEL={path} (masks are meaningless)")


if __name__ == "__main__":
    main()
