"""Object removal (the seed's application): paints the segmented objects out of the frame.

Inputs `image` (the camera, bgr8) and `mask` (dora-sam2); output `image`, the inpainted frame (bgr8).
"""

import cv2
import numpy as np
import pyarrow as pa
from dora import Node

from dora_sam2.masks import inpaint_mask, masks_with_frames


def main():
    node = Node()
    for frame, masks, metadata in masks_with_frames(node):
        result = cv2.inpaint(np.ascontiguousarray(frame), inpaint_mask(masks, grow=3), 3, cv2.INPAINT_TELEA)
        out = {k: metadata[k] for k in ("width", "height", "timestamp")}
        node.send_output("image", pa.array(result.ravel()), dict(out, encoding="bgr8", primitive="image"))


if __name__ == "__main__":
    main()
