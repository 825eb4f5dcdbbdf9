"""The seed's `click_handler.py`: turns clicks into SAM2 `points` messages.

Here the "user" is scripted (env POINTS: JSON [[x, y, label], ...], label 1 = left click / foreground,
0 = right click / background), sent once a second on the newest frame's timestamp, so the example runs
anywhere. Replace `clicks()` with your UI's events.
"""

import json
import os

import numpy as np
import pyarrow as pa
from dora import Node


def clicks():
    return json.loads(os.environ.get("POINTS", "[[320, 240, 1], [40, 40, 0]]"))


def main():
    node, newest_frame, ticks = Node(), None, 0
    for event in node:
        if event["type"] != "INPUT":
            continue
        if event["id"] == "image":
            newest_frame = event["metadata"]
        elif event["id"] == "tick" and newest_frame is not None:
            ticks += 1
            if ticks % 10:
                continue
            points = clicks()
            metadata = {"labels": [int(p[2]) for p in points]}
            if "timestamp" in newest_frame:  # names the exact frame the user saw (dora 1.x)
                metadata["timestamp"] = newest_frame["timestamp"]
            node.send_output("points", pa.array(np.array([p[:2] for p in points], np.float32).ravel()), metadata)


if __name__ == "__main__":
    main()
