"""Synthetic camera: FRAMES frames of coloured rectangles on grey at FPS, like opencv-video-capture's output.

Env: FRAMES, FPS, WIDTH, HEIGHT, ENCODING (bgr8 | rgb8 | jpeg), OUTPUT (output id, default image).
"""

import os
import time

import cv2
import numpy as np
import pyarrow as pa
from dora import Node


def scene(index: int, width: int, height: int) -> np.ndarray:
    image = np.full((height, width, 3), 96, np.uint8)
    x = (index * 7) % max(width // 2, 1)
    cv2.rectangle(image, (x + 20, height // 4), (x + width // 4, height // 2), (0, 0, 220), -1)
    cv2.circle(image, (width * 3 // 4, height * 2 // 3), min(width, height) // 8, (0, 200, 0), -1)
    return image


def main():
    frames, fps = int(os.environ.get("FRAMES", "10")), float(os.environ.get("FPS", "5"))
    width, height = int(os.environ.get("WIDTH", "640")), int(os.environ.get("HEIGHT", "480"))
    encoding, output = os.environ.get("ENCODING", "bgr8"), os.environ.get("OUTPUT", "image")
    node = Node()
    for index in range(frames):
        bgr = scene(index, width, height)
        if encoding == "jpeg":
            data = cv2.imencode(".jpg", bgr)[1].ravel()
        elif encoding == "rgb8":
            data = bgr[..., ::-1].ravel()
        else:
            data = bgr.ravel()
        node.send_output(output, pa.array(data), {"encoding": encoding, "width": width, "height": height,
                                                  "primitive": "image"})
        time.sleep(1.0 / fps)


if __name__ == "__main__":
    main()
