"""Grows a trained SAM 2 without changing what it computes, so that training goes on from what it knows
(function-preserving growth: Chen, Goodfellow and Shlens, "Net2Net", 2016). An experiment on the
fixture, measured and not taken into the trainer (BENCHMARKS.md, "Growing the fixture"):

    .venv/bin/python benchmarks/grow.py models/world-sam2 out/grown --blocks 0,2,5,2 --mlp 512
    .venv/bin/dora-sam2-train out/grown-trained --from out/grown --seed 1 --minutes 60 --learning-rate 1.5e-4 ...

A small model trained here flattens out (`micro` near 0.64 box mIoU), and a larger one trained from
random weights did not learn to read its prompts on the same recipe. Grown from the trained one, a
larger model starts where the small one stopped:

- Hiera blocks added at the end of a stage start as identities: each block is residual, `x + attn(x)`
  then `x + mlp(x)`, so its attention's output projection and its MLP's last layer start at zero.
- A wider MLP (the mask decoder's two-way transformer, memory attention) keeps its old units; the new
  ones start with fresh input weights and zero output weights, so they add nothing until trained.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import torch

MAX_BLOCKS = 16  # added to one stage: Hiera-L, the largest SAM 2, has 36 in its third
MAX_MLP_WIDTH = 8192  # SAM 2's own decoder MLPs are 2,048 wide


class GrowthError(ValueError):
    """The growth asked for cannot be made on this model. Its text says why and what to do."""


@dataclass(frozen=True)
class Growth:
    blocks: tuple[int, ...] = ()  # Hiera blocks to add at the end of each stage (empty: none)
    mlp_width: int = 0  # the mask decoder's and memory attention's MLPs (0: as they are)

    @classmethod
    def parse(cls, blocks: str | None, mlp_width: int = 0) -> "Growth":
        """`--blocks 0,1,2,1 --mlp 256`."""
        try:
            added = tuple(int(b) for b in blocks.split(",")) if blocks else ()
        except ValueError:
            raise GrowthError(f"--blocks takes one count per Hiera stage, as 0,1,2,1; got {blocks!r}.") from None
        if any(not 0 <= b <= MAX_BLOCKS for b in added):
            raise GrowthError(f"--blocks adds 0 to {MAX_BLOCKS} blocks to a stage; got {blocks}.")
        if not 0 <= mlp_width <= MAX_MLP_WIDTH:
            raise GrowthError(f"--mlp must be from 0 (as it is) to {MAX_MLP_WIDTH}; got {mlp_width}.")
        return cls(added, mlp_width)


def grow(model, growth: Growth):
    """A new model, larger by `growth`, that computes what `model` computes (to float rounding)."""
    config = copy.deepcopy(model.config)
    hiera = getattr(config.vision_config, "backbone_config", None)
    if getattr(hiera, "model_type", None) != "sam2_hiera_det_model":
        raise GrowthError(f"only SAM 2's Hiera encoder can be grown; {model.config.model_type} has another: "
                          "leave out --blocks and --mlp.")
    stages = list(hiera.blocks_per_stage)
    added = growth.blocks or (0,) * len(stages)
    if len(added) != len(stages):
        raise GrowthError(f"--blocks needs one count for each of the encoder's {len(stages)} stages.")
    old_mlp = (config.mask_decoder_config.mlp_dim, config.memory_attention_feed_forward_hidden_size)
    if growth.mlp_width and growth.mlp_width < max(old_mlp):
        raise GrowthError(f"--mlp {growth.mlp_width} is narrower than the model's MLPs ({max(old_mlp)}): "
                          "growth only widens.")
    moved = _block_moves(stages, added)
    hiera.blocks_per_stage = [n + a for n, a in zip(stages, added)]
    hiera.global_attention_blocks = [moved[b] for b in hiera.global_attention_blocks]
    if growth.mlp_width:
        config.mask_decoder_config.mlp_dim = growth.mlp_width
        config.memory_attention_feed_forward_hidden_size = growth.mlp_width
    grown = type(model)(config)
    grown.load_state_dict(_grown_weights(model.state_dict(), grown.state_dict(), moved))
    return grown.to(next(model.parameters()).dtype).eval()


BLOCKS = "vision_encoder.backbone.blocks."
SILENT = ("attn.proj.weight", "attn.proj.bias", "mlp.proj_out.weight", "mlp.proj_out.bias")  # zero: an identity


def _block_moves(stages: list[int], added: tuple[int, ...]) -> dict[int, int]:
    """Each old block's index among the grown blocks (the new ones come at the end of their stage)."""
    moves, old, new = {}, 0, 0
    for count, extra in zip(stages, added):
        moves.update({old + k: new + k for k in range(count)})
        old, new = old + count, new + count + extra
    return moves


def _grown_weights(old: dict, fresh: dict, moved: dict[int, int]) -> dict:
    came_from = {new: old_index for old_index, new in moved.items()}
    weights = {}
    for name, tensor in fresh.items():
        if name.startswith(BLOCKS):
            index, part = name[len(BLOCKS):].split(".", 1)
            if int(index) in came_from:
                weights[name] = old[f"{BLOCKS}{came_from[int(index)]}.{part}"]
            else:
                weights[name] = torch.zeros_like(tensor) if part in SILENT else tensor
        elif old[name].shape == tensor.shape:
            weights[name] = old[name]
        else:
            weights[name] = _widened(old[name], tensor)
    return weights


def _widened(old: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """An MLP layer with more hidden units: an input layer's (hidden, in) weight or (hidden,) bias keeps
    its old rows and takes fresh ones; an output layer's (out, hidden) weight keeps its old columns and
    takes zeros, so the new units are silent."""
    widened = fresh.clone()
    if old.dim() == 1 or old.shape[1] == fresh.shape[1]:
        widened[: old.shape[0]] = old
    else:
        widened.zero_()
        widened[:, : old.shape[1]] = old
    return widened


def main() -> None:
    import numpy as np

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.loading import ModelLoadError, load_sam2
    from dora_sam2.model import Sam2Backend

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the checkpoint to grow (MODEL's forms)")
    parser.add_argument("out", help="where to write the grown checkpoint")
    parser.add_argument("--blocks", help="Hiera blocks to add to each stage, as 0,2,5,2")
    parser.add_argument("--mlp", type=int, default=0, help="the decoder's and memory attention's MLP width")
    args = parser.parse_args()
    torch.manual_seed(0)
    try:
        model = load_sam2(args.model, video=True).eval()
        grown = grow(model, Growth.parse(args.blocks, args.mlp))
    except (GrowthError, ModelLoadError) as error:
        parser.exit(1, f"grow.py: {error}\n")
    # what it computes is kept: the same masks from the same boxes on a frame of noise
    frame = Frame("f", np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8), None, "rgb8")
    boxes = Prompt.from_boxes("b", np.array([[20, 30, 120, 150], [150, 40, 300, 200]]))

    def masks(m):
        backend = Sam2Backend(m, torch.device("cpu"), torch.float32, "grow")
        return backend.decode(backend.encode(frame), boxes)[0]

    torch.testing.assert_close(masks(grown), masks(model), atol=1e-4, rtol=1e-4)
    grown.save_pretrained(args.out)
    print(f"{args.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M -> "
          f"{sum(p.numel() for p in grown.parameters()) / 1e6:.2f} M parameters, same masks")


if __name__ == "__main__":
    main()
