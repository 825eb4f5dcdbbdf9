"""`dora-sam2-dataset`: dora-sam2's answers, written down as a COCO instance-segmentation dataset.

    inputs:  image, image_* (the cameras), masks (dora-sam2's per-object masks)
    outputs: done (optional: one message per frame the writer is finished with, written or lost; wired to
             the camera's tick, it keeps the camera from running ahead of the writer)
    env:     OUT_DIR (default out/<dataflow id>/dataset), JPEG_QUALITY (default 95), FLUSH_EVERY (frames
             between rewrites of annotations.json, default 1), FRAME_BUFFER (frames kept per camera
             while their answers come, default 30), EVERY_FRAME (default 1: a frame without an answer
             is lost; 0: skipped, for a live run)

The run ends with one line of totals (frames read, written, lost and why) and exits 1 if a frame or an
answer was lost, so that `dora run` does not end as if it had succeeded.

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from . import codecs
from .domain import Frame, InputError, Masks
from .joining import join_dataflow
from .node_loop import dataflow_id, inputs, or_exit, require, start_logging
from .settings import ConfigError, FixedLimits, Limits, bool_setting, int_setting
from .throttle import Throttle
from .timeline import EachFrameOnce, Settled

log = logging.getLogger("dora_sam2.dataset")

UNLABELLED = "object"  # the category of an object its prompt gave no label
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

    @property
    def unflushed(self) -> int:
        """Frames added since annotations.json was last replaced: not in it yet."""
        return self._unflushed

    def add(self, frame: Frame, masks: Masks) -> None:
        image_id = len(self._images) + 1
        name = f"images/{frame.image_id}_{image_id:06d}.jpg"
        _, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(frame.rgb[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        _write_whole(self.directory / name, jpeg.tobytes())
        self._images.append(json.dumps({
            "id": image_id, "file_name": name, "width": frame.width, "height": frame.height,
            "camera": frame.image_id, "timestamp": frame.timestamp.isoformat() if frame.timestamp else None}))
        ids = masks.track_ids or [None] * len(masks)
        for mask, label, score, track_id in zip(masks.masks, masks.class_names, masks.scores, ids):
            annotation = {
                "id": len(self._annotations) + 1, "image_id": image_id, "category_id": self._category(label),
                **mask_fields(mask), "iscrowd": 0, "score": float(score)}
            if track_id is not None:
                annotation["track_id"] = int(track_id)
            self._annotations.append(json.dumps(annotation))
        self._unflushed += 1

    def flush_if_due(self) -> None:
        if self._unflushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """annotations.json as it stands now, replaced in one step: a reader never sees half a file."""
        categories = json.dumps([{"id": i, "name": name} for name, i in self._categories.items()])
        text = (f'{{"info": {{"description": "dora-sam2 masks"}}, "categories": {categories}, '
                f'"images": [{", ".join(self._images)}], "annotations": [{", ".join(self._annotations)}]}}')
        partial = self.directory / "annotations.json.partial"
        _write_whole(partial, text.encode())
        os.replace(partial, self.directory / "annotations.json")
        self._unflushed = 0

    def _category(self, label: str) -> int:
        label = label or UNLABELLED
        if label not in self._categories and len(self._categories) >= FixedLimits.MAX_CATEGORIES:
            if OTHER not in self._categories:
                log.warning("more than %d distinct labels: the rest are category %r", FixedLimits.MAX_CATEGORIES, OTHER)
            label = OTHER
        return self._categories.setdefault(label, len(self._categories) + 1)


def mask_fields(mask: np.ndarray) -> dict:
    """A mask's fields in a COCO annotation: `segmentation` as run-length encoding (pycocotools, the field's
    encoder), `area` in pixels, `bbox` as x, y, width, height in pixel edges ([0, 0, 0, 0] when empty)."""
    import pycocotools.mask as rle

    encoded = rle.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")},
            "area": int(rle.area(encoded)), "bbox": [float(v) for v in rle.toBbox(encoded)]}


def _write_whole(path: Path, data: bytes) -> None:
    """`data` at `path`, or OSError (a full disk names its errno) and no half-written file: half a file
    would hold the space the next write needs, and look like a frame."""
    try:
        path.write_bytes(data)
    except OSError:
        path.unlink(missing_ok=True)
        raise


def main() -> None:
    start_logging("dora-sam2-dataset")
    require("pycocotools.mask", log, "dora-sam2-dataset", "pycocotools", "dataset")  # at start, not at the first answer
    node = join_dataflow()  # quietly gone when another node failed the start: its sentence is the one
    run = or_exit(log, lambda: _labelling_run(node), ConfigError, OSError)
    log.info("writing the dataset to %s", run.writer.directory)
    for event in inputs(node):
        run.on_input(event["id"], event["value"], event["metadata"])
    sys.exit(run.finish())


def _labelling_run(node) -> "LabellingRun":
    """The run the settings ask for, its dataset directory made."""
    limits = Limits.from_env()
    writer = CocoWriter(_out_dir(node), _jpeg_quality(os.environ),
                        int_setting(os.environ, "FLUSH_EVERY", 1, minimum=1))
    return LabellingRun(writer, EachFrameOnce(int_setting(os.environ, "FRAME_BUFFER", 30, minimum=1),
                                              limits.max_waiting, limits.max_cameras),
                        limits, bool_setting(os.environ, "EVERY_FRAME", True), _sender(node))


@dataclass
class LabellingRun:
    """Frames and dora-sam2's answers in, each answered frame written once; a frame or an answer that
    could not be written is counted, said, and makes the exit status 1.

    With `every_frame` (a labelling run, dora-sam2 with EVERY_FRAME=1) every camera frame is to be written,
    so one that gets no answer is lost. Otherwise (a live run, where dora-sam2 answers the newest frame) a
    frame without an answer was skipped by dora-sam2, and only answers that find no frame are lost.
    `send_done` tells the camera that a frame is settled, written or not (the `done` output): wired to the
    camera's tick, the camera never runs further ahead of the writer than it allows."""

    writer: CocoWriter
    frames: EachFrameOnce[Frame, Masks]
    limits: Limits = Limits()
    every_frame: bool = True
    send_done: Callable[[Frame | None, bool], None] = lambda frame, written: None
    read: int = 0
    lost: Counter = field(default_factory=Counter)  # frames not written, by cause
    skipped: int = 0  # live runs: frames dora-sam2 did not answer
    frameless: int = 0  # answers not written: their frame was let go, or never came
    said: Throttle = field(default_factory=lambda: Throttle(log, burst=5))

    def on_input(self, input_id: str, value, metadata: dict) -> None:
        try:
            settled = self._settle(input_id, value, metadata)
        except InputError as error:
            self.said.warning(input_id, "%s", error)
            if input_id.startswith("image"):  # a frame all the same: the camera waits for it to be settled
                self.read += 1
                self._lose(None, "could not be read")
            return
        for masks, frame in settled.pairs:
            self.send_done(frame, self._write(frame, masks))
        for frame in settled.pushed_out:
            self.said.warning("pushed out", "the frame of %s at %s was let go unanswered: more than FRAME_BUFFER=%d "
                              "frames waited for their answers (pace the camera by this node's `done`)",
                              frame.image_id, frame.timestamp, self.frames.size)
            self._lose(frame, f"were pushed out of FRAME_BUFFER={self.frames.size} before their answer")
        for frame in settled.unanswered:
            self._unanswered(frame, "got no answer")
        for masks in settled.frameless:
            self.frameless += 1
            self.said.warning("no frame", "an answer on %s at %s came without its frame (let go, or never sent): "
                              "not written", masks.image_id, masks.timestamp)
        for masks in settled.repeated:
            self.said.warning("repeated", "a second answer on the frame of %s at %s: the first was written, this "
                              "one is not", masks.image_id, masks.timestamp)

    def finish(self) -> int:
        """The stream is over: the last flush, and the totals in one line. The exit status is 1 when a frame
        or an answer was lost, or the dataset could not be written."""
        left = self.frames.end()
        for frame in left.unanswered:
            self._unanswered(frame, "had no answer when the stream ended")
        self.frameless += len(left.frameless)
        try:
            self.writer.flush()
        except OSError as error:
            log.error("could not write %s (%s): it holds the frames up to its last write",
                      self.writer.directory / "annotations.json", error)
            self.lost["were written but not listed in annotations.json"] += self.writer.unflushed
        lost = sum(self.lost.values())
        parts = [f"{self.read} frames read", f"{self.writer.frames - self.writer.unflushed} written"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped by dora-sam2")
        if lost:
            parts.append(f"{lost} lost: " + ", ".join(f"{n} {why}" for why, n in self.lost.items()))
        if self.frameless:
            parts.append(f"{self.frameless} answers came without their frame")
        failed = bool(lost or self.frameless)
        (log.error if failed else log.info)("%s (%s)", ", ".join(parts), self.writer.directory / "annotations.json")
        return 1 if failed else 0

    def _settle(self, input_id: str, value, metadata: dict) -> Settled[Frame, Masks]:
        if input_id.startswith("image"):
            frame = codecs.decode_frame(input_id, value, metadata, self.limits)
            self.read += 1
            return self.frames.frame(frame.image_id, frame.timestamp, frame)
        if input_id == "masks" or (input_id == "mask" and metadata.get("mask_layout") == "stack"):
            masks = codecs.decode_answer(input_id, value, metadata, self.limits)
            return self.frames.answer(masks.image_id, masks.timestamp, masks)
        if input_id == "mask":
            raise InputError(input_id, "a union `mask` holds no per-object masks: wire dora-sam2's `masks` output")
        self.said.warning(f"unread {input_id}", "input '%s' is not one this node reads (image*, masks): ignoring it",
                          input_id)
        return Settled()

    def _write(self, frame: Frame, masks: Masks) -> bool:
        if (masks.height, masks.width) != (frame.height, frame.width):
            self.said.warning("size", "an answer of %dx%d on a %dx%d frame of %s: not written", masks.width,
                              masks.height, frame.width, frame.height, frame.image_id)
            self.lost["had an answer of another size"] += 1
            return False
        try:
            self.writer.add(frame, masks)
        except OSError as error:  # the frame's JPEG, on a full disk: said, and the next frame tries again
            self.said.error("write", "could not write the frame of %s at %s (%s): not written", frame.image_id,
                            frame.timestamp, error)
            self.lost["could not be written"] += 1
            return False
        try:
            self.writer.flush_if_due()
        except OSError as error:  # the frame is kept: the next flush, or the last, lists it
            self.said.error("flush", "could not replace %s (%s): the next write tries again",
                            self.writer.directory / "annotations.json", error)
        return True

    def _unanswered(self, frame: Frame, why: str) -> None:
        if self.every_frame:
            self.said.warning("unanswered", "the frame of %s at %s %s: not written", frame.image_id,
                              frame.timestamp, why)
            self._lose(frame, why)
        else:
            self.skipped += 1
            self.send_done(frame, False)

    def _lose(self, frame: Frame | None, why: str) -> None:
        self.lost[why] += 1
        self.send_done(frame, False)


def _sender(node) -> Callable[[Frame | None, bool], None]:
    """Sends `done` for each settled frame when the dataflow declares that output (dora 0.5 cannot say)."""
    try:
        declared = "done" in node.node_config().get("outputs", [])
    except AttributeError:
        declared = False
    if not declared:
        return lambda frame, written: None

    def send(frame: Frame | None, written: bool) -> None:
        metadata = {"written": int(written)}
        if frame is not None:
            metadata.update(image_id=frame.image_id, **({"timestamp": frame.timestamp} if frame.timestamp else {}))
        try:
            node.send_output("done", pa.array([int(written)], pa.uint8()), metadata)
        except Exception as error:  # noqa: BLE001 - the dataflow is ending: the camera no longer waits
            log.debug("could not send done (%s)", error)

    return send


def _jpeg_quality(env) -> int:
    # past 100 OpenCV would write 100 instead, with a warning of its own on every frame
    return int_setting(env, "JPEG_QUALITY", 95, minimum=1, maximum=100, what="a JPEG quality")


def _out_dir(node) -> Path:
    if os.environ.get("OUT_DIR", "").strip():
        return Path(os.environ["OUT_DIR"].strip())
    return Path("out") / dataflow_id(node) / "dataset"


if __name__ == "__main__":
    main()
