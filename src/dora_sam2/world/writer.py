"""Scenes written as a dataset in the layout `dora-sam2-dataset` writes, ground truth in place of answers.

    OUT_DIR/annotations.json          COCO instances: every clip, one camera each
    OUT_DIR/images/<clip>_<n>.png     each frame (n from 0), lossless (or .jpg)
    OUT_DIR/videos/<clip>.mp4         each clip as a video, for a camera node to play (lossy)
    OUT_DIR/scenes/<clip>.json        each clip's Scene (scene.from_json reads it back)

An image entry has the writer's fields (id, file_name, width, height, camera, timestamp) and `frame`, its
index in the clip. Every object of a clip has an annotation on every frame, seen or not: its visible
pixels as run-length `segmentation`, `area`, `bbox`, `category_id` (its shape), `track_id` (from 1 in each
clip: camera and track id name an object), `score` 1, and what only ground truth knows: `visibility` (the
share of its pixels in the frame that are seen; 0 when hidden or out of the frame), `amodal_bbox` and
`amodal_area` (its own pixels in the frame as if nothing were in front; area 0 when it is out of it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

from ..dataset import mask_fields
from .looks import SHAPES
from .render import Footage
from .scene import Scene, to_json
from .truth import ObjectTruth, frames

IMAGE_FORMATS = ("png", "jpg")
JPEG_QUALITY = 95  # dora-sam2-dataset's default
# zlib's fastest level, Huffman codes only: sensor noise leaves deflate little to find, so this is 20%
# faster than the default strategy and 15% smaller, and the larger levels cost seconds a clip
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
START = datetime(2026, 1, 1, tzinfo=timezone.utc)  # every clip's first frame: clips are cameras, apart


@dataclass
class ClipTotals:
    name: str
    frames: int
    objects: int
    seconds: float
    hidden: int  # object-frames where an object in the frame was wholly hidden
    outside: int  # object-frames where an object was out of the frame


@dataclass
class WorldWriter:
    """Clips in, a dataset out in `directory`; `finish` writes annotations.json."""

    directory: Path
    image_format: str = "png"
    video: bool = True
    _images: list[str] = field(default_factory=list)  # each entry as JSON already
    _annotations: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format {self.image_format!r}: one of {', '.join(IMAGE_FORMATS)}")
        for part in ("images", "scenes") + (("videos",) if self.video else ()):
            (self.directory / part).mkdir(parents=True, exist_ok=True)

    def add(self, scene: Scene, footage: Footage | None = None) -> ClipTotals:
        started, fmt = time.perf_counter(), scene.format
        video = self._video(scene) if self.video else None
        hidden = outside = 0
        try:
            for truth in frames(scene, footage):
                image_id = len(self._images) + 1
                name = f"images/{scene.name}_{truth.index:06d}.{self.image_format}"
                bgr = np.ascontiguousarray(truth.rgb[..., ::-1])
                self._write_image(self.directory / name, bgr)
                if video is not None:
                    video.write(bgr)
                stamp = START + timedelta(seconds=truth.index / fmt.fps)
                self._images.append(json.dumps({
                    "id": image_id, "file_name": name, "width": fmt.width, "height": fmt.height,
                    "camera": scene.name, "timestamp": stamp.isoformat(), "frame": truth.index}))
                for seen in truth.objects:
                    self._annotations.append(json.dumps(self._annotation(image_id, seen)))
                    hidden += seen.silhouette is not None and seen.area == 0
                    outside += seen.silhouette is None
        finally:
            if video is not None:
                video.release()
        (self.directory / "scenes" / f"{scene.name}.json").write_text(to_json(scene))
        return ClipTotals(scene.name, fmt.frames, len(scene.objects), time.perf_counter() - started, hidden, outside)

    def finish(self, description: str) -> Path:
        """annotations.json, replaced in one step: a reader never sees half a file."""
        categories = json.dumps([{"id": i, "name": name} for i, name in enumerate(SHAPES, 1)])
        info = json.dumps({"description": description})
        text = (f'{{"info": {info}, "categories": {categories}, '
                f'"images": [{", ".join(self._images)}], "annotations": [{", ".join(self._annotations)}]}}')
        path = self.directory / "annotations.json"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        os.replace(partial, path)
        return path

    def _annotation(self, image_id: int, seen: ObjectTruth) -> dict:
        silhouette = seen.silhouette
        return {"id": len(self._annotations) + 1, "image_id": image_id, "category_id": SHAPES.index(seen.label) + 1,
                **mask_fields(seen.mask), "iscrowd": 0, "score": 1.0, "track_id": seen.track_id,
                "visibility": round(seen.visibility, 4),
                "amodal_bbox": [float(v) for v in silhouette.bbox] if silhouette else [0.0, 0.0, 0.0, 0.0],
                "amodal_area": silhouette.area if silhouette else 0}

    def _write_image(self, path: Path, bgr: np.ndarray) -> None:
        params = PNG if self.image_format == "png" else [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        ok, data = cv2.imencode(f".{self.image_format}", bgr, params)
        if not ok:
            raise OSError(f"could not encode {path.name}")
        path.write_bytes(data.tobytes())

    def _video(self, scene: Scene) -> cv2.VideoWriter:
        path = self.directory / "videos" / f"{scene.name}.mp4"
        fmt = scene.format
        video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fmt.fps, (fmt.width, fmt.height))
        if not video.isOpened():
            raise OSError(f"could not open {path} for writing as mp4")
        return video
