"""SAM 3 reads words: given concept phrases, its detector finds every instance of each on a frame, with a
mask and a score. This module runs transformers' `Sam3Model` as its processor would (the same resize and
normalisation, the same scores and mask threshold), without torchvision, and with what a stream needs:
the frame's ViT run once however many phrases are asked, and each phrase's text encoded once.

SAM 3's tracker (boxes, clicks, following objects) is SAM 2's architecture and runs through model.py and
video.py. Detector and tracker read the same ViT features: `SharedViT` computes them once per frame.

tests/test_sam3.py holds `Sam3Finder` to `Sam3Model` with `Sam3Processor`'s post-processing.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from . import processing
from .domain import Frame, Masks, Phrases
from .last_computed import LastComputed
from .precision import Precision, check_finite
from .settings import FixedLimits

# SAM 3's text encoder reads 32 tokens (its processor pads and cuts every phrase to that length).
TEXT_TOKENS = 32
# The processor's: an instance is kept above this score, and a pixel is in its mask above this probability.
MASK_THRESHOLD = 0.5


class SharedViT(torch.nn.Module):
    """SAM 3's ViT, shared by its detector and its tracker: the last frame's output is kept, so on a frame
    both read (a detection round in track mode) the 450 M-parameter encoder runs once. The same pixels under
    the same autocast give the same output; they are compared, not assumed (a check of one image, beside a
    ViT over it), and after a fall back to float32 the frame is computed again."""

    def __init__(self, vit: torch.nn.Module):
        super().__init__()
        self.vit = vit
        self._last: LastComputed[tuple, object] = LastComputed(same=_same)

    def forward(self, pixel_values: torch.Tensor, **kwargs):
        if not kwargs:
            return self._last.get((_autocast_dtype(pixel_values.device), pixel_values), lambda: self.vit(pixel_values))
        out = self.vit(pixel_values, **kwargs)  # other outputs asked for (hidden states, attentions): not kept
        self._last.clear()
        return out

    def get_input_embeddings(self):
        return self.vit.get_input_embeddings()


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def _same(key: tuple, other: tuple) -> bool:
    """Two (autocast dtype, pixels) keys: the same computation."""
    (dtype, a), (other_dtype, b) = key, other
    if dtype != other_dtype:
        return False
    if a is b:
        return True
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    try:
        return bool(torch.equal(a, b))
    except RuntimeError:  # tensors with no data (the GPU tests' fake tensors): never the same
        return False


def share_vit(detector, tracker) -> None:
    """One ViT for both: the checkpoint's tracker reads the detector's backbone weights anyway (transformers
    loads them into both), so the tracker's copy is dropped, and with it 1.7 GB in float32."""
    shared = SharedViT(detector.vision_encoder.backbone)
    detector.vision_encoder.backbone = shared
    tracker.vision_encoder.backbone = shared


class Sam3Finder:
    """Frames and phrases in, every instance out: `find(frame, phrases)`."""

    def __init__(self, detector, tokenizer, precision: Precision):
        self.detector = detector
        self.tokenizer = tokenizer
        self.precision = precision  # the tracker's: the two read one ViT
        self.input_size = int(detector.config.vision_config.image_size)
        self._texts: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._vision: LastComputed[Frame, object] = LastComputed()  # the last frame's encoder output
        self._kept_dtype = precision.dtype  # what the kept texts and frame were computed in

    @property
    def device(self) -> torch.device:
        return self.precision.device

    def fall_back_to_float32(self) -> bool:
        """After a float16 overflow: this checkpoint's models in float32 (said once); False where that
        would not help."""
        return self.precision.fall_back_to_float32()

    def warmup(self, width: int = 640, height: int = 480) -> None:
        """One find on a grey frame, so the first real one does not pay for lazy initialisation."""
        self.find(Frame("warmup", np.full((height, width, 3), 127, np.uint8), None, "rgb8"), Phrases(("object",)),
                  min_score=1.0, limit=1)

    @property
    def reads_exemplars(self) -> bool:
        """Exemplar boxes are pooled from the features with torchvision's `roi_align` (transformers' SAM 3
        geometry encoder): without torchvision, phrases are read and exemplars are not."""
        from transformers.utils import is_torchvision_available

        return is_torchvision_available()

    @torch.inference_mode()
    def find(self, frame: Frame, phrases: Phrases, min_score: float, limit: int) -> Masks:
        """Every instance of every phrase scored `min_score` or more, the `limit` best of them, in phrase order
        (within a phrase, SAM 3's query order): labelled by their phrase, scored and boxed by SAM 3."""
        parts = [self._postprocess(out, frame, min_score) for out in self.detect(frame, phrases)]
        masks = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, frame.height, frame.width), bool)
        scores = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
        boxes = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, 4), np.float32)
        labels = tuple(phrase for phrase, part in zip(phrases.texts, parts) for _ in range(len(part[1])))
        found = Masks(masks, scores.astype(np.float32), labels, frame.image_id, frame.timestamp,
                      boxes=boxes.astype(np.float32))
        return found if len(found) <= limit else found[np.sort(np.argsort(-found.scores, kind="stable")[:limit])]

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        return processing.preprocess(rgb, self.input_size, self.device, processing.SAM3_NORMALISATION)

    def text_embedding(self, phrase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 32, C) projected text features and their (1, 32) attention mask, kept per phrase."""
        self._follow_precision()
        if phrase in self._texts:
            self._texts.move_to_end(phrase)
            return self._texts[phrase]
        tokens = self.tokenizer([phrase], padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                                return_tensors="pt")
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        with self.precision.autocast():
            features = self.detector.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        self._texts[phrase] = (features, mask)
        while len(self._texts) > FixedLimits.TEXT_EMBEDDINGS_KEPT:
            self._texts.popitem(last=False)
        return self._texts[phrase]

    def _encode(self, frame: Frame):
        self._follow_precision()
        return self._vision.get(frame, lambda: self._vision_features(frame.rgb))

    def _follow_precision(self) -> None:
        """What was kept in another dtype (before a fall back to float32) is computed again."""
        if self._kept_dtype != self.precision.dtype:
            self._texts.clear()
            self._vision.clear()
            self._kept_dtype = self.precision.dtype

    def _vision_features(self, rgb: np.ndarray):
        with self.precision.autocast():
            return self.detector.get_vision_features(pixel_values=self.preprocess(rgb))

    def _exemplars(self, phrases: Phrases, frame: Frame) -> dict:
        """Exemplar boxes as SAM 3's geometry prompt: (1, E, 4) cx, cy, w, h over the frame, and their labels."""
        if phrases.exemplars is None or len(phrases.exemplars) == 0:
            return {}
        x1, y1, x2, y2 = np.clip(phrases.exemplars, 0, [frame.width, frame.height] * 2).T
        boxes = np.stack([(x1 + x2) / 2 / frame.width, (y1 + y2) / 2 / frame.height,
                          (x2 - x1) / frame.width, (y2 - y1) / frame.height], axis=-1).astype(np.float32)
        return {"input_boxes": torch.from_numpy(boxes)[None].to(self.device),
                "input_boxes_labels": torch.from_numpy(phrases.exemplar_labels.astype(np.int64))[None].to(self.device)}

    @torch.inference_mode()
    def detect(self, frame: Frame, phrases: Phrases) -> list:
        """SAM 3's own outputs for each phrase on the frame, on the device: the frame encoded once, each
        phrase's text once (`text_embedding`)."""
        vision = self._encode(frame)
        exemplars = self._exemplars(phrases, frame)
        outputs = []
        for phrase in phrases.texts:
            features, mask = self.text_embedding(phrase)
            with self.precision.autocast():
                outputs.append(self.detector(vision_embeds=vision, text_embeds=_PooledText(features),
                                             attention_mask=mask, **exemplars))
        return outputs

    def _postprocess(self, out, frame: Frame, min_score: float):
        """As `Sam3Processor.post_process_instance_segmentation`: score = query x presence probability; masks
        as probabilities brought to the frame (bilinear), then over MASK_THRESHOLD."""
        scores = out.pred_logits[0].float().sigmoid() * out.presence_logits[0].float().sigmoid()
        keep = scores >= min_score  # MIN_CONFIDENCE's one rule, as for boxes (Sam3Processor keeps > only)
        probabilities = out.pred_masks[0][keep].float().sigmoid()
        if len(probabilities):
            probabilities = F.interpolate(probabilities[None], size=(frame.height, frame.width), mode="bilinear",
                                          align_corners=False)[0]
        else:  # none found: still the frame's size, to stand beside another phrase's masks
            probabilities = probabilities.new_zeros((0, frame.height, frame.width))
        masks = probabilities > MASK_THRESHOLD
        scale = torch.tensor([frame.width, frame.height] * 2, dtype=torch.float32, device=scores.device)
        boxes = out.pred_boxes[0][keep].float() * scale
        check_finite("SAM 3", scores, boxes)
        return masks.cpu().numpy(), scores[keep].cpu().numpy(), boxes.cpu().numpy()


class _PooledText:
    """`Sam3Model.forward` reads precomputed text as an output object's `pooler_output`."""

    def __init__(self, pooler_output: torch.Tensor):
        self.pooler_output = pooler_output
