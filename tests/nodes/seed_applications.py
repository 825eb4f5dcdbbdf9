# The seed's "Object Removal" and "Object Extraction" snippets, verbatim, on dora-sam2's `mask` (read as
# the seed's consumer code reads it) and the camera frame that mask was computed on. Sends `removed` and
# `extracted` (bgr8) with the frame's timestamp.
import cv2
import numpy as np
import pyarrow as pa
from dora import Node

from dora_sam2.masks import masks_with_frames


def seed_read(event):  # as the seed's consumer code reads `mask`
    metadata = event["metadata"]
    return event["value"].to_numpy().reshape((int(metadata["height"]), int(metadata["width"])))


node = Node()

for image, mask, metadata in masks_with_frames(node, decode=seed_read):
    width, height = mask.shape[1], mask.shape[0]
    image = np.ascontiguousarray(image)

    # Create inpainting mask from segmentation
    inpaint_mask = (mask * 255).astype(np.uint8)
    result = cv2.inpaint(image, inpaint_mask, 3, cv2.INPAINT_TELEA)

    # Extract object from background
    object_only = image.copy()
    object_only[mask == 0] = 0  # Black background

    out = {"width": width, "height": height, "encoding": "bgr8", "timestamp": metadata["timestamp"]}
    node.send_output("removed", pa.array(result.ravel()), out)
    node.send_output("extracted", pa.array(object_only.ravel()), out)
