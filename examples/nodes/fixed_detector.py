"""A detector that always sees the same boxes: a stand-in for dora-yolo 0.5.0, sending `bbox` exactly as it does.

A length-1 struct (bbox: list<float32> flattened, conf: list<float32>, labels: list<string>), the image's
metadata passed through (encoding, width, height and, in dora 1.x, its timestamp) plus `format` and
`primitive: boxes2d`. Env BOXES: JSON list of [x1, y1, x2, y2, label]; FORMAT xyxy | xywh;
EMPTY_EVERY: every Nth image gets an empty detection (0 = never); EVERY: answer every Nth image only (0 =
none: a detector that never speaks); COUNTS: comma-separated numbers of boxes to send in turn (the first N
of BOXES), e.g. "0,1,3"; FIRST_DELAY: seconds to wait before the first answer (a detector slower to start
than the tracker), its images queueing meanwhile.
"""

import json
import os
import time

import numpy as np
import pyarrow as pa

from dora_sam2.joining import join_dataflow


def read_boxes(text: str) -> list:
    """BOXES as [[x1, y1, x2, y2, label], ...]; anything else stops the node with one sentence."""
    try:
        boxes = json.loads(text)
    except json.JSONDecodeError:
        boxes = None
    if not isinstance(boxes, list) or not all(is_box(box) for box in boxes):
        shown = text if len(text) <= 100 else text[:100] + "..."
        raise SystemExit(f"ERROR fixed_detector: BOXES={shown} is not a JSON list of [x1, y1, x2, y2, \"label\"]: "
                         "fix BOXES (or unset it for the default boxes).")
    return boxes


def is_box(box) -> bool:
    numbers = isinstance(box, list) and len(box) == 5 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in box[:4])
    return numbers and isinstance(box[4], str)


def main():
    boxes = read_boxes(os.environ.get("BOXES", "[[100, 100, 300, 300, \"cup\"]]"))
    fmt = os.environ.get("FORMAT", "xyxy")
    empty_every, every = int(os.environ.get("EMPTY_EVERY", "0")), int(os.environ.get("EVERY", "1"))
    counts = [int(n) for n in os.environ.get("COUNTS", "").split(",") if n.strip()]
    first_delay = float(os.environ.get("FIRST_DELAY", "0"))
    node = join_dataflow()
    seen = 0
    for event in node:
        if event["type"] != "INPUT":
            continue
        seen += 1
        if not every or (seen - 1) % every:
            continue
        if seen == 1:
            time.sleep(first_delay)
        chosen = [] if empty_every and seen % empty_every == 0 else boxes
        if counts:
            chosen = boxes[: counts[(seen - 1) // every % len(counts)]]
        coords = np.array([b[:4] for b in chosen], np.float32).reshape(-1, 4)
        if fmt == "xywh":
            coords = np.concatenate([(coords[:, :2] + coords[:, 2:]) / 2, coords[:, 2:] - coords[:, :2]], axis=1)
        value = pa.array([{
            "bbox": coords.ravel().tolist(),
            "conf": [0.9] * len(chosen),
            "labels": [b[4] for b in chosen],
        }], type=pa.struct([("bbox", pa.list_(pa.float32())), ("conf", pa.list_(pa.float32())),
                            ("labels", pa.list_(pa.string()))]))
        metadata = dict(event["metadata"], format=fmt, primitive="boxes2d")
        node.send_output("bbox", value, metadata)


if __name__ == "__main__":
    main()
