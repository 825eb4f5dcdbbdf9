"""Our pre/post-processing against transformers' own Sam2Processor, on the same weights.

    python benchmarks/processor_parity.py [--model DIR] [--device cuda]

Needs torchvision, which transformers' SAM2 processor is built on. There is no CPU build of it
beside the CPU torch our CI uses, so run this where it exists (the lent GPU machines have it).
Compares, for a few boxes and a points prompt with a background click:
the model input (max abs difference), the low-resolution mask logits (correlation), and the final
masks (IoU per object; expected >= 0.999). Exits non-zero when a mask IoU or the logits correlation
falls below --min-iou, or when a mask is empty or covers the whole frame (where an IoU of 1.0 is no
evidence).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "cups.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SAM2 checkpoint directory (default: a random-weight hiera-tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-iou", type=float, default=0.999)
    args = parser.parse_args()

    from transformers import Sam2Processor
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor

    from dora_sam2.domain import Frame, Prompt
    from dora_sam2.model import Sam2Backend

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import random_tiny

    ours = Sam2Backend.load(args.model or str(random_tiny()), device=args.device, dtype="float32")
    processor = Sam2Processor(image_processor=Sam2ImageProcessor())
    rgb = first_frame()
    height, width = rgb.shape[:2]
    frame = Frame("image", rgb, None, "rgb8")
    boxes = np.array([[285, 145, 370, 270], [415, 145, 500, 272], [180, 210, 220, 252]], np.float32)
    boxes *= np.array([width / 640, height / 360] * 2, np.float32)
    cases = {
        "3 boxes": (Prompt.from_boxes("bbox", boxes), {"input_boxes": [boxes.tolist()]}),
        "points 1 fg + 1 bg": (
            Prompt.from_points("points", np.array([[width * 0.5, height * 0.55], [width * 0.1, height * 0.1]]), [1, 0]),
            {"input_points": [[[[width * 0.5, height * 0.55], [width * 0.1, height * 0.1]]]], "input_labels": [[[1, 0]]]},
        ),
    }
    failures = 0
    embedding = ours.encode(frame)
    for name, (prompt, theirs_prompt) in cases.items():
        inputs = processor(images=rgb, return_tensors="pt", **theirs_prompt).to(args.device)
        pixel_diff = (ours.preprocess(rgb) - inputs["pixel_values"]).abs().max().item()
        with torch.inference_mode():
            out = ours.model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=False)
        their_masks = processor.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"].cpu())[0][:, 0]
        our_logits, _, _ = ours.decode(embedding, prompt)
        our_masks, _ = ours.predict(embedding, prompt)
        correlation = np.corrcoef(our_logits.float().cpu().numpy().ravel(),
                                  out.pred_masks[0, :, 0].float().cpu().numpy().ravel())[0, 1]
        ious = [iou(a, b.numpy()) for a, b in zip(our_masks, their_masks)]
        # an IoU of two empty (or two full) masks is 1.0 and says nothing: each mask must cover some pixels, not all
        areas = [float(m.mean()) for m in their_masks.numpy()]
        failures += sum(value < args.min_iou for value in ious) + (correlation < args.min_iou)
        failures += sum(not 0.001 < area < 0.999 for area in areas)
        print(f"{name}: input max |diff| {pixel_diff:.4f}, logits correlation {correlation:.5f}, "
              f"mask IoU {', '.join(f'{v:.4f}' for v in ious)}, mask areas {', '.join(f'{a:.3f}' for a in areas)}")
    sys.exit(1 if failures else 0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def first_frame() -> np.ndarray:
    import cv2

    if CLIP.exists():
        ok, bgr = cv2.VideoCapture(str(CLIP)).read()
        if ok:
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (31, 31), 0)


if __name__ == "__main__":
    main()
