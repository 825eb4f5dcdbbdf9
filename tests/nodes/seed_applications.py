# The seed's "Object Removal" and "Object Extraction" snippets, verbatim, on dora-sam2's `mask` (read as
# the seed's consumer code reads it) and the camera frame that mask was computed on. Sends `removed` and
# `extracted` (bgr8) with the frame's timestamp.
import cv2
import numpy as np
import pyarrow as pa
from dora import Node

from dora_sam2.masks import RecentFrames

node = Node()
frames = RecentFrames()

for event in node:
    if event["type"] != "INPUT":
        continue
    if event["id"] == "image":
        frames.add(event)
        continue
    metadata = event["metadata"]
    width = int(metadata["width"])
    height = int(metadata["height"])
    mask = event["value"].to_numpy().reshape((height, width))
    image = frames.find(metadata.get("timestamp"))
    if image is None:
        continue
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
