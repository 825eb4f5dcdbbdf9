"""A camera for demos and tests: plays VIDEO (a file) to its end, else FRAMES frames of a synthetic scene.

Sends `image` exactly as opencv-video-capture does (flat UInt8, encoding/width/height metadata). Unlike it,
it ends cleanly at the end of a file, so a dataflow on a clip finishes on its own; it stops on STOP too.
Paced at FPS, or, with a `tick` input, by whoever ticks it: the node at the end of the line sends a tick
for each frame it is done with, and the camera keeps at most AHEAD frames (default 1) not yet ticked
for. That is backpressure from the end of the dataflow to its start, so no node between them holds more
than AHEAD frames, whatever the model's speed (dora's own `queue_policy: backpressure` never makes a
sender wait: it keeps every message, in memory). With a tick input, FPS (unset by default there) is a
stall guard: after 1/FPS s without a tick the next frame goes anyway.
Env: VIDEO, FRAMES (the synthetic scene's length, default 10; with VIDEO, the most frames to play, default
all of them), FPS, AHEAD, WIDTH, HEIGHT, ENCODING (bgr8 | rgb8 | jpeg), OUTPUT (output id, default image).
"""

import os
import time

import cv2
import numpy as np
import pyarrow as pa

from dora_sam2.joining import join_dataflow


def synthetic(frames: int, width: int, height: int):
    """A red block sliding right and a green disc, on a grey gradient (texture enough that painting a
    region over changes it)."""
    ys, xs = np.mgrid[0:height, 0:width]
    background = (40 + 150 * (xs + ys) / (width + height)).astype(np.uint8)
    for index in range(frames):
        image = np.repeat(background[..., None], 3, axis=2)
        x = (index * 7) % max(width // 2, 1)
        cv2.rectangle(image, (x + 20, height // 4), (x + width // 4, height // 2), (0, 0, 220), -1)
        cv2.circle(image, (width * 3 // 4, height * 2 // 3), min(width, height) // 8, (0, 200, 0), -1)
        yield image


def video(path: str, size: tuple[int, int] | None, count: int | None = None):
    """The file's frames (the first `count`), at their own size unless WIDTH and HEIGHT ask for another."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"ERROR camera: cannot open VIDEO={path}: set VIDEO to a video file OpenCV can read.")
    for _ in range(count) if count is not None else iter(int, 1):
        ok, image = capture.read()
        if not ok:
            return
        yield cv2.resize(image, size) if size else image


def encode(bgr: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "jpeg":
        return cv2.imencode(".jpg", bgr)[1].ravel()
    if encoding == "rgb8":
        return bgr[..., ::-1].ravel()
    return bgr.ravel()


def main():
    size = (int(os.environ["WIDTH"]), int(os.environ["HEIGHT"])) if os.environ.get("WIDTH") else None
    encoding, output, path = os.environ.get("ENCODING", "bgr8"), os.environ.get("OUTPUT", "image"), os.environ.get("VIDEO")
    count = int(os.environ["FRAMES"]) if os.environ.get("FRAMES") else None
    frames = video(path, size, count) if path else synthetic(count or 10, *(size or (640, 480)))
    node = join_dataflow()
    ticked = "tick" in node_inputs(node)
    fps = os.environ.get("FPS") or ("" if ticked else "5")
    pace = Pace(node, 1.0 / float(fps) if fps else None, int(os.environ.get("AHEAD", "1")) if ticked else 0)
    for bgr in frames:
        if not pace.next_frame_due():
            return
        height, width = bgr.shape[:2]
        metadata = {"encoding": encoding, "width": width, "height": height, "primitive": "image"}
        node.send_output(output, pa.array(encode(bgr, encoding)), metadata)


class Pace:
    """When the next frame is due: with ticks, while fewer than `ahead` frames await theirs (or after
    `period` without one); without, every `period`."""

    def __init__(self, node, period: float | None, ahead: int):
        self.node, self.period, self.ahead = node, period, ahead
        self.sent = self.ticks = 0
        self.last = None

    def next_frame_due(self) -> bool:
        """False on STOP (or when the ticks end while frames still await them)."""
        if self.ahead:
            while self.sent - self.ticks >= self.ahead:
                outcome = self._event(self.period)
                if outcome is None:
                    return False
                if outcome == "timeout":
                    break
        elif self.last is not None:
            while (wait := self.last + self.period - time.monotonic()) > 0:
                if self._event(wait) is None:
                    return False
        self.sent += 1
        self.last = time.monotonic()
        return True

    def _event(self, timeout: float | None):
        """One event: "tick", "timeout", "other", or None when the camera should stop."""
        event = self.node.next(timeout=timeout) if timeout else self.node.next()
        if event is None or event["type"] == "STOP":
            return None
        if event["type"] == "INPUT_CLOSED" and event.get("id") == "tick":
            return None
        if event["type"] == "INPUT" and event["id"] == "tick":
            self.ticks += 1
            return "tick"
        if event["type"] == "ERROR":  # dora 1.x: the timeout expired
            return "timeout"
        return "other"


def node_inputs(node) -> list[str]:
    try:
        return list(node.node_config().get("inputs", {}))
    except AttributeError:  # dora 0.5
        return []


if __name__ == "__main__":
    main()
