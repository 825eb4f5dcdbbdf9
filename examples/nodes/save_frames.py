"""Saves each `image` it gets (bgr8 or rgb8) as OUT_DIR/frame_NNNN.png, and OUT_DIR/overlay.mp4 at the end."""

import os
from pathlib import Path

import cv2
import numpy as np

from dora_sam2.joining import join_dataflow


def main():
    out = Path(os.environ.get("OUT_DIR", "out/demo"))
    out.mkdir(parents=True, exist_ok=True)
    fps = float(os.environ.get("FPS", "5"))
    writer, count = None, 0
    for event in join_dataflow():
        if event["type"] != "INPUT":
            continue
        meta = event["metadata"]
        image = event["value"].to_numpy().reshape(int(meta["height"]), int(meta["width"]), 3)
        bgr = image[..., ::-1] if meta.get("encoding") == "rgb8" else image
        bgr = np.ascontiguousarray(bgr)
        cv2.imwrite(str(out / f"frame_{count:04d}.png"), bgr)
        if writer is None:
            writer = cv2.VideoWriter(str(out / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                     (bgr.shape[1], bgr.shape[0]))
        writer.write(bgr)
        count += 1
    if writer is not None:
        writer.release()
    print(f"saved {count} annotated frames and overlay.mp4 in {out}" if count else "saved nothing: no frame came")


if __name__ == "__main__":
    main()
