"""Object extraction (the seed's application): the segmented objects on a black background.

Inputs `image` (the camera, bgr8) and `mask` (dora-sam2); output `image` (bgr8).
"""

import pyarrow as pa
from dora import Node

from dora_sam2.masks import RecentFrames, decode_masks, extract


def main():
    node, frames = Node(), RecentFrames()
    for event in node:
        if event["type"] != "INPUT":
            continue
        if event["id"] == "image":
            frames.add(event)
            continue
        frame = frames.find(event["metadata"]["timestamp"])
        if frame is None:
            continue
        objects_only = extract(frame, decode_masks(event))
        metadata = {k: event["metadata"][k] for k in ("width", "height", "timestamp")}
        node.send_output("image", pa.array(objects_only.ravel()), dict(metadata, encoding="bgr8", primitive="image"))


if __name__ == "__main__":
    main()
