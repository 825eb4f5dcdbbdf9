# The seed's "Processing Masks in Custom Node" code, verbatim: if this runs, our `mask` output keeps
# the promise made to users.
from dora import Node
import numpy as np
import pyarrow as pa

node = Node()

for event in node:
    if event["type"] == "INPUT":
        if event["id"] == "mask":
            # Get mask data
            metadata = event["metadata"]
            width = int(metadata["width"])
            height = int(metadata["height"])

            # Reshape to 2D
            mask_flat = event["value"].to_numpy()
            mask = mask_flat.reshape((height, width))

            # Calculate object area
            object_area = np.sum(mask)
            total_area = width * height
            coverage = object_area / total_area

            print(f"Object covers {coverage:.1%} of frame")

            # Find object center
            if object_area > 0:
                y_coords, x_coords = np.where(mask > 0)
                center_x = np.mean(x_coords)
                center_y = np.mean(y_coords)
                print(f"Object center: ({center_x:.0f}, {center_y:.0f})")
