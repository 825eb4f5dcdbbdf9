"""Collision detection (the seed's application): which segmented objects overlap.

Input `masks` (dora-sam2's per-object masks); output `collisions`: flat pairs i, j (Int64, indices into
the objects of the message),
with metadata `labels` as pairs of the objects' labels, and the frame's `timestamp`.
"""

import numpy as np
import pyarrow as pa

from dora_sam2.joining import join_dataflow
from dora_sam2.masks import colliding_pairs, decode_masks


def main():
    node = join_dataflow()
    for event in node:
        if event["type"] != "INPUT" or event["id"] != "masks":
            continue
        labels = event["metadata"].get("labels", [])
        pairs = colliding_pairs(decode_masks(event))
        for i, j in pairs:
            print(f"Objects are colliding: {i} ({labels[i] if i < len(labels) else ''}) and "
                  f"{j} ({labels[j] if j < len(labels) else ''})")
        metadata = {"timestamp": event["metadata"]["timestamp"],
                    "labels": [f"{labels[i]}|{labels[j]}" for i, j in pairs] if labels else []}
        node.send_output("collisions", pa.array(np.array(pairs, np.int64).reshape(-1)), metadata)


if __name__ == "__main__":
    main()
