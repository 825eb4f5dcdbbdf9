"""Sends FRAMES frames, then dies with an error, as a camera whose USB cable is pulled."""

import os
import time

import numpy as np
import pyarrow as pa
from dora import Node


def main():
    node = Node()
    for i in range(int(os.environ.get("FRAMES", "3"))):
        node.send_output("image", pa.array(np.full(64 * 48 * 3, 40 * i, np.uint8)),
                         {"encoding": "bgr8", "width": 64, "height": 48})
        time.sleep(0.2)
    raise RuntimeError("camera unplugged")


if __name__ == "__main__":
    main()
