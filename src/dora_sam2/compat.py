"""The transformers internals this node builds on, checked at start-up.

The streaming loop (video.py), memory attention and the batched decoder run transformers' own modules
with their own weights, so they reach past its public API: two helper functions of the video modeling
module, a private method of the mask decoder, and the video model's memory modules. A transformers
release outside the tested range may move any of them; the node then says so in one sentence before
loading anything, instead of failing deep inside the first frame.
"""

from __future__ import annotations

import importlib

# The transformers releases this version of dora-sam2 is tested with; pyproject.toml says the same
# (tests/test_startup.py holds the two together).
TRANSFORMERS_RANGE = ">=5.24,<5.25"

PRIVATE_FUNCTIONS = [
    ("transformers.models.sam2_video.modeling_sam2_video", "rotate_pairwise"),  # memory_attention.py
    ("transformers.models.sam2_video.modeling_sam2_video", "get_1d_sine_pe"),  # video.py, object pointers
]
# What video.py and decoder.py read of a loaded model.
DECODER_INTERNALS = ["_dynamic_multimask_via_stability", "transformer", "iou_token", "mask_tokens",
                     "output_hypernetworks_mlps", "iou_prediction_head", "upscale_conv1", "upscale_conv2",
                     "upscale_layer_norm"]
VIDEO_INTERNALS = ["memory_attention", "memory_encoder", "no_memory_embedding", "no_object_pointer",
                   "object_pointer_proj", "memory_temporal_positional_encoding",
                   "occlusion_spatial_embedding_parameter", "temporal_positional_encoding_projection_layer",
                   "mem_dim", "backbone_feature_sizes"]


class UnsupportedTransformers(Exception):
    """transformers moved what this node reads. Its text is the one line the user sees."""


def check_transformers() -> None:
    """Before any model is loaded: the helper functions are where this node reads them."""
    missing = []
    for module_name, name in PRIVATE_FUNCTIONS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        if not callable(getattr(module, name, None)):
            missing.append(f"{module_name}.{name}")
    if missing:
        raise UnsupportedTransformers(_sentence(missing))


def check_model(model, video: bool) -> None:
    """After loading: the modules the decoder and the streaming loop run are on the model."""
    missing = [f"mask_decoder.{name}" for name in DECODER_INTERNALS if not hasattr(model.mask_decoder, name)]
    if video:
        missing += [name for name in VIDEO_INTERNALS if not hasattr(model, name)]
    if missing:
        raise UnsupportedTransformers(_sentence(missing, type(model).__name__))


def _sentence(missing: list[str], where: str = "transformers") -> str:
    import transformers

    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return (f"transformers {transformers.__version__} has no {shown} ({where}), which dora-sam2 runs: "
            f"install a supported release, pip install 'transformers{TRANSFORMERS_RANGE}'.")
