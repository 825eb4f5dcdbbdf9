"""Reading dora-sam2's answers in your own node: decode once, then ask questions of the masks.

    from dora_sam2.masks import decode_masks, coverage, centroids
    for event in node:
        if event["type"] == "INPUT" and event["id"] == "masks":
            masks = decode_masks(event)          # (N, H, W) bool, one per object, N may be 0
            print(coverage(masks), centroids(masks))

The node sends two forms. `masks` holds each object's mask (N*H*W); `mask`, the seed's output, holds
their union (H*W, 1 wherever any object is) unless the node runs with MASK_LAYOUT=stack. Every helper
takes the (N, H, W) bool stack and answers for all N objects at once; `extract` and `inpaint_mask` also
take a union (H, W).

A message the decoders cannot read raises `InputError` (a ValueError) naming the input and the problem,
whatever it holds; `masks_with_frames` logs such a message in one line and goes on.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pyarrow as pa  # noqa: F401 - the doctests build messages with it

from . import codecs
from .domain import InputError
from .geometry import mask_boxes
from .throttle import Throttle
from .timeline import AnswersOnFrames

log = logging.getLogger("dora_sam2.masks")

# (N, 4) xyxy boxes around each object, in pixel edges (right and bottom exclusive, as a detector's
# boxes are); NaN rows for empty masks. The same function the tracker matches detections with.
bounding_boxes = mask_boxes


def decode_masks(event) -> np.ndarray:
    """(N, H, W) bool, one mask per object, from a `masks` (Boolean) message or a `mask` (UInt8) sent with
    MASK_LAYOUT=stack; N = 0 for an empty answer.

    A union `mask` (the default) holds no per-object masks: this raises ValueError saying so. Read the
    `masks` output for each object, or `decode_union` for the union.

    >>> decode_masks({"value": pa.array([0, 1, 1, 0], pa.uint8()), "metadata": {"width": 2, "height": 2}})[0]
    array([[False,  True],
           [ True, False]])
    """
    input_id, value, metadata = _parts(event)
    if metadata.get("mask_layout") == "union":
        count = metadata.get("num_masks")
        objects = f"its {count} objects" if isinstance(count, int) else "its objects"
        raise InputError(input_id, f"this `mask` message is the union of {objects}, one frame-sized mask: wire the "
                                   "node's `masks` output for each object's mask, or use decode_union() for the union")
    return codecs.decode_mask_stack(input_id, value, metadata)


def decode_union(event) -> np.ndarray:
    """(H, W) bool, True wherever any object is, from any of the node's mask messages (`mask` as a union
    or a stack, or `masks`).

    >>> decode_union({"value": pa.array([0, 1, 0, 0, 1, 0, 0, 0], pa.uint8()), "metadata": {"width": 2, "height": 2}})
    array([[ True,  True],
           [False, False]])
    """
    return codecs.decode_mask_stack(*_parts(event)).any(axis=0)


def _parts(event) -> tuple[str, object, dict]:
    """An event's input id, value and metadata, whatever the event is."""
    input_id = event.get("id") if isinstance(event, dict) else None
    input_id = input_id if isinstance(input_id, str) else "mask"
    metadata = event.get("metadata") if isinstance(event, dict) else None
    if not isinstance(metadata, dict):
        raise InputError(input_id, "not a dora input event (no metadata)")
    return input_id, event.get("value"), metadata


def area(masks: np.ndarray) -> np.ndarray:
    """Pixels per object, (N,)."""
    return masks.reshape(len(masks), -1).sum(axis=1)


def coverage(masks: np.ndarray) -> np.ndarray:
    """Fraction of the frame each object covers, (N,).

    >>> coverage(np.ones((1, 2, 2), bool))
    array([1.])
    """
    return area(masks) / float(masks.shape[1] * masks.shape[2])


def centroids(masks: np.ndarray) -> np.ndarray:
    """(N, 2) centre (x, y) of each object; NaN for an empty mask.

    >>> centroids(np.pad(np.ones((1, 2, 2), bool), ((0, 0), (0, 1), (1, 0))))
    array([[1.5, 0.5]])
    """
    n, h, w = masks.shape
    pixels = area(masks).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = masks.sum(axis=1) @ np.arange(w) / pixels
        y = masks.sum(axis=2) @ np.arange(h) / pixels
    return np.stack([x, y], axis=1).reshape(n, 2)


def overlaps(masks: np.ndarray) -> np.ndarray:
    """(N, N) pixels shared by each pair of objects; the diagonal is each object's area.

    One matrix product, not N^2 comparisons: flat masks as float32 count exactly up to 16 M pixels.
    """
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    return np.rint(flat @ flat.T).astype(np.int64)


def colliding_pairs(masks: np.ndarray, min_pixels: int = 1) -> list[tuple[int, int]]:
    """The (i, j), i < j, of objects that share at least `min_pixels` pixels: the seed's collision check.

    >>> m = np.zeros((3, 4, 4), bool); m[0, :2] = True; m[1, 1:3] = True; m[2, 3:] = True
    >>> colliding_pairs(m)
    [(0, 1)]
    """
    shared = np.triu(overlaps(masks), k=1)
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(shared >= min_pixels))]


def union(masks: np.ndarray) -> np.ndarray:
    """(H, W) bool, wherever any object is, from an (N, H, W) stack; a union (H, W) is returned as it is."""
    return masks if masks.ndim == 2 else masks.any(axis=0)


def extract(image: np.ndarray, masks: np.ndarray, transparent: bool = False) -> np.ndarray:
    """The objects alone: black elsewhere, or (transparent=True) an (H, W, 4) image with alpha 0 elsewhere.
    `masks`: (N, H, W) or their union (H, W)."""
    keep = union(masks)
    if transparent:
        return np.dstack([image, np.where(keep, 255, 0).astype(np.uint8)])
    return np.where(keep[..., None], image, 0).astype(image.dtype)


def inpaint_mask(masks: np.ndarray, grow: int = 0) -> np.ndarray:
    """(H, W) uint8, 255 where any object is (grown by `grow` pixels to cover its edge): for cv2.inpaint.
    `masks`: (N, H, W) or their union (H, W).

    Object removal, as the seed does it: `cv2.inpaint(image, inpaint_mask(masks, 3), 3, cv2.INPAINT_TELEA)`.
    """
    painted = union(masks).astype(np.uint8) * 255
    if grow > 0:
        painted = cv2.dilate(painted, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return painted


def masks_with_frames(events, mask_input: str = "mask", image_input: str = "image", decode=None):
    """For each mask message, (frame pixels, masks, its metadata): the frame it was computed on.

    Feed it the node's events; frames are kept by timestamp, a mask that dora delivers before its frame
    waits for it, and a mask whose frame is gone or never came is skipped.
    `decode` reads the message: by default `decode_union` for `mask` ((H, W), the seed's form) and
    `decode_masks` for any other input ((N, H, W), e.g. `masks`).

        for frame, union, metadata in masks_with_frames(Node()):
            ...
    """
    decode = decode or (decode_union if mask_input == "mask" else decode_masks)
    pairs: AnswersOnFrames[np.ndarray, tuple[np.ndarray, dict]] = AnswersOnFrames()
    bad = Throttle(log, burst=5)
    for event in events:
        if event["type"] != "INPUT" or event["id"] not in (image_input, mask_input):
            continue
        try:
            if event["id"] == image_input:
                settled = pairs.frame(image_input, codecs.timestamp_of(event["metadata"]), frame_pixels(event))
            else:  # decoded now: a bad answer is said at once, not when its frame comes
                settled = pairs.answer(image_input, codecs.timestamp_of(event["metadata"]),
                                       (decode(event), event["metadata"]))
            for (masks, metadata), frame in settled:
                if frame is not None:
                    yield frame, masks, metadata
        except InputError as error:
            bad.warning(event["id"], "%s", error)


def frame_pixels(event) -> np.ndarray:
    """An `image` event's pixels as (H, W, 3), in the camera's channel order (BGR for bgr8, else RGB)."""
    frame = codecs.decode_frame(*_parts(event))
    return frame.rgb[..., ::-1] if frame.encoding == "bgr8" else frame.rgb
