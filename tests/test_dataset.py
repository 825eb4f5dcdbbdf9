"""A recording segmented into a dataset: examples/label.yml over a short video, through the real node and
`dora-sam2-dataset`, read back with pycocotools."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from datetime import datetime

import cv2
import numpy as np
import pytest

from dora_sam2.timeline import TIMESTAMP_TOLERANCE
from support.dataflows import (camera, dataflow_in_background, detector, event_time, flow, label_flow, lossless,
                               node, run_dataflow, sam2, wait_for, write_clip)

pytestmark = pytest.mark.dataflow
coco = pytest.importorskip("pycocotools.coco", reason="pycocotools is not installed (pip install 'dora-sam2[dataset]')")
FRAMES, W, H = 8, 320, 240
LONG_CLIP = 130  # frames: more than the writer's FRAME_BUFFER (30) and dora's queues (100) hold
BOXES = [[20, 30, 140, 150, "cup"], [150, 60, 300, 220, "ball"]]


def test_every_frame_of_a_video_becomes_a_coco_dataset_of_the_nodes_masks(tmp_path, model_dir):
    video, dataset = tmp_path / "clip.mp4", tmp_path / "dataset"
    frames = write_clip(video, FRAMES, W, H)
    run = run_dataflow(tmp_path, label_flow(model_dir, video, dataset, BOXES))
    assert run.returncode == 0, run.log[-4000:]
    assert "Traceback" not in run.log
    answers = run.events()
    assert len(answers) == frames == FRAMES  # EVERY_FRAME in track mode: each frame, none skipped

    data = coco.COCO(str(dataset / "annotations.json"))
    images = sorted(data.imgs.values(), key=lambda image: image["id"])
    assert [image["id"] for image in images] == list(range(1, frames + 1))
    assert sorted(c["name"] for c in data.cats.values()) == ["ball", "cup"]
    for image, answer in zip(images, answers):  # in the video's order
        meta = answer["metadata"]
        assert abs(datetime.fromisoformat(image["timestamp"]) - event_time(answer)) <= TIMESTAMP_TOLERANCE  # dora: ~1 us
        assert (image["width"], image["height"]) == (W, H) == (meta["width"], meta["height"])
        on_disk = cv2.imread(str(dataset / image["file_name"]))
        assert on_disk.shape == (H, W, 3)
        masks = answer["value"].reshape(-1, H, W)
        annotations = sorted(data.loadAnns(data.getAnnIds(imgIds=image["id"])), key=lambda a: a["id"])
        assert len(annotations) == len(masks) == meta["num_masks"]
        for annotation, mask, label, score, track_id in zip(annotations, masks, meta["labels"], meta["scores"],
                                                            meta["track_ids"]):
            np.testing.assert_array_equal(data.annToMask(annotation).astype(bool), mask)
            assert data.cats[annotation["category_id"]]["name"] == label
            assert annotation["score"] == pytest.approx(score) and annotation["track_id"] == track_id
            assert annotation["area"] == mask.sum()
            rows, cols = np.nonzero(mask)  # COCO boxes: x, y, width, height in pixel edges
            expected = [cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()] \
                if len(rows) else [0, 0, 0, 0]
            assert annotation["bbox"] == pytest.approx(expected)
    logged = run.node_log("dataset")
    assert any(f"{frames} frames read, {frames} written (" in line for line in logged), logged


def test_a_clip_longer_than_every_buffer_is_written_whole_once_and_in_order(tmp_path, micro_model_dir):
    """examples/label.yml over more frames than any buffer on the way holds (the writer's FRAME_BUFFER,
    dora's queues), with a model far slower than the camera could play them: the writer's `done` paces
    the camera, so every frame is written, once, in the clip's order."""
    video, dataset = tmp_path / "clip.mp4", tmp_path / "dataset"
    frames = write_clip(video, LONG_CLIP, 160, 120)
    run = run_dataflow(tmp_path, label_flow(micro_model_dir, video, dataset, [[10, 20, 60, 70, "cup"]]))
    assert run.returncode == 0, run.log[-4000:]
    images = json.loads((dataset / "annotations.json").read_text())["images"]
    stamps = [datetime.fromisoformat(image["timestamp"]) for image in images]
    assert len(stamps) == frames == LONG_CLIP
    assert all(later > earlier for earlier, later in zip(stamps, stamps[1:]))  # in order, each once
    assert len(list((dataset / "images").glob("*.jpg"))) == LONG_CLIP
    assert any(line.startswith(f"INFO dora-sam2-dataset: {LONG_CLIP} frames read, {LONG_CLIP} written (")
               for line in run.node_log("dataset")), run.node_log("dataset")


def labels_per_frame(dataset) -> list[set[str]]:
    """The labels of each written frame's objects, in the order the frames were written."""
    data = json.loads((dataset / "annotations.json").read_text())
    names = {category["id"]: category["name"] for category in data["categories"]}
    return [{names[a["category_id"]] for a in data["annotations"] if a["image_id"] == image["id"]}
            for image in sorted(data["images"], key=lambda image: image["id"])]


def test_a_detector_slower_to_start_than_the_model_loses_no_frame_its_objects(tmp_path, model_dir):
    """examples/label.yml with a detector whose first answer comes 3 s after its first frame (a model
    still loading): the node's first frames wait for it (FIRST_BOXES_SECONDS), so each is written with
    both objects, the first ones too, not answered before the boxes came and written empty. Random
    weights' masks are noise: LOST_SECONDS keeps the tracks (their lifecycle: test_track_quality.py)."""
    video, dataset = tmp_path / "clip.mp4", tmp_path / "dataset"
    frames = write_clip(video, FRAMES, W, H)
    run = run_dataflow(tmp_path, label_flow(
        model_dir, video, dataset, BOXES, {"LOST_SECONDS": "1000", "FIRST_BOXES_SECONDS": "600"},  # a hang guard
        detector_env={"FIRST_DELAY": "3"}))
    assert run.returncode == 0, run.log[-4000:]
    assert "Traceback" not in run.log
    assert labels_per_frame(dataset) == [{"cup", "ball"}] * frames, run.log[-4000:]
    assert not [line for line in run.node_log("sam2") if "FIRST_BOXES_SECONDS" in line]


def test_a_detector_that_never_speaks_costs_one_wait_and_one_line_not_the_run(tmp_path, model_dir):
    """examples/label.yml whose detector sends nothing: the camera, paced by the writer's `done`, would
    wait for ever on the frames the node holds for their boxes. After FIRST_BOXES_SECONDS (1 s here) of
    the node's clock, with no event to wake it, they are answered without boxes, in one line naming the
    input and the setting, and every frame is written, without objects."""
    video, dataset = tmp_path / "clip.mp4", tmp_path / "dataset"
    frames = write_clip(video, FRAMES, W, H)
    run = run_dataflow(tmp_path, label_flow(model_dir, video, dataset, BOXES, {"FIRST_BOXES_SECONDS": "1"},
                                            detector_env={"EVERY": "0"}), timeout=600)
    assert run.returncode == 0, run.log[-4000:]
    assert "Traceback" not in run.log
    assert labels_per_frame(dataset) == [set()] * frames, run.log[-4000:]
    said = [line for line in run.node_log("sam2") if "FIRST_BOXES_SECONDS" in line]
    assert len(said) == 1 and "input 'bbox'" in said[0] and "input 'image'" in said[0], said


def test_frames_that_get_no_answer_are_counted_and_fail_the_run(tmp_path, model_dir):
    """A labelling run in which dora-sam2 answers only every other frame (its boxes come for those only):
    the writer writes what came, says in one line how many frames it lost, and exits 1, so `dora run`
    fails instead of ending as if it had succeeded."""
    dataset, frames = tmp_path / "dataset", 8
    run = run_dataflow(tmp_path, flow(
        camera(frames, fps=20, WIDTH=W, HEIGHT=H), detector(BOXES, EVERY=2),
        sam2(model_dir, {"image": lossless("camera/image"), "bbox": lossless("yolo/bbox")}, ["masks"],
             {"EVERY_FRAME": "1"}, stats=None),
        node("dataset", "dora-sam2-dataset", {"image": lossless("camera/image"), "masks": lossless("sam2/masks")},
             env={"OUT_DIR": dataset})))
    assert run.returncode != 0
    assert "Traceback" not in run.log
    written = len(json.loads((dataset / "annotations.json").read_text())["images"])
    assert written == frames // 2
    totals = [line for line in run.node_log("dataset") if " frames read, " in line]
    assert totals == [f"ERROR dora-sam2-dataset: {frames} frames read, {written} written, {frames - written} lost: "
                      f"{frames - written - 1} got no answer, 1 had no answer when the stream ended ({dataset}"
                      "/annotations.json)"], run.log[-3000:]


def test_a_run_killed_half_way_leaves_a_dataset_that_loads(tmp_path, model_dir):
    """The writer killed outright (no chance to finish) mid-run: annotations.json holds every frame up to
    its last write, each with its JPEG."""
    dataset = tmp_path / "dataset"
    (tmp_path / "label.yml").write_text(flow(
        camera(tick_ms=100, WIDTH=W, HEIGHT=H), detector(BOXES),
        sam2(model_dir, outputs=["masks"], env={"MODE": "track"}, stats=None),
        node("dataset", "dora-sam2-dataset", {"image": "camera/image", "masks": "sam2/masks"},
             env={"OUT_DIR": dataset})))

    def written() -> int:
        try:
            return len(json.loads((dataset / "annotations.json").read_text())["images"])
        except (OSError, ValueError):
            return 0

    with dataflow_in_background(tmp_path / "label.yml"):
        wait_for(lambda: written() >= 3, 300, "three frames in the dataset")
        [pid] = subprocess.run(["pgrep", "-f", "dora-sam2-dataset"], capture_output=True, text=True).stdout.split()
        os.kill(int(pid), signal.SIGKILL)
    data = coco.COCO(str(dataset / "annotations.json"))
    assert len(data.imgs) >= 3
    assert all((dataset / image["file_name"]).exists() for image in data.imgs.values())
    assert {a["image_id"] for a in data.anns.values()} <= set(data.imgs)


def test_messages_the_writer_cannot_use_are_one_line_each_and_the_good_ones_are_written(tmp_path, caplog):
    """The writer's readers let only InputError out; an answer it cannot place is said, not written, and
    the run's totals count each frame it could not write."""
    import logging
    from datetime import timedelta, timezone

    import pyarrow as pa

    from dora_sam2 import codecs
    from dora_sam2.dataset import CocoWriter, LabellingRun
    from dora_sam2.domain import Masks
    from dora_sam2.timeline import EachFrameOnce

    t0 = datetime(2026, 5, 1, tzinfo=timezone.utc)
    image = {"id": "image", "value": pa.array(np.zeros(8 * 6 * 3, np.uint8)),
             "metadata": {"encoding": "rgb8", "width": 8, "height": 6, "timestamp": t0}}
    value, meta = codecs.encode_masks(Masks(np.ones((1, 6, 8), bool), np.ones(1, np.float32), ("cup",), "image", t0))
    good = {"id": "masks", "value": value, "metadata": meta}
    bad = [{**image, "value": pa.array(np.zeros(5, np.uint8))},  # not 8x6x3
           {**good, "metadata": {**meta, "width": "wide"}},
           {**good, "id": "mask", "metadata": {**meta, "mask_layout": "union"}},
           {**good, "value": pa.array(["not", "a", "mask"])}]
    done = []
    run = LabellingRun(CocoWriter(tmp_path), EachFrameOnce(), send_done=lambda frame, written: done.append(written))
    later = {**image, "metadata": {**image["metadata"], "timestamp": t0 + timedelta(1)}}
    with caplog.at_level(logging.WARNING):
        for event in [image, *bad, good, good, later]:
            run.on_input(event["id"], event["value"], event["metadata"])
        status = run.finish()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [line.split(":")[0] for line in warned[:4]] == ["input 'image'", "input 'masks'", "input 'mask'",
                                                           "input 'masks'"], warned
    assert any("second answer" in line for line in warned), warned  # the same answer again: written once
    data = coco.COCO(str(tmp_path / "annotations.json"))
    assert len(data.imgs) == 1 and len(data.anns) == 1
    # the unreadable frame and the frame never answered are lost; each frame read is settled once for the camera
    assert status == 1 and done == [False, True, False]
    totals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR][-1]
    assert totals.startswith("3 frames read, 1 written, 2 lost: 1 could not be read, 1 had no answer"), totals


def test_labels_past_the_category_bound_share_one_category(tmp_path, monkeypatch):
    from datetime import timezone

    from dora_sam2 import dataset
    from dora_sam2.domain import Frame, Masks
    from dora_sam2.settings import FixedLimits

    monkeypatch.setattr(FixedLimits, "MAX_CATEGORIES", 3)
    writer, t0 = dataset.CocoWriter(tmp_path), datetime(2026, 5, 1, tzinfo=timezone.utc)
    frame = Frame("image", np.zeros((6, 8, 3), np.uint8), t0, "rgb8")
    labels = tuple(f"label {i}" for i in range(6))
    writer.add(frame, Masks(np.ones((6, 6, 8), bool), np.ones(6, np.float32), labels, "image", t0))
    writer.flush()
    data = coco.COCO(str(tmp_path / "annotations.json"))
    assert sorted(c["name"] for c in data.cats.values()) == ["label 0", "label 1", "label 2", "other"]
    assert len(data.anns) == 6


@contextlib.contextmanager
def small_disk(path, kilobytes: int):
    """A tmpfs of `kilobytes` at `path`: a disk that fills. Needs root (CI and these machines run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def labelled_frames(count: int, size=(120, 160)):
    """Messages: frames of noise (JPEG cannot shrink them), each followed by its answer, 1 s apart."""
    from datetime import timedelta, timezone

    import pyarrow as pa

    from dora_sam2 import codecs
    from dora_sam2.domain import Masks

    t0, rng = datetime(2026, 5, 1, tzinfo=timezone.utc), np.random.default_rng(0)
    for i in range(count):
        stamp = t0 + timedelta(seconds=i)
        yield "image", pa.array(rng.integers(0, 255, size[0] * size[1] * 3, dtype=np.uint8)), {
            "encoding": "rgb8", "width": size[1], "height": size[0], "timestamp": stamp}
        masks = Masks(rng.random((2, *size)) > 0.5, np.ones(2, np.float32), ("cup", "ball"), "image", stamp)
        yield "masks", *codecs.encode_masks(masks)


def test_a_disk_that_fills_is_said_the_dataset_still_loads_and_the_run_fails_with_its_totals(tmp_path, caplog):
    """The writer on a disk that fills part way: it goes on (each failed write one throttled line), leaves
    no half-written file behind, and the last flush failing as the run ends is one line, not a traceback.
    What annotations.json lists loads, each frame with its JPEG; the totals count what was lost."""
    import logging

    from dora_sam2.dataset import CocoWriter, LabellingRun
    from dora_sam2.timeline import EachFrameOnce

    with small_disk(tmp_path / "disk", 400) as disk, caplog.at_level(logging.INFO):
        run = LabellingRun(CocoWriter(disk / "dataset"), EachFrameOnce())
        for message in labelled_frames(40):
            run.on_input(*message)
        status = run.finish()
        data = coco.COCO(str(disk / "dataset" / "annotations.json"))
        assert 0 < len(data.imgs) < 40
        assert all((disk / "dataset" / image["file_name"]).exists() for image in data.imgs.values())
        assert not (disk / "dataset" / "annotations.json.partial").exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert status == 1
    assert errors[-1].startswith(f"40 frames read, {len(data.imgs)} written, {40 - len(data.imgs)} lost: "), errors
    assert len(errors) < 15, errors  # throttled: not a line per frame
    assert any("No space left on device" in line for line in errors), errors


def test_a_jpeg_quality_past_100_stops_the_writer_with_one_sentence(tmp_path):
    """JPEG_QUALITY=150, which OpenCV would quietly write as 100: one line naming the setting and its range,
    exit 1, no traceback, no dataset."""
    run = run_dataflow(tmp_path, flow(
        camera(2, fps=10, WIDTH=W, HEIGHT=H),
        node("dataset", "dora-sam2-dataset", {"image": "camera/image"},
             env={"OUT_DIR": tmp_path / "dataset", "JPEG_QUALITY": "150"})))
    assert run.returncode != 0 and "Traceback" not in run.log
    said = [line for line in run.node_log("dataset") if line.startswith("ERROR")]
    assert len(said) == 1 and "JPEG_QUALITY=150" in said[0] and "1 to 100" in said[0], said
    assert not (tmp_path / "dataset").exists()


def test_a_read_only_dataset_directory_stops_the_writer_with_one_sentence(tmp_path):
    """OUT_DIR where nothing can be written: one line that names the directory, exit 1, no traceback."""
    with small_disk(tmp_path / "disk", 64) as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        run = run_dataflow(tmp_path, flow(
            camera(2, fps=10, WIDTH=W, HEIGHT=H),
            node("dataset", "dora-sam2-dataset", {"image": "camera/image"}, env={"OUT_DIR": disk / "dataset"})))
    assert run.returncode != 0 and "Traceback" not in run.log
    said = [line for line in run.node_log("dataset") if line.startswith("ERROR")]
    assert len(said) == 1 and "Read-only file system" in said[0] and str(disk / "dataset") in said[0], said
