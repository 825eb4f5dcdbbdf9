"""Write a SAM2 checkpoint with random weights: for plumbing, format and cost checks where no weights
can be downloaded. Its masks are meaningless.

    dora-sam2-random-model DIR [--size tiny|test|micro|edgetam] [--image-size N] [--seed 0]

`tiny` has exactly the layout and cost of facebook/sam2.1-hiera-tiny (156 MB); `test` is a 1.3 M-parameter
model of the same architecture that makes the test suite fast; `micro` is `test` at a 256-pixel input
(memory attention over 256 tokens instead of 4096), for runs of thousands of tracked frames. `edgetam`
has the layout and cost of EdgeTAM (yonigozlan/EdgeTAM-hf, 56 MB; its encoder needs timm).
`--image-size` writes the checkpoint for another square input (e.g. `tiny` at 512), as IMAGE_SIZE runs one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SIZES = ("tiny", "test", "micro", "edgetam")


def make_random_model(directory, size: str = "test", seed: int = 0, image_size: int = 0) -> Path:
    import torch

    from .loading import at_input_size

    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    directory = Path(directory)
    torch.manual_seed(seed)
    model_class, config = _architecture(size)
    if image_size:
        config = at_input_size(config, image_size, f"the {size} model")
    model = model_class(config)
    _spread_weights(model)
    model.save_pretrained(directory)
    return directory


def _spread_weights(model) -> None:
    """PyTorch's default initialisation for every linear and convolution layer. transformers' own (normal,
    std 0.02, zero biases) leaves a random SAM2's outputs near zero, where a wrong step barely shows:
    padding points, for one, have no effect with zero biases and do with trained weights."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.reset_parameters()


def _architecture(size: str):
    from transformers import Sam2VideoConfig, Sam2VideoModel

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--image-size", type=int, default=0, help="a square input other than the size's own")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_random_model(args.directory, args.size, args.seed, args.image_size)
    print(f"random-weight SAM2 ({args.size}) written to {path}: set MODEL={path} (masks are meaningless)")


if __name__ == "__main__":
    main()
