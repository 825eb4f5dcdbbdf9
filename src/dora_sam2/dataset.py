"""`dora-sam2-dataset`: dora-sam2's answers, written down as a COCO instance-segmentation dataset.

    inputs:  image, image_* (the cameras), masks (dora-sam2's per-object masks)
    env:     OUT_DIR (default out/<dataflow id>/dataset), JPEG_QUALITY (default 95), FLUSH_EVERY (frames
             between rewrites of annotations.json, default 1), FRAME_BUFFER (frames kept per camera
             while their answers come, default 30)

Each answered frame becomes `images/<camera>_<n>.jpg` and one entry of `annotations.json`, and each of its
objects one annotation: its mask as COCO run-length encoding (pycocotools, the field's encoder), box,
area, category (the object's label), SAM 2's score and, in track mode, its track id. The image entry
keeps the frame's timestamp and camera. annotations.json is replaced whole and atomically after every
FLUSH_EVERY frames (the frame's JPEG is written first), so a run stopped at any point leaves a dataset
that loads, up to its last written frame.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import codecs
from .domain import Frame, InputError, Masks
from .settings import ConfigError, Limits, int_setting
from .throttle import Throttle
from .timeline import AnswersOnFrames

log = logging.getLogger("dora_sam2.dataset")

UNLABELLED = "object"  # the category of an object its prompt gave no label
# Categories come from the labels in messages: past this many, further labels share one category, said
# once (a sender minting a label per message would otherwise grow the file's category list without end).
MAX_CATEGORIES = 1000
OTHER = "other"


@dataclass
class CocoWriter:
    """The dataset in `directory`: frames and their masks in, `images/` and `annotations.json` out."""

    directory: Path
    jpeg_quality: int = 95
    flush_every: int = 1
    _images: list[str] = field(default_factory=list)  # each entry already as JSON: the file is rewritten whole
    _annotations: list[str] = field(default_factory=list)
    _categories: dict[str, int] = field(default_factory=dict)
    _unflushed: int = 0

    def __post_init__(self):
        (self.directory / "images").mkdir(parents=True, exist_ok=True)

    @property
    def frames(self) -> int:
        return len(self._images)

    def add(self, frame: Frame, masks: Masks) -> None:
        import pycocotools.mask as rle

        image_id = len(self._images) + 1
        name = f"images/{frame.image_id}_{image_id:06d}.jpg"
        written = cv2.imwrite(str(self.directory / name), np.ascontiguousarray(frame.rgb[..., ::-1]),
                              [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not written:
            raise OSError(f"could not write {self.directory / name}")
        self._images.append(json.dumps({
            "id": image_id, "file_name": name, "width": frame.width, "height": frame.height,
            "camera": frame.image_id, "timestamp": frame.timestamp.isoformat() if frame.timestamp else None}))
        ids = masks.track_ids or [None] * len(masks)
        for mask, label, score, track_id in zip(masks.masks, masks.class_names, masks.scores, ids):
            encoded = rle.encode(np.asfortranarray(mask, dtype=np.uint8))
            annotation = {
                "id": len(self._annotations) + 1, "image_id": image_id, "category_id": self._category(label),
                "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")},
                "area": int(rle.area(encoded)), "bbox": [float(v) for v in rle.toBbox(encoded)], "iscrowd": 0,
                "score": float(score)}
            if track_id is not None:
                annotation["track_id"] = int(track_id)
            self._annotations.append(json.dumps(annotation))
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """annotations.json as it stands now, replaced in one step: a reader never sees half a file."""
        categories = json.dumps([{"id": i, "name": name} for name, i in self._categories.items()])
        text = (f'{{"info": {{"description": "dora-sam2 masks"}}, "categories": {categories}, '
                f'"images": [{", ".join(self._images)}], "annotations": [{", ".join(self._annotations)}]}}')
        partial = self.directory / "annotations.json.partial"
        partial.write_text(text)
        os.replace(partial, self.directory / "annotations.json")
        self._unflushed = 0

    def _category(self, label: str) -> int:
        label = label or UNLABELLED
        if label not in self._categories and len(self._categories) >= MAX_CATEGORIES:
            if OTHER not in self._categories:
                log.warning("more than %d distinct labels: the rest are category %r", MAX_CATEGORIES, OTHER)
            label = OTHER
        return self._categories.setdefault(label, len(self._categories) + 1)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s dora-sam2-dataset: %(message)s", stream=sys.stderr)
    try:
        import pycocotools.mask  # noqa: F401 - said at start, not on the first answer
    except ImportError:
        log.error("dora-sam2-dataset needs pycocotools: pip install 'dora-sam2[dataset]'.")
        sys.exit(1)
    from dora import Node

    node = Node()
    try:
        limits = Limits.from_env()
        writer = CocoWriter(_out_dir(node), int_setting(os.environ, "JPEG_QUALITY", 95, minimum=1),
                            int_setting(os.environ, "FLUSH_EVERY", 1, minimum=1))
        pairs: AnswersOnFrames[Frame, Masks] = AnswersOnFrames(
            int_setting(os.environ, "FRAME_BUFFER", 30, minimum=1), limits.max_waiting, limits.max_cameras)
    except (ConfigError, OSError) as error:
        log.error("%s", error)
        sys.exit(1)
    log.info("writing the dataset to %s", writer.directory)
    said = Throttle(log, burst=5)
    for event in node:
        if event["type"] != "INPUT":
            continue
        try:
            for masks, frame in _settled(event, pairs, limits, said):
                if frame is None:
                    said.warning("no frame", "an answer on %s at %s came without its frame (gone or never sent): "
                                 "not written", masks.image_id, masks.timestamp)
                elif (masks.height, masks.width) != (frame.height, frame.width):
                    said.warning("size", "an answer of %dx%d on a %dx%d frame of %s: not written", masks.width,
                                 masks.height, frame.width, frame.height, frame.image_id)
                else:
                    writer.add(frame, masks)
        except InputError as error:
            said.warning(event["id"], "%s", error)
        except OSError as error:  # a full disk: said, and the next frame tries again
            said.error("write", "could not write to %s (%s)", writer.directory, error)
    writer.flush()
    log.info("%d frames written to %s", writer.frames, writer.directory / "annotations.json")


def _settled(event: dict, pairs: AnswersOnFrames, limits: Limits, said: Throttle):
    input_id, value, metadata = event["id"], event["value"], event["metadata"]
    if input_id.startswith("image"):
        frame = codecs.decode_frame(input_id, value, metadata, limits)
        return pairs.frame(frame.image_id, frame.timestamp, frame)
    if input_id == "masks" or (input_id == "mask" and metadata.get("mask_layout") == "stack"):
        masks = codecs.decode_answer(input_id, value, metadata, limits)
        return pairs.answer(masks.image_id, masks.timestamp, masks)
    if input_id == "mask":
        raise InputError(input_id, "a union `mask` holds no per-object masks: wire dora-sam2's `masks` output")
    said.warning(f"unread {input_id}", "input '%s' is not one this node reads (image*, masks): ignoring it",
                 input_id)
    return []


def _out_dir(node) -> Path:
    if os.environ.get("OUT_DIR", "").strip():
        return Path(os.environ["OUT_DIR"].strip())
    try:
        dataflow = str(node.dataflow_id())
    except AttributeError:  # dora 0.5
        dataflow = "dataflow"
    return Path("out") / dataflow / "dataset"


if __name__ == "__main__":
    main()
