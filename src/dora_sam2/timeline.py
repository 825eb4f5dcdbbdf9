"""Things found again by their timestamp: a camera's recent frames, and answers paired with the frames
they were computed on (dora hands a node its inputs by fairness, not by arrival)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")
F, A = TypeVar("F"), TypeVar("A")

# Two timestamps name the same frame within this: dora carries a forwarded timestamp to about 1 us. One
# node's back-to-back sends are tens of microseconds apart (the examples' camera sent a clip's first frames
# 90 to 335 us apart), so a wider tolerance would pair an answer with the frame before its own.
TIMESTAMP_TOLERANCE = timedelta(microseconds=5)


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


class AwaitingFrames(Generic[A]):
    """Items that came before the frame they were computed on, per camera, oldest first, until that frame
    comes: dora hands a node its inputs by fairness, not by arrival. At most `per_camera` of one camera
    (that camera has stalled, or is not wired to this node) and `total` in all (an item names its camera,
    and a sender may name thousands); beyond either, the oldest is given up."""

    def __init__(self, per_camera: int, total: int):
        self.per_camera = per_camera
        self.total = total
        self._items: list[tuple[str, datetime | None, A]] = []  # all cameras, oldest first

    def add(self, camera: str, timestamp: datetime | None, item: A) -> list[A]:
        """Keeps `item` until its frame; returns the items given up for it."""
        self._items.append((camera, timestamp, item))
        given_up = []
        mine = [i for i, entry in enumerate(self._items) if entry[0] == camera]
        if len(mine) > self.per_camera:
            given_up.append(self._items.pop(mine[0])[2])
        if len(self._items) > self.total:
            given_up.append(self._items.pop(0)[2])
        return given_up

    def due(self, camera: str, timestamp: datetime | None) -> list[tuple[datetime | None, A]]:
        """The camera's items stamped at `timestamp` or before (to dora's precision), taken out, oldest
        first, with their timestamps: a frame of that camera came, and later ones wait on."""
        due, waiting = [], []
        for entry in self._items:
            (due if entry[0] == camera and not is_newer(entry[1], timestamp) else waiting).append(entry)
        self._items = waiting
        return [(stamp, item) for _, stamp, item in due]

    def drain(self) -> list[A]:
        """Every item still waiting, oldest first, taken out."""
        items, self._items = [item for _, _, item in self._items], []
        return items

    @property
    def cameras(self) -> set[str]:
        return {camera for camera, _, _ in self._items}

    def __len__(self) -> int:
        return len(self._items)


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
        self._waiting: AwaitingFrames[A] = AwaitingFrames(size, max_waiting)

    def frame(self, camera: str, timestamp: datetime | None, frame: F) -> list[tuple[A, F | None]]:
        if camera not in self._frames:
            if len(self._frames) >= self.max_cameras:
                return []  # not kept: its answers wait until they are given up
            self._frames[camera] = RecentByTime(self.size)
        self._frames[camera].add(timestamp, frame)
        # its own frame, to dora's precision, or a later one: its own will never come now
        return [(answer, frame if not is_newer(timestamp, stamp) else None)
                for stamp, answer in self._waiting.due(camera, timestamp)]

    def answer(self, camera: str, timestamp: datetime | None, answer: A) -> list[tuple[A, F | None]]:
        frames = self._frames.get(camera)
        found = None if frames is None else frames.find(timestamp) if timestamp is not None else frames.newest
        if found is not None:
            return [(answer, found)]
        if frames is not None and not is_newer(timestamp, frames.newest_timestamp):
            return [(answer, None)]
        if frames is None and len(self._frames) >= self.max_cameras:
            return [(answer, None)]  # a camera beyond the bound: its frames are never kept
        return [(answer, None) for answer in self._waiting.add(camera, timestamp, answer)]

    @property
    def waiting(self) -> int:
        return len(self._waiting)


def is_newer(stamp: datetime | None, than: datetime | None) -> bool:
    """True when both timestamps are known and `stamp` is later than `than`, beyond dora's precision."""
    return stamp is not None and than is not None and stamp - than > TIMESTAMP_TOLERANCE


@dataclass
class Settled(Generic[F, A]):
    """What a call of `EachFrameOnce` settled: answers paired with their frames, frames that will get no
    answer (passed over, or still waiting at the end), frames pushed out while still waiting, answers
    whose frame is gone or never came, and answers for a frame already answered."""

    pairs: list[tuple[A, F]] = field(default_factory=list)
    unanswered: list[F] = field(default_factory=list)
    pushed_out: list[F] = field(default_factory=list)
    frameless: list[A] = field(default_factory=list)
    repeated: list[A] = field(default_factory=list)


class EachFrameOnce(Generic[F, A]):
    """Every frame held until its one answer comes: the pairing for a writer that must lose nothing.

    Unlike `AnswersOnFrames`, which keeps the newest frames whether answered or not, a frame here leaves
    only by being answered, by being passed over (an answer for a later frame of its camera came: a
    camera's frames are answered in order), by being pushed out (more than `size` of its camera wait;
    the camera has run ahead of the answers) or at `end`. Each is reported, so a writer can count what
    it lost. An answer may come before its frame (dora hands inputs over by fairness): it waits, at most
    `size` per camera and `max_waiting` in all. A second answer for a frame already answered is reported
    as repeated, not paired again."""

    def __init__(self, size: int = 30, max_waiting: int = 64, max_cameras: int = 16):
        self.size = size
        self.max_waiting = max_waiting
        self.max_cameras = max_cameras
        self._frames: dict[str, deque[tuple[datetime | None, F]]] = {}  # per camera, unanswered, in order
        self._answered: dict[str, RecentByTime[bool]] = {}  # per camera, the newest answered timestamps
        self._waiting: AwaitingFrames[A] = AwaitingFrames(size, max_waiting)  # answers before their frames

    def frame(self, camera: str, timestamp: datetime | None, frame: F) -> Settled[F, A]:
        settled: Settled[F, A] = Settled()
        if camera not in self._frames:
            if len(self._frames) >= self.max_cameras:
                settled.pushed_out.append(frame)  # a camera beyond the bound: nothing of it is kept
                return settled
            self._frames[camera], self._answered[camera] = deque(), RecentByTime(self.size)
        for stamp, answer in self._waiting.due(camera, timestamp):
            if stamp is None or not is_newer(timestamp, stamp):  # its own frame, to dora's precision
                if settled.pairs and stamp is None:  # no timestamps: answers come in the frames' order,
                    settled.frameless.extend(self._waiting.add(camera, None, answer))  # so it is the next's
                    continue
                if settled.pairs:  # a second answer for this frame: the frame is written once
                    settled.repeated.append(answer)
                    continue
                settled.pairs.append((answer, frame))
                self._answered[camera].add(timestamp, True)
            else:
                settled.frameless.append(answer)  # its frame was due before this one and never came
        frames = self._frames[camera]
        if any(f is frame for _, f in settled.pairs):  # answered already: the frames before it never will be
            settled.unanswered.extend(f for _, f in frames)
            frames.clear()
        else:
            frames.append((timestamp, frame))
            if len(frames) > self.size:
                settled.pushed_out.append(frames.popleft()[1])
        return settled

    def answer(self, camera: str, timestamp: datetime | None, answer: A) -> Settled[F, A]:
        settled: Settled[F, A] = Settled()
        frames = self._frames.get(camera)
        if frames and timestamp is None:  # no timestamps (dora 0.5): answers come in the frames' order
            settled.pairs.append((answer, frames.popleft()[1]))
            return settled
        index = _closest(frames or (), timestamp)
        if index is not None:
            settled.unanswered.extend(frames.popleft()[1] for _ in range(index))  # passed over: never answered
            settled.pairs.append((answer, frames.popleft()[1]))
            self._answered[camera].add(timestamp, True)
            return settled
        if camera in self._answered and self._answered[camera].find(timestamp):
            settled.repeated.append(answer)
        elif frames is None and len(self._frames) >= self.max_cameras:
            settled.frameless.append(answer)  # a camera beyond the bound: its frames are never kept
        elif frames and not is_newer(timestamp, frames[-1][0]):
            settled.frameless.append(answer)  # its frame was let go, or never came
        else:
            settled.frameless.extend(self._waiting.add(camera, timestamp, answer))
        return settled

    def end(self) -> Settled[F, A]:
        """The stream is over: frames still unanswered, and answers still waiting, are settled as such."""
        settled: Settled[F, A] = Settled(
            unanswered=[frame for frames in self._frames.values() for _, frame in frames],
            frameless=self._waiting.drain())
        for frames in self._frames.values():
            frames.clear()
        return settled

    @property
    def unanswered(self) -> int:
        return sum(len(frames) for frames in self._frames.values())


def _closest(frames, timestamp: datetime | None) -> int | None:
    """The index of the frame stamped `timestamp` to dora's precision, the closest where two are (a camera
    can send two frames within the tolerance of each other); None when no frame is."""
    if timestamp is None:
        return None
    near = [(abs(stamp - timestamp), i) for i, (stamp, _) in enumerate(frames)
            if stamp is not None and abs(stamp - timestamp) <= TIMESTAMP_TOLERANCE]
    return min(near)[1] if near else None
