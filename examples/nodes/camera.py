"""A camera for demos and tests: plays VIDEO (a file) to its end, else FRAMES frames of a synthetic scene.

Sends `image` exactly as opencv-video-capture does (flat UInt8, encoding/width/height metadata): one
frame per `tick` input when it has one (like opencv-video-capture; the first at once, so a node
answering the frames can pace it), else at FPS. Unlike it, it ends
cleanly at the end of a file, so a dataflow on a clip finishes on its own; it stops on STOP too.
Env: VIDEO, FRAMES (synthetic scene length), FPS, WIDTH, HEIGHT, ENCODING (bgr8 | rgb8 | jpeg),
OUTPUT (output id, default image).
"""

import os

import cv2
import numpy as np
import pyarrow as pa
from dora import Node


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


def video(path: str, size: tuple[int, int] | None):
    """The file's frames, at their own size unless WIDTH and HEIGHT ask for another."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"camera: cannot open VIDEO={path}")
    while True:
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
    fps, encoding = float(os.environ.get("FPS", "5")), os.environ.get("ENCODING", "bgr8")
    output, path = os.environ.get("OUTPUT", "image"), os.environ.get("VIDEO")
    frames = video(path, size) if path else synthetic(int(os.environ.get("FRAMES", "10")), *(size or (640, 480)))
    node = Node()
    for index, bgr in enumerate(frames):
        if index and not wait_for_tick(node, 1.0 / fps):  # the first at once: a tick may answer it
            return
        height, width = bgr.shape[:2]
        metadata = {"encoding": encoding, "width": width, "height": height, "primitive": "image"}
        node.send_output(output, pa.array(encode(bgr, encoding)), metadata)


def wait_for_tick(node, period: float) -> bool:
    """True when the next frame is due: on a `tick` input, else after `period`. False on STOP."""
    event = node.next(timeout=period)
    while event is not None:
        if event["type"] == "STOP" or (event["type"] == "INPUT_CLOSED" and event.get("id") == "tick"):
            return False
        if event["type"] == "INPUT" and event["id"] == "tick":
            return True
        if event["type"] == "ERROR":  # dora 1.x: the timeout expired, no tick input is wired
            return True
        event = node.next(timeout=period)
    return False


if __name__ == "__main__":
    main()
