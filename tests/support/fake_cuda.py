"""What SAM 2's and EdgeTAM's GPU checks (tests/test_cuda.py, tests/test_edgetam_cuda.py) share: segment
mode's decode and the streaming steps the node takes, driven on a model whose tensors are fake `cuda` ones."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from support.dataflows import random_frame

from dora_sam2.domain import Frame, Prompt
from dora_sam2.processing import upsample

WIDTH, HEIGHT = 160, 120


def frame(seed: int = 0) -> Frame:
    return random_frame(seed, WIDTH, HEIGHT)


def on_cuda(*tensors) -> bool:
    return all(t.device.type == "cuda" for t in tensors)


def decode_boxes_and_a_click(backend, embedding) -> None:
    """Segment mode's decode of three boxes, then of a click and a background click, on one encoded
    frame: logits, scores and the masks upsampled to the frame stay on the device, one per object."""
    boxes = Prompt.from_boxes("bbox", np.array([[10, 10, 60, 60], [50, 40, 150, 110], [0, 0, 160, 120]]))
    click = Prompt.from_points("points", np.array([[80, 60], [10, 10]]), [1, 0])
    for prompt in (boxes, click):
        logits, scores, _ = backend.decode(embedding, prompt)
        masks = upsample(logits, WIDTH, HEIGHT)
        assert on_cuda(logits, scores, masks)
        assert masks.shape == (prompt.num_objects, HEIGHT, WIDTH) and scores.shape == (prompt.num_objects,)


def prompt_track_and_prompt_again(streaming, apart: bool = False) -> Iterator[tuple]:
    """Boxes and a click on frame 0, the click's object prompted again on frame 3, the others tracked in
    between and past a full memory window: objects with different memory layouts go through memory
    attention together. Yields each frame's (features, step, remembered), its memories added as the
    node adds them, after checking the encoding and the step stay on the device."""
    memories = [streaming.new_memory() for _ in range(3)]
    boxes = Prompt.from_boxes("bbox", np.array([[10, 10, 60, 60], [50, 40, 150, 110]]))
    click = Prompt.from_points("points", np.array([[80, 60]]), [1])
    for index in range(streaming.num_maskmem + 3):
        features = streaming.encode(frame(index))
        assert on_cuda(features.image, features.position, *features.high_res)
        if index == 0:
            steps = [streaming.prompt(features, boxes), streaming.prompt(features, click)]
            step = type(steps[0]).concat(steps, [0, 1, 2])
            prompted = [True, True, True]
        elif index == 3:
            steps = [streaming.prompt(features, click), streaming.track(features, memories[:2], index)]
            step = type(steps[0]).concat(steps, [1, 2, 0])  # objects 0, 1 tracked, 2 prompted
            prompted = [False, False, True]
        else:
            step = streaming.track(features, memories, index)
            prompted = [False, False, False]
        assert on_cuda(step.logits, step.scores, step.object_score_logits, step.pointers)
        remembered = streaming.remember(features, step, prompted, apart=apart)
        assert on_cuda(*(t for m in remembered for t in (m.features, m.position, m.pointer)))
        for memory, m, was_prompted in zip(memories, remembered, prompted):
            memory.add(index, m, was_prompted)
        yield features, step, remembered
