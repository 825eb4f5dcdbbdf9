"""A dataset in `dora-sam2-dataset`'s layout (what `dora-sam2-world` writes too), read for training.

    DIR/annotations.json    COCO instances: images with `camera` and `timestamp` (and `frame`, from the
                            world), annotations with a `segmentation` and, in track mode, `track_id`
    DIR/images/...          the frames

The frames of one camera, in order, are a clip; an object is a camera's track id. Annotations without a
track id (a segment-mode recording) train the image stage only. A segmentation is any of COCO's three
forms: run-length as the writer and pycocotools write it, uncompressed run-length, or polygons (what
annotation tools such as CVAT export, where a person corrected the masks). Everything is checked as it
is read: what cannot be used is counted, said in one line per kind, and left out.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("dora_sam2.train")

MAX_ANNOTATIONS_BYTES = 2 * 1024**3  # annotations.json: a day of 30 fps labelling is far below this
MAX_SIDE = 8192  # pixels: a frame's width or height
MIN_AREA = 16  # pixels: smaller objects are not prompted (a box of a few pixels says nothing)


class DatasetError(Exception):
    """The dataset cannot be used. Its text is one sentence saying why and what to do."""


@dataclass(frozen=True)
class Instance:
    segmentation: dict | list  # COCO's: run-length (compressed or not) or polygons
    area: int
    track_id: int | None


@dataclass(frozen=True)
class FrameRecord:
    path: Path
    width: int
    height: int
    instances: tuple[Instance, ...]

    def rgb(self) -> np.ndarray:
        bgr = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{self.path} cannot be read as a {self.width}x{self.height} image.")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def mask(self, instance: Instance) -> np.ndarray:
        from pycocotools import mask as coco_mask

        try:
            mask = coco_mask.decode(_run_length(instance.segmentation, self.height, self.width)).astype(bool)
        except Exception as error:  # pycocotools raises what its C code meets (TypeError, ValueError, ...)
            raise DatasetError(f"an annotation of {self.path.name} is not a COCO segmentation ({error}).") from None
        if mask.shape != (self.height, self.width):
            raise DatasetError(f"an annotation of {self.path.name} is {mask.shape[1]}x{mask.shape[0]}, "
                               f"its image {self.width}x{self.height}.")
        return mask

    def track(self, track_id: int) -> Instance | None:
        return next((i for i in self.instances if i.track_id == track_id), None)


@dataclass(frozen=True)
class ImageSample:
    rgb: np.ndarray  # (H, W, 3) uint8
    masks: np.ndarray  # (N, H, W) bool, every object large enough to prompt


@dataclass(frozen=True)
class ClipSample:
    frames: list[np.ndarray]  # T of (H, W, 3) uint8
    masks: np.ndarray  # (T, N, H, W) bool: the N objects seen on the first frame, empty where they are not
    track_ids: tuple[int, ...]  # (N,) the objects' ids in their clip


@dataclass(frozen=True)
class Dataset:
    clips: tuple[tuple[FrameRecord, ...], ...]  # one per camera, frames in order

    @classmethod
    def read(cls, directory) -> "Dataset":
        directory = Path(directory)
        path = directory / "annotations.json"
        if not path.is_file():
            raise DatasetError(f"{directory} holds no annotations.json: give a directory that dora-sam2-dataset "
                               "or dora-sam2-world wrote.")
        if path.stat().st_size > MAX_ANNOTATIONS_BYTES:
            raise DatasetError(f"{path} is over {MAX_ANNOTATIONS_BYTES >> 30} GiB: split the recording into "
                               "several datasets and train on one at a time.")
        try:
            coco = json.loads(path.read_text())
            clips, skipped = _clips(directory, coco)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise DatasetError(f"{path} is not COCO instances as dora-sam2-dataset writes them ({error}).") from None
        for why, count in skipped.items():
            log.warning("%s: %d %s left out", path, count, why)
        if not any(i.area >= MIN_AREA for clip in clips for f in clip for i in f.instances):
            raise DatasetError(f"{path} has no frame with an object of {MIN_AREA} pixels or more on it: label "
                               "some first.")
        return cls(tuple(clips))

    @property
    def frames(self) -> int:
        return sum(len(clip) for clip in self.clips)

    @property
    def tracked(self) -> bool:
        """Whether any clip names its objects across frames (the video stage needs that)."""
        return any(i.track_id is not None for clip in self.clips for f in clip for i in f.instances)

    @cached_property
    def prompted_frames(self) -> tuple[FrameRecord, ...]:
        """The frames with an object large enough to prompt: what the image stage samples from."""
        return tuple(f for clip in self.clips for f in clip if any(i.area >= MIN_AREA for i in f.instances))

    def image_sample(self, rng: np.random.Generator, max_objects: int) -> ImageSample:
        record = self.prompted_frames[rng.integers(len(self.prompted_frames))]
        instances = [i for i in record.instances if i.area >= MIN_AREA]
        chosen = rng.permutation(len(instances))[:max_objects]
        return ImageSample(record.rgb(), np.stack([record.mask(instances[i]) for i in chosen]))

    def clip_sample(self, rng: np.random.Generator, length: int, max_stride: int,
                    max_objects: int) -> ClipSample | None:
        """`length` frames of one clip, `stride` apart (1 to `max_stride`, as long as the clip allows), and
        up to `max_objects` objects seen on the first; None when no try found a start with an object."""
        clips = [c for c in self.clips if len(c) >= length]
        for _ in range(10):
            clip = clips[rng.integers(len(clips))]
            stride = int(rng.integers(1, min(max_stride, (len(clip) - 1) // max(1, length - 1)) + 1)) if length > 1 else 1
            start = int(rng.integers(len(clip) - stride * (length - 1)))
            records = clip[start : start + stride * (length - 1) + 1 : stride]
            seen = [i.track_id for i in records[0].instances if i.track_id is not None and i.area >= MIN_AREA]
            if seen:
                break
        else:
            return None
        ids = [seen[i] for i in rng.permutation(len(seen))[:max_objects]]
        masks = np.zeros((len(records), len(ids), records[0].height, records[0].width), bool)
        for t, record in enumerate(records):
            for n, track_id in enumerate(ids):
                instance = record.track(track_id)
                if instance is not None and instance.area:
                    masks[t, n] = record.mask(instance)
        return ClipSample([r.rgb() for r in records], masks, tuple(ids))

    def has_clips(self, length: int) -> bool:
        """Whether the video stage has anything to train on: a clip of `length` frames whose objects are named."""
        return any(len(c) >= length and any(i.track_id is not None for f in c for i in f.instances)
                   for c in self.clips)


def _is_segmentation(segmentation) -> bool:
    """One of COCO's forms, by its shape: run-length (`counts` a string, or a list when uncompressed, with
    its `size`) or polygons (a list of flat x, y lists of at least three points). Its values are checked
    where it is decoded, with its image's size."""
    if isinstance(segmentation, dict):
        return isinstance(segmentation.get("counts"), (str, list)) and isinstance(segmentation.get("size"), list)
    return (isinstance(segmentation, list) and bool(segmentation)
            and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segmentation))


def _run_length(segmentation: dict | list, height: int, width: int) -> dict:
    """Compressed run-length, what pycocotools decodes, from any of COCO's forms."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, dict) and isinstance(segmentation["counts"], str):
        return segmentation
    if isinstance(segmentation, dict):  # uncompressed: pycocotools compresses it
        return coco_mask.frPyObjects(segmentation, *segmentation["size"])
    # polygons: one run-length each, the object their union
    return coco_mask.merge(coco_mask.frPyObjects([[float(v) for v in p] for p in segmentation], height, width))


def _clips(directory: Path, coco: dict) -> tuple[list[tuple[FrameRecord, ...]], Counter]:
    skipped: Counter = Counter()
    by_image = defaultdict(list)
    for a in coco["annotations"]:
        segmentation = a.get("segmentation")
        if not _is_segmentation(segmentation):
            skipped["annotations without a segmentation (run-length or polygons)"] += 1
            continue
        track_id = a.get("track_id")
        by_image[a["image_id"]].append(
            Instance(segmentation, int(a.get("area", 0)), int(track_id) if isinstance(track_id, int) else None))
    cameras = defaultdict(list)
    for image in coco["images"]:
        width, height = int(image["width"]), int(image["height"])
        # lexically: a dataset may link its images from elsewhere, but its file names may not climb out of it
        path = Path(os.path.normpath(directory.absolute() / str(image["file_name"])))
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            skipped[f"images outside 1-{MAX_SIDE} pixels a side"] += 1
            continue
        if directory.absolute() not in path.parents:
            skipped["images outside the dataset's directory"] += 1
            continue
        order = (image.get("frame", -1), str(image.get("timestamp", "")), image["id"])
        cameras[str(image.get("camera", ""))].append((order, FrameRecord(path, width, height,
                                                                         tuple(by_image.get(image["id"], ())))))
    return [tuple(record for _, record in sorted(frames, key=lambda x: x[0])) for frames in cameras.values()], skipped
