"""The click page's picture: the newest camera frame with the newest mask of each object drawn on it."""

from __future__ import annotations

import base64
import queue
import threading
from collections import OrderedDict

import cv2
import numpy as np

from . import overlay
from .domain import Masks
from .settings import FixedLimits


class LiveView:
    """The newest frame with the newest mask of each object drawn on it, as the page shows it."""

    def __init__(self):
        self._subscribers: list[queue.Queue] = []
        self._lock = threading.Lock()
        # per object label: every object stays visible, the least recently answered beyond DRAWN_OBJECTS go
        self._masks: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()

    def show_frame(self, frame) -> None:
        with self._lock:
            watched = bool(self._subscribers)
        if not watched:  # nobody has the page open: do not draw and encode 30 frames a second for nothing
            return
        masks = self._drawable(frame.height, frame.width)
        rgb = overlay.draw(frame, masks) if masks is not None else frame.rgb
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
        message = {
            "jpeg": base64.b64encode(jpeg.tobytes()).decode(), "width": frame.width, "height": frame.height,
            "timestamp": frame.timestamp.isoformat() if frame.timestamp else None,
            "masks": 0 if masks is None else len(masks),
        }
        with self._lock:
            for subscriber in self._subscribers:
                if subscriber.qsize() < 2:  # a slow browser gets the newest frames, not a backlog
                    subscriber.put(message)

    def show_masks(self, stack: np.ndarray, labels: list[str], scores: list[float]) -> None:
        with self._lock:
            for mask, label, score in zip(stack, labels or [""] * len(stack), scores or [float("nan")] * len(stack)):
                self._masks.pop(label, None)
                self._masks[label] = (mask, float(score))
            while len(self._masks) > FixedLimits.DRAWN_OBJECTS:
                self._masks.popitem(last=False)

    def clear_masks(self) -> None:
        with self._lock:
            self._masks.clear()

    def subscribe(self) -> queue.Queue:
        subscriber: queue.Queue = queue.Queue()
        with self._lock:
            self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: queue.Queue) -> None:
        with self._lock:
            self._subscribers.remove(subscriber)

    def _drawable(self, height: int, width: int) -> Masks | None:
        with self._lock:
            items = [(label, m, score) for label, (m, score) in self._masks.items() if m.shape == (height, width)]
        if not items:
            return None
        labels, stack, scores = zip(*items)
        return Masks(np.stack(stack), np.array(scores, np.float32), tuple(labels), "image", None)
