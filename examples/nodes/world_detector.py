"""A perfect detector for a clip of the synthetic world (`dora-sam2-world`): it sees every object that is
mostly visible, in the clip's ground truth, and sends `bbox` exactly as dora-yolo does (see
fixed_detector.py). It stands in for a detector whose boxes are right, so what the masks and the ids do
between its rounds is SAM 2's and the tracker's alone.

Env: TRUTH (the world's annotations.json), CLIP (which clip, default the first), EVERY (detect on every
Nth image, default 10: a detector slower than the camera), MIN_VISIBILITY (default 0.5). The nth image
received is the clip's frame n (the camera plays the clip's video from its start); boxes are scaled to
the image's size when the camera resizes.
"""

import json
import os
from collections import defaultdict

import pyarrow as pa

from dora_sam2.joining import join_dataflow

BOXES = pa.struct([("bbox", pa.list_(pa.float32())), ("conf", pa.list_(pa.float32())),
                   ("labels", pa.list_(pa.string()))])


def truth(path: str, clip: str | None) -> tuple[dict[int, list], tuple[int, int]]:
    """frame index -> [(x1, y1, x2, y2, label, visibility)], and the clip's (width, height)."""
    with open(path) as file:
        data = json.load(file)
    clip = clip or data["images"][0]["camera"]
    images = {i["id"]: i for i in data["images"] if i["camera"] == clip}
    if not images:
        raise SystemExit(f"ERROR world_detector: CLIP={clip} is not in {path}: set CLIP to one of its cameras.")
    names = {c["id"]: c["name"] for c in data["categories"]}
    frames = defaultdict(list)
    for a in data["annotations"]:
        image = images.get(a["image_id"])
        if image is not None and a["area"] > 0:
            x, y, w, h = a["bbox"]
            frames[image["frame"]].append((x, y, x + w, y + h, names[a["category_id"]], a.get("visibility", 1.0)))
    first = next(iter(images.values()))
    return frames, (first["width"], first["height"])


def main():
    frames, (width, height) = truth(os.environ["TRUTH"], os.environ.get("CLIP"))
    every, least = int(os.environ.get("EVERY", "10")), float(os.environ.get("MIN_VISIBILITY", "0.5"))
    node = join_dataflow()
    seen = 0
    for event in node:
        if event["type"] != "INPUT":
            continue
        index, seen = seen, seen + 1
        if index % every:
            continue
        sx = int(event["metadata"].get("width", width)) / width
        sy = int(event["metadata"].get("height", height)) / height
        chosen = [b for b in frames.get(index, []) if b[5] >= least]
        value = pa.array([{"bbox": [v for b in chosen for v in (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)],
                           "conf": [0.9] * len(chosen), "labels": [b[4] for b in chosen]}], type=BOXES)
        node.send_output("bbox", value, dict(event["metadata"], format="xyxy", primitive="boxes2d"))


if __name__ == "__main__":
    main()
