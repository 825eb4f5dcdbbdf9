"""Which camera a prompt is for, and what of it can be answered on that camera's frame."""

from __future__ import annotations

import logging

import numpy as np

from .domain import Frame, InputError, Prompt
from .throttle import Throttle

log = logging.getLogger("dora_sam2")


def on_frame(prompt: Prompt, frame: Frame, say: Throttle | None = None) -> Prompt:
    """The prompt as it can be answered on `frame`: a box wholly outside it is dropped, in one line (per
    input every 10 s, through `say`: a detector may send such a box on every frame)."""
    outside = prompt.boxes_outside(frame.width, frame.height)
    if not outside.any():
        return prompt
    boxes = [prompt.points[i].ravel().round(1).tolist() for i in np.flatnonzero(outside)]
    shown = (f"box {boxes[0]} lies" if len(boxes) == 1 else f"boxes {boxes} lie" if len(boxes) <= 3
             else f"{len(boxes)} boxes ({boxes[:3]}, ...) lie")
    (say or Throttle(log)).warning(f"{prompt.input_id} outside", "input '%s': %s wholly outside the %dx%d frame: dropped",
                                   prompt.input_id, shown, frame.width, frame.height)
    return prompt.keep(~outside)


def camera_of(prompt: Prompt, cameras, seen) -> str:
    """The camera a prompt belongs to: the one its `image_id` names, else the default camera. `cameras`
    lists the dataflow's camera inputs, default first; dora 0.5 does not say, and then the default is the
    first camera `seen`."""
    if prompt.image_id is not None:
        if cameras and prompt.image_id not in cameras:
            raise InputError(prompt.input_id, f"image_id {prompt.image_id[:60]!r} names no camera input "
                                              f"(cameras: {', '.join(cameras)})")
        return prompt.image_id
    camera = cameras[0] if cameras else next(iter(seen), None)
    if camera is None:
        raise InputError(prompt.input_id, "prompt arrived before any image; it is dropped")
    return camera
