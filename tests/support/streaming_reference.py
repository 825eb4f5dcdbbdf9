"""Our streaming loop and transformers' own Sam2VideoModel (or EdgeTamVideoModel) run on the same
frames and prompts, for the tests that hold one to the other (test_video.py, test_edgetam.py)."""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import torch

from dora_sam2.domain import Frame, Prompt
from dora_sam2.video import NO_OBJECT_LOGIT

WIDTH, HEIGHT = 160, 120
BOXES = np.array([[20, 20, 70, 80], [90, 30, 150, 100]], np.float32)


def frames(count: int):
    """A bright square drifting right over a gradient: enough structure for features to differ."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    for t in range(count):
        rgb = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 80)], -1).astype(np.uint8)
        rgb[30:70, 25 + 3 * t : 65 + 3 * t] = 240
        yield Frame("image", rgb, None, "rgb8")


# What an object is told on a frame: (points in frame pixels, SAM2 labels). A box is its two corners.
BOX_A = (BOXES[0].reshape(2, 2), [2, 3])
BOX_B = (BOXES[1].reshape(2, 2), [2, 3])
CLICK_B = (np.array([[120, 60]], np.float32), [1])  # one click: ambiguous, SAM2 picks among 3 masks
CLICKS_B = (np.array([[118, 62], [95, 35]], np.float32), [1, 0])  # a foreground and a background click


def as_prompt(cues: dict) -> Prompt:
    """{object: (points, labels)} as one Prompt, objects in order, padded as the tracker pads them."""
    k = max(len(labels) for _, labels in cues.values())
    points = np.zeros((len(cues), k, 2), np.float32)
    labels = np.full((len(cues), k), Prompt.PAD, np.int64)
    for row, (xy, point_labels) in enumerate(cues.values()):
        points[row, : len(xy)], labels[row, : len(point_labels)] = xy, point_labels
    return Prompt("test", points, labels, ("",) * len(cues))


def run_ours(streaming, count, prompts, before_frame=lambda index: None):
    """`prompts`: {frame: {object: cue}}; objects not prompted on a frame are tracked from memory."""
    from dora_sam2.video import Step

    objects = sorted({o for cues in prompts.values() for o in cues})
    memories = {o: streaming.new_memory() for o in objects}
    logits = []
    for index, frame in enumerate(frames(count)):
        before_frame(index)
        features = streaming.encode(frame)
        cues = prompts.get(index, {})
        prompted = [o for o in objects if o in cues]
        tracked = [o for o in objects if o not in cues]
        steps = []
        if prompted:
            steps.append(streaming.prompt(features, as_prompt({o: cues[o] for o in prompted})))
        if tracked:
            steps.append(streaming.track(features, [memories[o] for o in tracked], index))
        step = Step.concat(steps, np.argsort(prompted + tracked).tolist())
        for o, m in zip(objects, streaming.remember(features, step, [o in cues for o in objects])):
            memories[o].add(index, m, prompted=o in cues)
        logits.append(step.logits)
    return logits, memories


def run_transformers(streaming, count, prompts, before_frame=lambda index: None):
    """The same through transformers' own video model (Sam2VideoModel or EdgeTamVideoModel) and its session."""
    model, backend = streaming.model, streaming.backend
    module = sys.modules[type(model).__module__]
    session_class = getattr(module, type(model).__name__.replace("Model", "InferenceSession"))
    session = session_class(video_height=HEIGHT, video_width=WIDTH, dtype=torch.float32)
    logits = []
    with memory_encoded_per_object(model):
        for index, frame in enumerate(frames(count)):
            logits.append(_transformers_frame(model, backend, session, index, frame, prompts, before_frame))
    return logits


def _transformers_frame(model, backend, session, index, frame, prompts, before_frame):
    before_frame(index)
    pixels = backend.preprocess(frame.rgb)[0]
    with backend.autocast():
        if index in prompts:
            session.add_new_frame(pixels, index)
            for obj_id, (xy, labels) in prompts[index].items():
                model_xy = backend.model_points(as_prompt({0: (xy, labels)}), WIDTH, HEIGHT)[0]
                session.add_point_inputs(session.obj_id_to_idx(obj_id), index, {
                    "point_coords": torch.from_numpy(model_xy)[None, None],
                    "point_labels": torch.tensor([[labels]]),
                })
                session.obj_with_new_inputs.append(obj_id)
            out = model(inference_session=session, frame_idx=index)
        else:
            out = model(inference_session=session, frame=pixels)
    return out.pred_masks[:, 0].float()


@contextlib.contextmanager
def memory_encoded_per_object(model):
    """transformers' Sam2VideoModel encodes a frame's memories in one batch and then remembers every
    object's mask hard (binarised) when any object on that frame was prompted
    (`is_mask_from_pts=any(...)`). Meta's SAM2, and we, decide per object: an object tracked on a frame
    where another is re-prompted is remembered soft. The reference runs that step per object."""
    batched = getattr(model, "_batch_encode_memories", None)

    def per_object(**kwargs):
        for obj, mask, score, from_points in zip(*(kwargs[k] for k in (
                "objects_needing_memory_encoding", "high_res_masks_for_memory", "object_score_logits_for_memory",
                "is_mask_from_pts_per_obj"))):
            batched(inference_session=kwargs["inference_session"], frame_idx=kwargs["frame_idx"],
                    objects_needing_memory_encoding=[obj], high_res_masks_for_memory=[mask],
                    object_score_logits_for_memory=[score], is_mask_from_pts_per_obj=[from_points])

    model._batch_encode_memories = per_object
    try:
        yield
    finally:
        del model._batch_encode_memories


class Presence:
    """Random weights say "object present" at random: this pins SAM2's presence score, on the decoder
    and on the copy the fast dtypes decode with."""

    def __init__(self, streaming):
        decoders = {id(d): d for d in (streaming.model.mask_decoder, streaming.backend.decoder)}
        self._biases = [d.pred_obj_score_head.proj_out.bias for d in decoders.values()]
        self._saved = [b.detach().clone() for b in self._biases]

    def pin(self, visible: bool) -> None:
        with torch.no_grad():
            for bias, saved in zip(self._biases, self._saved):
                bias.copy_(saved + (30.0 if visible else -30.0))

    def restore(self) -> None:
        with torch.no_grad():
            for bias, saved in zip(self._biases, self._saved):
                bias.copy_(saved)


def run_through_occlusion(streaming, count: int):
    """Ours and transformers' loop on one story: a box and a single click on frame 0, both objects hidden
    on frames 3-4 and back, the clicked object re-prompted with a foreground and a background click on
    frame 6 while the other is tracked. Returns (ours, reference) logits per frame."""
    presence = Presence(streaming)
    prompts = {0: {0: BOX_A, 1: CLICK_B}, 6: {1: CLICKS_B}}

    def before_frame(index):
        presence.pin(visible=index not in (3, 4))

    try:
        with torch.inference_mode():
            ours, _ = run_ours(streaming, count, prompts, before_frame)
            reference = run_transformers(streaming, count, prompts, before_frame)
    finally:
        presence.restore()
    hidden = torch.stack(ours) == NO_OBJECT_LOGIT
    assert hidden[3:5].all() and not hidden[:3].any() and not hidden[5:].any()
    return ours, reference
