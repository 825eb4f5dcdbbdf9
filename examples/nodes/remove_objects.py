"""Object removal (the seed's application): paints the segmented objects out of the frame.

Inputs `image` (the camera) and `mask` (dora-sam2); output `image`, the inpainted frame (bgr8).
"""

import cv2
import numpy as np
import pyarrow as pa
from dora import Node

from dora_sam2.masks import RecentFrames, decode_masks, inpaint_mask


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
            continue  # its frame is no longer kept
        masks = decode_masks(event)
        result = cv2.inpaint(np.ascontiguousarray(frame), inpaint_mask(masks, grow=3), 3, cv2.INPAINT_TELEA)
        metadata = {k: event["metadata"][k] for k in ("width", "height", "timestamp")}
        node.send_output("image", pa.array(result.ravel()), dict(metadata, encoding="bgr8", primitive="image"))


if __name__ == "__main__":
    main()
