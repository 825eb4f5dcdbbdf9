"""Object removal (the seed's application): paints the segmented objects out of the frame.

Inputs `image` (the camera, bgr8) and `mask` (dora-sam2's union of the objects); output `image`, the
inpainted frame (bgr8).
"""

import cv2
import numpy as np
import pyarrow as pa

from dora_sam2.joining import join_dataflow
from dora_sam2.masks import inpaint_mask, masks_with_frames


def remove(frame: np.ndarray, union: np.ndarray) -> np.ndarray:
    """The frame with the objects painted over from their surroundings (grown 3 pixels to cover edges)."""
    return cv2.inpaint(np.ascontiguousarray(frame), inpaint_mask(union, grow=3), 3, cv2.INPAINT_TELEA)


def main():
    node = join_dataflow()
    for frame, union, metadata in masks_with_frames(node):
        out = {k: metadata[k] for k in ("width", "height", "timestamp")}
        node.send_output("image", pa.array(remove(frame, union).ravel()), dict(out, encoding="bgr8", primitive="image"))


if __name__ == "__main__":
    main()
