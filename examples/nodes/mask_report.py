"""The seed's 'Processing Masks in Custom Node' code, for every object of a message.

With one object per message the seed's code runs unchanged on our `mask` output; this version also reads
messages holding N objects, as a detector with several boxes produces.
"""

import numpy as np
from dora import Node


def main():
    for event in Node():
        if event["type"] != "INPUT" or event["id"] != "mask":
            continue
        metadata = event["metadata"]
        width, height = int(metadata["width"]), int(metadata["height"])
        masks = event["value"].to_numpy().reshape((-1, height, width))
        for mask, label in zip(masks, metadata.get("labels", [])):
            object_area = np.sum(mask)
            coverage = object_area / (width * height)
            line = f"{label or 'object'} covers {coverage:.1%} of frame"
            if object_area > 0:
                y_coords, x_coords = np.where(mask > 0)
                line += f", centre ({np.mean(x_coords):.0f}, {np.mean(y_coords):.0f})"
            print(line)


if __name__ == "__main__":
    main()
