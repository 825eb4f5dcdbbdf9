"""Object extraction (the seed's application): the segmented objects on a black background.

Inputs `image` (the camera, bgr8) and `mask` (dora-sam2's union of the objects); output `image` (bgr8).
"""

import pyarrow as pa

from dora_sam2.joining import join_dataflow
from dora_sam2.masks import extract, masks_with_frames


def main():
    node = join_dataflow()
    for frame, union, metadata in masks_with_frames(node):
        out = {k: metadata[k] for k in ("width", "height", "timestamp")}
        node.send_output("image", pa.array(extract(frame, union).ravel()), dict(out, encoding="bgr8", primitive="image"))


if __name__ == "__main__":
    main()
