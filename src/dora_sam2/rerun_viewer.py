"""`dora-sam2-rerun`: dora-sam2's masks in rerun, on dora 1.x and 0.5.

    inputs:  image, image_* (the cameras; every encoding dora-sam2 reads), mask or masks (dora-sam2's
             answers), optionally bbox / boxes2d (a detector's boxes)
    env:     OPERATING_MODE: SPAWN (a local viewer, its data at RERUN_GRPC_PORT), SAVE (an .rrd file at
             RRD_PATH, default out/<dataflow id>/sam2.rrd), CONNECT (a running viewer at RERUN_ADDR), SERVE (rerun's web
             viewer on BIND, default 127.0.0.1, at RERUN_WEB_PORT, default 9090, its data at
             RERUN_GRPC_PORT, default 9876); FRAME_BUFFER (frames kept per camera, default 30)

Per camera, on a timeline of the frames' own timestamps: the camera image, each answer's masks as one
segmentation image (class = track id in track mode, else 1 + the mask's index; where masks overlap the
later one shows) with an annotation context that names and colours each class as the overlay does,
the masks' boxes with their labels and scores, and scalars (objects, answer latency). Each mask message
is matched to the frame it was computed on by its timestamp, as `masks_with_frames` does; one that
dora delivers before its frame waits for it.

rerun holds less than a message can carry: class ids are uint16 (`CLASS_IDS`, `class_ids` maps track ids
into them) and its timeline is nanoseconds in an int64 (`TIMELINE`). Each message is held to both where
it comes in, so no message reaches rerun with what it would refuse.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from . import codecs
from .domain import Frame, InputError, Masks
from .geometry import mask_boxes
from .joining import join_dataflow
from .node_loop import dataflow_id, inputs, or_exit, require, start_logging
from .overlay import colours
from .settings import ConfigError, Limits, int_setting
from .throttle import Throttle
from .timeline import AnswersOnFrames

log = logging.getLogger("dora_sam2.rerun")

MODES = ("SPAWN", "SAVE", "CONNECT", "SERVE")

# rerun's class ids are uint16 and 0 is "no mask": the classes one answer can draw, so its masks too
CLASS_IDS = 65_535
# rerun's timeline holds nanoseconds since the epoch in an int64, less its lowest value, which rerun keeps
# for static data (measured, rerun-sdk 0.41: int64's least is stored as the next one; past either end the
# SDK raises OverflowError): 1677-09-21 00:12:43.145224193 to 2262-04-11 23:47:16.854775807 UTC
TIMELINE = range(-(2**63) + 1, 2**63)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class MaskLogger:
    """Frames and answers in, rerun entities out. `rr` is the rerun module, its recording already set up."""

    def __init__(self, rr, frame_buffer: int = 30, limits: Limits = Limits()):
        self.rr = rr
        self.limits = limits
        self._pairs: AnswersOnFrames[Frame, tuple[str, Masks, int]] = AnswersOnFrames(
            frame_buffer, limits.max_waiting, limits.max_cameras)
        self._cameras: dict[str, None] = {}  # in the order first seen
        self._said = Throttle(log)
        self._noted = Throttle(log, seconds=math.inf)  # what is normal on a long run: said once
        self._sequence = 0

    def on_input(self, event) -> None:
        """One dora INPUT event, as the node's loop hands it over: a camera's frame, an answer, or a
        detector's boxes, by its input id (others are not this node's). A bad one is one line."""
        input_id = event["id"]
        if input_id.startswith("image"):
            try:
                frame = codecs.decode_frame(input_id, event["value"], event["metadata"], self.limits)
            except InputError as error:
                return self.say(input_id, str(error))
            self.frame(frame)
        elif input_id in ("mask", "masks"):
            self.answer(input_id, event)
        elif input_id in ("bbox", "boxes2d"):
            self.detections(input_id, event)

    def frame(self, frame: Frame) -> None:
        if not self._on_timeline(frame.image_id, frame.timestamp):
            return
        if frame.image_id not in self._cameras and len(self._cameras) >= self.limits.max_cameras:
            return self.say(frame.image_id, f"input '{frame.image_id}': {len(self._cameras)} cameras are shown "
                                             "already (MAX_CAMERAS): its frames are not")
        self._cameras.setdefault(frame.image_id)
        self._at(frame.timestamp)
        # JPEG in the recording: raw frames made 6 MB a second at 640x480 and 3 fps
        self.rr.log(f"{frame.image_id}/image", self.rr.Image(frame.rgb).compress(jpeg_quality=85))
        self._settle(self._pairs.frame(frame.image_id, frame.timestamp, frame))

    def answer(self, input_id: str, event) -> None:
        """One `mask` or `masks` message, drawn on its frame; a bad one is one line and skipped."""
        try:
            masks = codecs.decode_answer(input_id, event["value"], event["metadata"], self.limits)
        except InputError as error:
            return self.say(input_id, str(error))
        if not self._on_timeline(input_id, masks.timestamp):
            return
        objects = event["metadata"].get("num_masks")  # a union `mask` is one mask for all its objects
        if not isinstance(objects, int) or isinstance(objects, bool) or objects < 0:
            objects = len(masks)
        if len(masks) > CLASS_IDS:  # only where MAX_MASKS is raised past it
            self.say(f"{input_id} classes", f"input '{input_id}': {len(masks)} masks in one answer, over the "
                                            f"{CLASS_IDS} classes of rerun's segmentation image: the first "
                                            f"{CLASS_IDS} are drawn")
            masks = masks[:CLASS_IDS]
        self._settle(self._pairs.answer(masks.image_id, masks.timestamp, (input_id, masks, objects)))

    def _settle(self, pairs) -> None:
        for (input_id, masks, objects), frame in pairs:
            if frame is not None:
                self._draw(input_id, masks, objects, frame)
            else:
                self.say(input_id, f"input '{input_id}': no frame of camera {masks.image_id[:60]!r} is kept or "
                                    f"came for the answer at {masks.timestamp}; wire that camera to this node too")

    def _draw(self, input_id: str, masks: Masks, objects: int, frame: Frame) -> None:
        if (masks.width, masks.height) != (frame.width, frame.height):
            return self.say(input_id, f"input '{input_id}': masks of {masks.width}x{masks.height} for a "
                                       f"{frame.width}x{frame.height} frame")
        self._at(frame.timestamp)
        self._log_masks(input_id, masks)
        self.rr.log(f"{masks.image_id}/objects", self.rr.Scalars([objects]))
        if frame.timestamp is not None:
            latency_ms = (datetime.now(timezone.utc) - frame.timestamp).total_seconds() * 1e3
            self.rr.log(f"{masks.image_id}/latency_ms", self.rr.Scalars([latency_ms]))

    def detections(self, input_id: str, event) -> None:
        try:
            prompt = codecs.decode_boxes(input_id, event["value"], event["metadata"], self.limits)
        except InputError as error:
            return self.say(input_id, str(error))
        if not self._on_timeline(input_id, prompt.timestamp):
            return
        self._at(prompt.timestamp)
        # drawn on a camera this node shows: an entity per image_id a sender makes up would grow rerun's store
        camera = prompt.image_id if prompt.image_id in self._cameras else next(iter(self._cameras), "image")
        self.rr.log(f"{camera}/detections",
                    self.rr.Boxes2D(array=prompt.points.reshape(-1, 4), array_format=self.rr.Box2DFormat.XYXY,
                                    labels=list(prompt.class_names)))

    def _log_masks(self, input_id: str, masks: Masks) -> None:
        """One segmentation image: a class per mask (`class_ids`); where masks overlap the later one
        shows, as on the overlay. Labels and colours are the overlay's."""
        rr, camera = self.rr, masks.image_id
        classes = class_ids(masks)
        outside = [t for t in masks.track_ids or () if not 1 <= t <= CLASS_IDS]
        if outside:
            self._noted.log(logging.INFO, f"{input_id} track ids", "input '%s': track id %s is outside rerun's "
                            "class ids (1 to %d): such ids are drawn as classes folded into that range, their "
                            "labels keep the ids (said once)", input_id, _shown_id(outside[0]), CLASS_IDS)
        segmentation = np.zeros((masks.height, masks.width), np.uint16)
        for mask, class_id in zip(masks.masks, classes):
            segmentation[mask] = class_id
        names = [caption or f"object {c}" for c, caption in zip(classes, masks.captions())]
        rr.log(camera, rr.AnnotationContext([(c, n, tuple(int(v) for v in colour))
                                             for c, n, colour in zip(classes, names, colours(masks))]))
        rr.log(f"{camera}/masks", rr.SegmentationImage(segmentation))
        boxes = mask_boxes(masks.masks)
        seen = ~np.isnan(boxes).any(axis=1)
        rr.log(f"{camera}/boxes", rr.Boxes2D(array=boxes[seen], array_format=rr.Box2DFormat.XYXY,
                                             class_ids=np.asarray(classes, int)[seen],
                                             labels=[c for c, s in zip(masks.captions(scores=True), seen) if s]))

    def _on_timeline(self, input_id: str, timestamp: datetime | None) -> bool:
        """False, and one line, for a message stamped where rerun's timeline cannot place it."""
        if timestamp is None or nanoseconds(timestamp) in TIMELINE:
            return True
        self.say(f"{input_id} time", f"input '{input_id}': stamped {timestamp.isoformat()}, outside the times "
                                     "rerun's timeline holds (1677-09-21 to 2262-04-11 UTC): not drawn")
        return False

    def _at(self, timestamp: datetime | None) -> None:
        """The frames' own time when dora gives one (1.x), else the order of arrival (dora 0.5)."""
        if timestamp is not None:  # to the nanosecond dora carries: rerun's own conversion goes through a float
            self.rr.set_time("frame_time", timestamp=np.datetime64(nanoseconds(timestamp), "ns"))
        else:
            self._sequence += 1
            self.rr.set_time("frame", sequence=self._sequence)

    def say(self, kind: str, message: str) -> None:
        """One line per kind (an input id, or one of its problems) every 10 s: a flood of bad messages is
        not a flood of lines."""
        self._said.warning(kind, "%s", message)


def class_ids(masks: Masks) -> list[int]:
    """A class per mask, each its own, from 1 to CLASS_IDS: 1 + the mask's index, or in track mode its track
    id. A track id outside that range (the tracker's counter past 65,535 on a long run; a sender's 0,
    negative or huge id) is folded into it, 1 + (id - 1) mod CLASS_IDS, so it keeps its class from answer
    to answer. Where a mask would share a class with another of its answer (a folded id meeting one in
    range, or the same id twice), the id in range, else the earlier mask, keeps it and the other takes
    the lowest class free. `masks` holds at most CLASS_IDS masks."""
    if masks.track_ids is None:
        return list(range(1, len(masks) + 1))
    wanted = [1 + (t - 1) % CLASS_IDS for t in masks.track_ids]
    in_range_first = sorted(range(len(wanted)), key=lambda i: not 1 <= masks.track_ids[i] <= CLASS_IDS)
    classes, taken, crowded = [0] * len(wanted), set(), []
    for i in in_range_first:
        if wanted[i] in taken:
            crowded.append(i)
        else:
            classes[i] = wanted[i]
            taken.add(wanted[i])
    free = (c for c in range(1, CLASS_IDS + 1) if c not in taken)
    for i in sorted(crowded):
        classes[i] = next(free)
    return classes


def nanoseconds(timestamp: datetime) -> int:
    """A timezone-aware time as nanoseconds since the epoch, exact to its microsecond, of any year."""
    return (timestamp - EPOCH) // timedelta(microseconds=1) * 1000


def _shown_id(track_id: int) -> str:
    """A sender's id as a log line may quote it: one past int64 (which dora does not carry) by its size."""
    return str(track_id) if -(2**63) <= track_id < 2**63 else f"of {track_id.bit_length()} bits"


def start_recording(rr, mode: str, dataflow_id: str, env=os.environ) -> str:
    """The rerun sink OPERATING_MODE asks for; returns what to tell the user."""
    rr.init("dora-sam2", spawn=False)
    grpc_port = _port(env, "RERUN_GRPC_PORT", 9876)
    if mode == "SPAWN":
        _spawn_viewer(grpc_port)
        rr.connect_grpc(f"rerun+http://127.0.0.1:{grpc_port}/proxy")
        return f"a rerun viewer (port {grpc_port})"
    if mode == "SAVE":
        path = Path(env.get("RRD_PATH") or Path("out") / dataflow_id / "sam2.rrd")
        path.parent.mkdir(parents=True, exist_ok=True)
        rr.save(str(path))
        return str(path)
    if mode == "CONNECT":
        address = env.get("RERUN_ADDR", "rerun+http://127.0.0.1:9876/proxy")
        rr.connect_grpc(address)
        return address
    bind = env.get("BIND", "127.0.0.1")
    web_port = _port(env, "RERUN_WEB_PORT", 9090)
    # rerun's Python API serves on every interface; its CLI can bind: the web viewer stays on loopback
    # unless BIND asks for more.
    cli = rerun_binary()
    if cli is None:
        raise ConfigError("OPERATING_MODE=SERVE needs the `rerun` command of rerun-sdk: pip install 'dora-sam2[rerun]'.")
    server = subprocess.Popen([cli, "--serve-web", "--bind", bind, "--port", str(grpc_port),
                               "--web-viewer-port", str(web_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    atexit.register(server.terminate)  # the viewer's server goes when the node goes
    grpc = f"rerun+http://127.0.0.1:{grpc_port}/proxy"
    _wait_for_port(grpc_port, "is another program using it? Set RERUN_GRPC_PORT.")
    rr.connect_grpc(grpc)
    host = "127.0.0.1" if bind in ("127.0.0.1", "0.0.0.0", "::") else bind
    return f"http://{host}:{web_port}/?url={grpc.replace('+', '%2B')}"


def _spawn_viewer(port: int) -> None:
    """A viewer of its own, unless one already listens on `port` (then that one shows the masks, as
    rerun's own spawn does). Unlike `rr.spawn`, the viewer gets none of the node's output pipes: it
    stays open when the dataflow ends, and `dora run` does not wait for it to close."""
    if _listening(port):
        return
    cli = shutil.which("rerun") or rerun_binary()
    if cli is None:
        raise ConfigError("OPERATING_MODE=SPAWN needs the `rerun` command of rerun-sdk: pip install 'dora-sam2[rerun]'.")
    subprocess.Popen([cli, "--port", str(port), "--memory-limit", "75%", "--expect-data-soon"],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, env=dict(os.environ, RERUN_APP_ONLY="true"))
    _wait_for_port(port, "a viewer needs a screen; on a machine without one use OPERATING_MODE=SERVE or SAVE.")


def _port(env, key: str, default: int) -> int:
    return int_setting(env, key, default, minimum=1, maximum=65535, what="a TCP port")


def rerun_binary() -> str | None:
    """rerun-sdk's own binary, not its `rerun` script, which runs it as a child of its own: stopping the
    script would leave the server running."""
    try:
        import rerun_cli
    except ImportError:
        return shutil.which("rerun")
    binary = Path(rerun_cli.__file__).parent / "rerun"
    return str(binary) if binary.exists() else shutil.which("rerun")


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM should the node be killed outright, rather than keep its ports."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, hint: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not _listening(port):
        if time.monotonic() > deadline:
            raise ConfigError(f"rerun did not open port {port} in {seconds:.0f} s: {hint}")
        time.sleep(0.2)


def main() -> None:
    start_logging("dora-sam2-rerun")
    mode = os.environ.get("OPERATING_MODE", "SPAWN").strip().upper()
    rr = require("rerun", log, "dora-sam2-rerun", "rerun-sdk", "rerun")
    node = join_dataflow()  # quietly gone when another node failed the start: its sentence is the one
    limits, frame_buffer, where = or_exit(log, lambda: _recording(rr, mode, node), ConfigError, OSError)
    log.info("masks to %s", where)
    logger = MaskLogger(rr, frame_buffer, limits)
    for event in inputs(node):
        logger.on_input(event)
    recording = rr.get_data_recording()
    if recording is not None:  # rerun batches what is logged: the last answers reach the sink before it closes
        recording.flush(timeout_sec=30)
    rr.disconnect()


def _recording(rr, mode: str, node) -> tuple[Limits, int, str]:
    """The settings (limits, FRAME_BUFFER) and where the recording goes, started as OPERATING_MODE says."""
    if mode not in MODES:
        raise ConfigError(f"OPERATING_MODE={mode!r} is not one of {', '.join(MODES)}.")
    limits, frame_buffer = Limits.from_env(), int_setting(os.environ, "FRAME_BUFFER", 30, minimum=1)
    return limits, frame_buffer, start_recording(rr, mode, dataflow_id(node))


if __name__ == "__main__":
    main()
