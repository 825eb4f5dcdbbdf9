"""Things found again by their timestamp: a camera's recent frames, and answers paired with the frames
they were computed on (dora hands a node its inputs by fairness, not by arrival)."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")
F, A = TypeVar("F"), TypeVar("A")

# Two timestamps name the same frame within this: dora carries them to about 1 us, and frames of any
# real camera are milliseconds apart.
TIMESTAMP_TOLERANCE = timedelta(microseconds=500)


class RecentByTime(Generic[T]):
    """The last `size` items of a stream, found again by their timestamp: a camera's frames, so that a
    prompt lands on the frame it was computed on (the engine), or a mask on its frame (a consumer)."""

    def __init__(self, size: int):
        self._items: deque[tuple[datetime | None, T]] = deque(maxlen=size)

    def add(self, timestamp: datetime | None, item: T) -> None:
        self._items.append((timestamp, item))

    @property
    def newest(self) -> T | None:
        return self._items[-1][1] if self._items else None

    @property
    def newest_timestamp(self) -> datetime | None:
        return self._items[-1][0] if self._items else None

    def find(self, timestamp: datetime | None) -> T | None:
        """The item stamped `timestamp` (to dora's precision), or None when it is not, or no longer, kept."""
        if timestamp is None:
            return None
        for stamp, item in reversed(self._items):
            if stamp is not None and abs(stamp - timestamp) <= TIMESTAMP_TOLERANCE:
                return item
        return None


class AnswersOnFrames(Generic[F, A]):
    """Pairs each answer (masks) with the frame it was computed on, by timestamp, per camera.

    dora hands a node its inputs by fairness, not by arrival, so an answer can come before its frame: it
    waits for it, at most `size` per camera and `max_waiting` in all (an answer names its camera, and a
    sender may name thousands). Frames are kept for at most `max_cameras` cameras. Both calls return
    the answers they settle, as (answer, frame), with frame None where that frame is gone or never came."""

    def __init__(self, size: int = 30, max_waiting: int = 64, max_cameras: int = 16):
        self.size = size
        self.max_waiting = max_waiting
        self.max_cameras = max_cameras
        self._frames: dict[str, RecentByTime[F]] = {}
        self._waiting: list[tuple[str, datetime | None, A]] = []  # all cameras, oldest first

    def frame(self, camera: str, timestamp: datetime | None, frame: F) -> list[tuple[A, F | None]]:
        if camera not in self._frames:
            if len(self._frames) >= self.max_cameras:
                return []  # not kept: its answers wait until they are given up
            self._frames[camera] = RecentByTime(self.size)
        self._frames[camera].add(timestamp, frame)
        settled, waiting = [], []
        for entry in self._waiting:
            stamp, answer = entry[1:]
            if entry[0] != camera or is_newer(stamp, timestamp):
                waiting.append(entry)
            else:  # its own frame, to dora's precision, or one that will never come now
                settled.append((answer, frame if not is_newer(timestamp, stamp) else None))
        self._waiting = waiting
        return settled

    def answer(self, camera: str, timestamp: datetime | None, answer: A) -> list[tuple[A, F | None]]:
        frames = self._frames.get(camera)
        found = None if frames is None else frames.find(timestamp) if timestamp is not None else frames.newest
        if found is not None:
            return [(answer, found)]
        if frames is not None and not is_newer(timestamp, frames.newest_timestamp):
            return [(answer, None)]
        if frames is None and len(self._frames) >= self.max_cameras:
            return [(answer, None)]  # a camera beyond the bound: its frames are never kept
        self._waiting.append((camera, timestamp, answer))
        # that camera has stalled, or is not wired to this node: give up on the oldest
        given_up = []
        mine = [i for i, entry in enumerate(self._waiting) if entry[0] == camera]
        if len(mine) > self.size:
            given_up.append(self._waiting.pop(mine[0])[2])
        if len(self._waiting) > self.max_waiting:
            given_up.append(self._waiting.pop(0)[2])
        return [(answer, None) for answer in given_up]

    @property
    def waiting(self) -> int:
        return len(self._waiting)


def is_newer(stamp: datetime | None, than: datetime | None) -> bool:
    """True when both timestamps are known and `stamp` is later than `than`, beyond dora's precision."""
    return stamp is not None and than is not None and stamp - than > TIMESTAMP_TOLERANCE
