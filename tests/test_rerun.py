"""The overlay in the real dora-rerun. dora-rerun 0.5.0 (its newest release) speaks only the dora 0.5
daemon protocol, so this runs the 0.5 runtime: dora-rs-cli, dora-rs and dora-rerun 0.5.0 in a venv of
their own, our node on dora-rs 0.5.0's Python API (examples/rerun-dora05.yml documents the pairing)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import venv
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from support.browser import CHROMIUM, launch_chromium, open_when_served
from support.dataflows import (BIN, ROOT, camera, dataflow_in_background, detector, flow, free_port, lossless, node,
                               sam2, seed_flow, wait_for, wait_for_port)

pytestmark = pytest.mark.dataflow
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DORA_05 = ["dora-rs-cli==0.5.0", "dora-rs==0.5.0", "dora-rerun==0.5.0", "pyyaml"]


@pytest.fixture(scope="module")
def dora05(tmp_path_factory):
    root = tmp_path_factory.mktemp("dora05")
    venv.create(root, with_pip=True)
    pip = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", *DORA_05],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        why = f"could not install the dora 0.5 runtime from the package registry: {pip.stderr[-300:]}"
        if os.environ.get("CI"):  # CI reaches the registry: there this test must run, not skip
            pytest.fail(why)
        pytest.skip(why)
    site = subprocess.run([str(root / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return root / "bin", site


def test_dora_rerun_records_the_overlay(dora05, tmp_path, model_dir):
    bin05, site05 = dora05
    # Our nodes run on this project's Python, with dora-rs 0.5.0 put first on their path.
    on05 = {"PYTHONPATH": site05}
    (tmp_path / "rerun.yml").write_text(flow(
        camera(4, fps=2, **on05), detector(**on05),
        sam2(model_dir, outputs=["mask", "overlay"], env={"WARMUP": "0", **on05}, path=str(BIN / "dora-sam2"),
             stats=None),
        node("rerun", "dora-rerun", {"overlay": "sam2/overlay"}, env={"OPERATING_MODE": "SAVE"})))
    run_env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{bin05}{os.pathsep}{os.environ.get('PATH', '')}",
                   RUST_BACKTRACE="0", HF_HUB_OFFLINE="1")
    result = subprocess.run([str(bin05 / "dora"), "run", str(tmp_path / "rerun.yml")], cwd=tmp_path, env=run_env,
                            capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "sam2 finished successfully" in log and "Traceback" not in log
    archives = list((tmp_path / "out").glob("*/archive-*.rerun"))
    assert len(archives) == 1, log[-3000:]
    recording = archives[0].read_bytes()
    assert b"/overlay" in recording and len(recording) > 50_000  # four 640x480 overlay images, compressed


# ---------------------------------------------------------------------------- dora-sam2-rerun, dora 1.x


def nanoseconds(batch) -> list[int]:
    return batch.column("frame_time").cast(pa.int64()).to_pylist()


def segmentation_images(rrd) -> dict:
    """frame time (ns since the epoch) -> (class image, annotation context {class: label}) for camera
    `image`, read back with rerun's own reader."""
    from rerun.chunk import RrdReader

    images, contexts = {}, {}
    for chunk in RrdReader(str(rrd)).stream():
        batch = chunk.to_record_batch()
        if chunk.entity_path == "/image/masks":
            for when, buffer, fmt in zip(nanoseconds(batch),
                                         batch.column("SegmentationImage:buffer").to_pylist(),
                                         batch.column("SegmentationImage:format").to_pylist()):
                dtype = {6: np.uint8, 8: np.uint16}[fmt[0]["channel_datatype"]]
                images[when] = np.frombuffer(bytes(buffer[0]), dtype).reshape(fmt[0]["height"], fmt[0]["width"])
        elif chunk.entity_path == "/image" and "AnnotationContext:context" in batch.schema.names:
            for when, context in zip(nanoseconds(batch),
                                     batch.column("AnnotationContext:context").to_pylist()):
                contexts[when] = {c["class_id"]: c["class_description"]["info"]["label"] for c in context[0]}
    return {when: (image, contexts.get(when)) for when, image in images.items()}


def rerun_flow(model_dir, mode: str, sink_env: dict) -> str:
    """camera -> fixed detector -> SAM2 -> dora-sam2-rerun (and a collector of the answers), every frame."""
    boxes = [[100, 120, 300, 360, "cup"], [250, 200, 450, 400, "ball"]]  # they overlap
    rerun = node("rerun", "dora-sam2-rerun", {"image": lossless("camera/image"), "masks": lossless("sam2/masks"),
                                              "bbox": "yolo/bbox"}, env=sink_env)
    # LOST_FRAMES: random weights' masks are noise, so SAM 2's random losses would end tracks (this is plumbing)
    return seed_flow(model_dir, boxes, 4, 2, ["masks"], {"MODE": mode, "EVERY_FRAME": "1", "LOST_FRAMES": "1000"},
                     [rerun])


def assert_each_answer_is_a_segmentation_of_its_frame(answers: list[dict], saved: dict, mode: str) -> None:
    assert answers and len(saved) == len(answers), (len(answers), len(saved))
    for answer in answers:
        meta = answer["metadata"]
        when = (datetime.fromisoformat(meta["timestamp"]["datetime"]) - EPOCH) // timedelta(microseconds=1) * 1000
        [(image, context)] = [v for t, v in saved.items() if abs(t - when) <= 5000]  # dora's precision: ~1 us
        masks = answer["value"].reshape(-1, meta["height"], meta["width"])
        classes = meta["track_ids"] if mode == "track" else list(range(1, len(masks) + 1))
        expected = np.zeros((meta["height"], meta["width"]), np.uint16)
        for mask, class_id in zip(masks, classes):  # the later object on top, as on the overlay
            expected[mask] = class_id
        np.testing.assert_array_equal(image, expected)
        prefix = [f"#{c} " for c in classes] if mode == "track" else ["", ""]
        assert context == {c: p + label for c, p, label in zip(classes, prefix, meta["labels"])}


@pytest.mark.parametrize("mode", ["segment", "track"])
def test_dora_sam2_rerun_saves_each_answer_as_a_segmentation_of_its_frame(dataflow, model_dir, tmp_path, mode):
    pytest.importorskip("rerun", reason="rerun-sdk is not installed")
    rrd = tmp_path / "sam2.rrd"
    run = dataflow(rerun_flow(model_dir, mode, {"OPERATING_MODE": "SAVE", "RRD_PATH": rrd}))
    assert run.returncode == 0, run.log[-4000:]
    assert "Traceback" not in run.log
    assert_each_answer_is_a_segmentation_of_its_frame(run.events(), segmentation_images(rrd), mode)


def saved_when_complete(rrd, count: int) -> dict:
    """What a viewer saving its stream has written, once it holds `count` answers (it writes as it receives)."""
    def read():
        try:
            return segmentation_images(rrd)
        except Exception:  # noqa: BLE001 - a file still being written may end mid-message
            return {}
    wait_for(lambda: len(read()) >= count, seconds=120, what=f"{count} answers in {rrd}")
    return read()


@pytest.mark.parametrize("operating_mode", ["CONNECT", "SPAWN"])
def test_connect_and_spawn_stream_each_answer_to_a_rerun_viewer(dataflow, model_dir, tmp_path, operating_mode):
    """The viewer is rerun's own binary with `--save`: it receives the stream as the native viewer does and
    writes it down, since this machine has no screen. CONNECT reaches a viewer already running; SPAWN starts
    one (through `rerun` on PATH: here a one-line wrapper that adds `--save` to what the SDK runs)."""
    pytest.importorskip("rerun", reason="rerun-sdk is not installed")
    from dora_sam2.rerun_viewer import rerun_binary

    rerun_cli = rerun_binary()  # the binary itself: stopping it stops the viewer (the `rerun` script forks it)
    rrd, pid_file = tmp_path / "viewer.rrd", tmp_path / "viewer.pid"
    viewer = None
    if operating_mode == "CONNECT":
        port = free_port()
        viewer = subprocess.Popen([rerun_cli, "--port", str(port), "--save", str(rrd)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)
        sink = {"OPERATING_MODE": "CONNECT", "RERUN_ADDR": f"rerun+http://127.0.0.1:{port}/proxy"}
    else:
        wrapper = tmp_path / "viewer-bin" / "rerun"
        wrapper.parent.mkdir()
        wrapper.write_text(f'#!/bin/sh\necho $$ > "{pid_file}"\nexec "{rerun_cli}" "$@" --save "{rrd}"\n')
        wrapper.chmod(0o755)
        sink = {"OPERATING_MODE": "SPAWN", "RERUN_GRPC_PORT": free_port(),
                "PATH": f"{wrapper.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        run = dataflow(rerun_flow(model_dir, "track", sink))
        assert run.returncode == 0, run.log[-4000:]
        assert "Traceback" not in run.log
        answers = run.events()
        assert_each_answer_is_a_segmentation_of_its_frame(answers, saved_when_complete(rrd, len(answers)), "track")
    finally:
        if viewer is not None:
            viewer.terminate()
            viewer.wait(timeout=30)
        elif pid_file.exists():  # SPAWN detaches the viewer from the node: it outlives the dataflow
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_a_mask_before_its_frame_waits_for_it_and_one_without_a_frame_is_one_line(tmp_path, caplog):
    """dora delivers inputs by fairness, not by arrival: a mask can come before its frame."""
    rr = pytest.importorskip("rerun", reason="rerun-sdk is not installed")
    from dora_sam2 import codecs
    from dora_sam2.domain import Frame, Masks
    from dora_sam2.rerun_viewer import MaskLogger

    rr.init("test", spawn=False)
    rr.save(str(tmp_path / "t.rrd"))
    logger = MaskLogger(rr)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    second = timedelta(seconds=1)

    def answer(width, at):
        masks = Masks(np.ones((1, 4, width), bool), np.ones(1, np.float32), ("cup",), "image", at)
        value, metadata = codecs.encode_masks(masks)
        return {"value": value, "metadata": metadata}

    def frame(at):
        logger.frame(Frame("image", np.zeros((4, 6, 3), np.uint8), at, "rgb8"))

    with caplog.at_level("WARNING", logger="dora_sam2.rerun"):
        logger.answer("masks", answer(6, t0))  # before its frame: waits for it
        frame(t0)
        logger.answer("mask", answer(5, t0))  # another size
        logger.answer("masks", answer(6, t0 - second))  # older than every frame kept
        logger.answer("bbox", answer(6, t0 + second))  # its frame never comes: the next one is later
        frame(t0 + 2 * second)
        logger.detections("boxes2d", {"value": pa.array([1.0, 2.0, 3.0]), "metadata": {}})  # not N*4
    rr.disconnect()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages
    assert messages[3].startswith("input 'boxes2d'")
    assert "masks of 5x4 for a 6x4 frame" in messages[0]
    assert "no frame of camera 'image' is kept or came for the answer at 2025-12-31 23:59:59" in messages[1]
    assert "no frame of camera 'image' is kept or came for the answer at 2026-01-01 00:00:01" in messages[2]
    assert list(segmentation_images(tmp_path / "t.rrd")) == [(t0 - EPOCH) // timedelta(microseconds=1) * 1000]


def drawn_red(png: bytes) -> int:
    """Pixels of a screenshot that are strongly red."""
    import cv2

    rgb = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    return int(((rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)).sum())


def test_serve_hosts_rerun_web_viewer_on_loopback_and_chromium_loads_it(tmp_path, model_dir):
    """SERVE: rerun's web viewer for a robot without a screen, on 127.0.0.1 unless BIND says otherwise."""
    pytest.importorskip("rerun", reason="rerun-sdk is not installed")
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if CHROMIUM is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    web, grpc = free_port(), free_port()
    (tmp_path / "serve.yml").write_text(flow(
        camera(tick_ms=300), detector([[100, 120, 300, 360, "cup"], [400, 200, 560, 400, "ball"]]),
        # LOST_FRAMES: random weights' masks are noise, so SAM 2's random losses would end tracks (this is plumbing)
        sam2(model_dir, outputs=["masks"], env={"MODE": "track", "LOST_FRAMES": "100000"}, stats=None),
        node("rerun", "dora-sam2-rerun", {"image": "camera/image", "masks": "sam2/masks", "bbox": "yolo/bbox"},
             env={"OPERATING_MODE": "SERVE", "RERUN_WEB_PORT": web, "RERUN_GRPC_PORT": grpc})))
    with dataflow_in_background(tmp_path / "serve.yml"):
        with playwright.sync_playwright() as p:
            browser = launch_chromium(p, ["--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            url = f"http://127.0.0.1:{web}/?url=rerun%2Bhttp://127.0.0.1:{grpc}/proxy"
            open_when_served(page, url)
            page.wait_for_selector("canvas", timeout=300_000)  # the viewer (WebAssembly) has started
            # it has connected and drawn the camera's frames and masks: the synthetic scene's red block (and
            # the masks' tint) in the image view. An empty viewer has none of that red.
            wait_for(lambda: drawn_red(page.screenshot(path=str(tmp_path / "rerun.png"))) > 2000, 300,
                     "the frames and masks drawn in the web viewer")
            title = page.title()
            browser.close()
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    logged = (tmp_path / "dora.log").read_text()
    assert "rerun" in title.lower(), title
    assert f"masks to http://127.0.0.1:{web}/" in logged, logged[-3000:]
    bound = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{web}")]
    assert bound == [f"127.0.0.1:{web}"], bound  # loopback only
    if os.environ.get("SAVE_SCREENSHOT"):
        shutil.copy(tmp_path / "rerun.png", ROOT / "docs" / "rerun.png")


# ---------------------------------------------------------------------------- what rerun cannot hold


@pytest.fixture
def recorded(tmp_path):
    """(rerun, the .rrd file) with rerun recording into that file; closed when the test ends."""
    rr = pytest.importorskip("rerun", reason="rerun-sdk is not installed")
    rr.init("test", spawn=False)
    rr.save(str(tmp_path / "t.rrd"))
    yield rr, tmp_path / "t.rrd"
    rr.disconnect()


def answer_event(masks: np.ndarray, at: datetime | None, track_ids=None, labels=None) -> dict:
    """dora-sam2's `masks` message for (N, H, W) masks, as the viewer's loop is handed it."""
    from dora_sam2 import codecs
    from dora_sam2.domain import Masks

    labels = tuple(labels or [""] * len(masks))
    value, metadata = codecs.encode_masks(Masks(masks, np.ones(len(masks), np.float32), labels, "image", at,
                                                None if track_ids is None else tuple(track_ids)))
    return {"type": "INPUT", "id": "masks", "value": value, "metadata": metadata}


def frame_event(at: datetime | None, width: int = 6, height: int = 4) -> dict:
    metadata = {"encoding": "rgb8", "width": width, "height": height, **({"timestamp": at} if at else {})}
    return {"type": "INPUT", "id": "image", "value": pa.array(np.zeros(width * height * 3, np.uint8)),
            "metadata": metadata}


def columns(count: int, width: int = 6, height: int = 4) -> np.ndarray:
    """`count` masks, mask i the frame's column i: each shows in the segmentation image."""
    masks = np.zeros((count, height, width), bool)
    for i in range(count):
        masks[i, :, i] = True
    return masks


def ns(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


def entity_times(rrd, entity: str) -> list[int]:
    from rerun.chunk import RrdReader

    return sorted(t for chunk in RrdReader(str(rrd)).stream() if chunk.entity_path == entity
                  for t in nanoseconds(chunk.to_record_batch()))


def test_track_ids_outside_rerun_class_ids_get_classes_of_their_own_and_keep_their_labels(recorded, caplog):
    """rerun's class ids are uint16 (0 is no mask): the tracker's counter passes 65,535 on a long run, and a
    sender may send any id. Such an id folds into 1-65535, 1 + (id - 1) mod 65535; one meeting a class
    another mask of its answer holds takes the lowest free class; the labels keep the real ids."""
    from dora_sam2.rerun_viewer import MaskLogger

    rr, rrd = recorded
    logger = MaskLogger(rr)
    t0, second = datetime(2026, 1, 1, tzinfo=timezone.utc), timedelta(seconds=1)
    with caplog.at_level("INFO", logger="dora_sam2.rerun"):
        logger.on_input(frame_event(t0))
        # 70000 folds to 1 + 69999 % 65535 = 4465, which track 4465 holds: it takes the lowest free class, 1;
        # -1 folds to 1 + (-2 mod 65535) = 65534
        logger.on_input(answer_event(columns(4), t0, [70000, 4465, -1, 5], ["a", "b", "c", "d"]))
        logger.on_input(frame_event(t0 + second))
        # alone, 70000 has its folded class; 2**63 - 1 (int64's largest) folds to 1 + (2**63 - 2) mod 65535:
        # 2**16 is 1 mod 65535, so 2**63 = 2**(3 * 16 + 15) is 2**15 and the class is 32767
        logger.on_input(answer_event(columns(2), t0 + second, [70000, 2**63 - 1]))
        logger.on_input(frame_event(t0 + 2 * second))
        logger.on_input(answer_event(columns(2), t0 + 2 * second, [1, 2], ["cup", "ball"]))
    rr.disconnect()
    saved = segmentation_images(rrd)
    assert sorted(saved) == [ns(t0), ns(t0 + second), ns(t0 + 2 * second)]
    image, context = saved[ns(t0)]
    assert image[0].tolist() == [1, 4465, 65534, 5, 0, 0] and (image == image[0]).all()
    assert context == {1: "#70000 a", 4465: "#4465 b", 65534: "#-1 c", 5: "#5 d"}
    image, context = saved[ns(t0 + second)]
    assert image[0].tolist() == [4465, 32767, 0, 0, 0, 0]
    assert context == {4465: "#70000", 32767: f"#{2**63 - 1}"}
    image, context = saved[ns(t0 + 2 * second)]  # and the next answer is drawn as ever
    assert image[0].tolist() == [1, 2, 0, 0, 0, 0] and context == {1: "#1 cup", 2: "#2 ball"}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["input 'masks': track id 70000 is outside rerun's class ids (1 to 65535): such ids are "
                        "drawn as classes folded into that range, their labels keep the ids (said once)"], messages


def test_an_answer_of_more_masks_than_rerun_has_classes_draws_the_first_65535(recorded, caplog):
    """Only where MAX_MASKS is raised past 65,535: 1 + the mask's index would overflow the class id."""
    from dora_sam2.rerun_viewer import MaskLogger
    from dora_sam2.settings import Limits

    rr, rrd = recorded
    logger = MaskLogger(rr, limits=Limits(max_masks=70_000))
    t0, second = datetime(2026, 1, 1, tzinfo=timezone.utc), timedelta(seconds=1)
    many = np.zeros((70_000, 4, 4), bool)
    many.reshape(70_000, 16)[np.arange(70_000), np.arange(70_000) % 16] = True  # mask i: pixel i % 16
    with caplog.at_level("WARNING", logger="dora_sam2.rerun"):
        logger.on_input(frame_event(t0, 4, 4))
        logger.on_input(answer_event(many, t0))
        logger.on_input(frame_event(t0 + second, 4, 4))
        logger.on_input(answer_event(columns(2, 4, 4), t0 + second, labels=["cup", "ball"]))
    rr.disconnect()
    saved = segmentation_images(rrd)
    image, context = saved[ns(t0)]
    # pixel p shows the last drawn mask covering it, of masks 0 to 65534: class 1 + that mask's index
    last_drawn = [max(i for i in range(65_535) if i % 16 == p) for p in range(16)]
    assert image.ravel().tolist() == [1 + i for i in last_drawn]
    assert sorted(context) == list(range(1, 65_536))
    image, context = saved[ns(t0 + second)]
    assert image[0].tolist() == [1, 2, 0, 0] and context == {1: "cup", 2: "ball"}
    assert [r.getMessage() for r in caplog.records] == [
        "input 'masks': 70000 masks in one answer, over the 65535 classes of rerun's segmentation image: the "
        "first 65535 are drawn"]


def test_messages_stamped_outside_rerun_timeline_are_one_line_per_input_and_not_drawn(recorded, caplog):
    """rerun's timeline holds nanoseconds since 1970 in an int64 (less its lowest value): 1677-09-21
    00:12:43.145224193 to 2262-04-11 23:47:16.854775807. dora carries a datetime of any year."""
    from dora_sam2.rerun_viewer import MaskLogger

    rr, rrd = recorded
    logger = MaskLogger(rr)
    utc = timezone.utc
    first, last = datetime(1677, 9, 21, 0, 12, 43, 145225, utc), datetime(2262, 4, 11, 23, 47, 16, 854775, utc)
    outside = [datetime(1, 1, 1, tzinfo=utc), first - timedelta(microseconds=1), last + timedelta(microseconds=1),
               datetime(9999, 12, 31, 23, 59, 59, tzinfo=utc)]
    box = {"type": "INPUT", "id": "bbox", "value": pa.array(np.array([1, 1, 3, 3], np.float32))}
    t0 = datetime(2026, 1, 1, tzinfo=utc)
    with caplog.at_level("WARNING", logger="dora_sam2.rerun"):
        for at in [*outside, first, last, t0]:
            logger.on_input(frame_event(at))
            logger.on_input(answer_event(columns(1), at))
            logger.on_input({**box, "metadata": {"timestamp": at}})
    rr.disconnect()
    assert sorted(segmentation_images(rrd)) == [ns(first), ns(t0), ns(last)]
    assert entity_times(rrd, "/image/detections") == [ns(first), ns(t0), ns(last)]
    assert entity_times(rrd, "/image/image") == [ns(first), ns(t0), ns(last)]
    assert sorted(r.getMessage() for r in caplog.records) == [  # the first of each input; the rest held back
        f"input '{name}': stamped 0001-01-01T00:00:00+00:00, outside the times rerun's timeline holds "
        "(1677-09-21 to 2262-04-11 UTC): not drawn" for name in ("bbox", "image", "masks")]
