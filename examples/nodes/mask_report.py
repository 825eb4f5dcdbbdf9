"""The seed's 'Processing Masks in Custom Node' code, for every object of an answer.

The seed's code reads the node's `mask` (the union of the objects, one frame-sized mask); this version
reads `masks`, where each object has its own mask, and reports each one with its label.
"""

import numpy as np

from dora_sam2.joining import join_dataflow
from dora_sam2.masks import decode_masks


def main():
    for event in join_dataflow():
        if event["type"] != "INPUT" or event["id"] != "masks":
            continue
        metadata = event["metadata"]
        masks = decode_masks(event)  # (N, height, width)
        for mask, label in zip(masks, metadata.get("labels", [])):
            object_area = np.sum(mask)
            coverage = object_area / mask.size
            line = f"{label or 'object'} covers {coverage:.1%} of frame"
            if object_area > 0:
                y_coords, x_coords = np.where(mask > 0)
                line += f", centre ({np.mean(x_coords):.0f}, {np.mean(y_coords):.0f})"
            print(line)


if __name__ == "__main__":
    main()
