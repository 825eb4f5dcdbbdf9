"""Scenes from a seed: a random clip, or one built around what a tracker must survive.

    random_scene(seed)                       1 to 10 objects, any of the events below by chance
    occlusion(seed, hidden_seconds=1.0)      an object wholly hidden behind an occluder, then seen again
    crossing(seed, twins=True)               two objects (look-alikes by default) crossing paths
    exit_and_return(seed, outside_seconds=1) an object leaving the frame and coming back

Each takes a seed (an int, or a sequence of ints as numpy's `default_rng` reads it) and a `Format`, and
returns a `Scene`; the same arguments give the same scene. `others` adds objects wandering about, and
`nuisance=False` leaves out camera shake, light changes and sensor noise."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from . import motion
from .looks import occluder_look, random_background, random_look
from .scene import OCCLUDER, Event, Format, Look, Scene, Thing

MAX_OBJECTS = 10  # objects in a random scene
MAX_HIDDEN_SECONDS = 2.0  # the longest occlusion a random scene holds
MARGIN = 3  # pixels beyond an object's radius that an occluder covers, or that it stays out of the frame by


class _Builder:
    """A scene taking shape: objects and occluders added, events recorded, one seeded generator."""

    def __init__(self, seed, fmt: Format, scenario: str, name: str | None, nuisance: bool):
        self.rng = np.random.default_rng(seed)
        self.fmt, self.scenario = fmt, scenario
        self.name = name or f"{scenario}-{'-'.join(map(str, np.atleast_1d(seed)))}"
        self.background = random_background(self.rng)
        self.objects: list[Thing] = []
        self.occluders: list[Thing] = []
        self.events: list[Event] = []
        self.light, switched = motion.lighting(self.rng, fmt) if nuisance else (None, None)
        if switched is not None:
            self.events.append(Event("light", (), switched, 1))
        shaking = nuisance and self.rng.uniform() < 0.5
        self.camera = motion.shake(self.rng, fmt, self.rng.uniform(1, 6) if shaking else 0)
        self.noise = float(self.rng.uniform(0, 3)) if nuisance else 0.0

    @property
    def reach(self) -> float:
        """How far the shaking camera moves any pixel, at most."""
        half_diagonal = np.hypot(self.fmt.width, self.fmt.height) / 2
        turned = half_diagonal * np.sin(np.radians(np.abs(self.camera[:, 2])))
        shifts = np.hypot(self.camera[:, 0], self.camera[:, 1]) + turned
        return float(shifts.max(initial=0))

    def radius(self) -> float:
        return max(4.0, self.rng.uniform(0.03, 0.16) * min(self.fmt.width, self.fmt.height))

    def add(self, look: Look, path: np.ndarray, radii: np.ndarray, angles: np.ndarray) -> int:
        track_id = len(self.objects) + 1
        poses = np.column_stack([path, radii, angles])
        self.objects.append(Thing(look, poses, track_id, depth=float(self.rng.uniform())))
        return track_id

    def wander(self, look: Look | None = None, radii: np.ndarray | None = None) -> int:
        """An object moving as objects do: gliding, bouncing or dashing, turning, and growing or not unless
        its `radii` are given (a twin's)."""
        look = look or random_look(self.rng)
        radius = float(radii.max()) if radii is not None else self.radius()
        kind = self.rng.choice(["glide", "glide", "bounce", "dash"])
        dashes = []
        if kind == "glide":
            path = motion.glide(self.rng, self.fmt, radius, int(self.rng.integers(2, 6)))
        elif kind == "bounce":
            path = motion.bounce(self.rng, self.fmt, radius)
        else:
            path, dashes = motion.dash(self.rng, self.fmt, radius)
        radii = motion.grow(self.rng, self.fmt, radius) if radii is None else radii
        track_id = self.add(look, path, radii, motion.spin(self.rng, self.fmt))
        self.events += [Event("jump", (track_id,), start, 1) for start in dashes]
        return track_id

    def splice(self, track_id: int, start: int, inserted: np.ndarray) -> None:
        """The object's path with `inserted` positions from frame `start`, its size held meanwhile; the
        rest of its path follows, later (its end falls off the clip). It keeps turning."""
        thing, later = self.objects[track_id - 1], len(inserted)
        poses = thing.poses.copy()
        self.events = [Event(e.kind, e.track_ids, e.start + later, e.frames)
                       if track_id in e.track_ids and e.kind == "jump" and e.start >= start else e for e in self.events]
        path = np.concatenate([poses[:start, :2], inserted, poses[start:, :2]])[:len(poses)]
        held = np.full(len(inserted), poses[start, 2])
        radii = np.concatenate([poses[:start, 2], held, poses[start:, 2]])[:len(poses)]
        poses[:, :2], poses[:, 2] = path, radii
        self.objects[track_id - 1] = Thing(thing.look, poses, track_id, thing.depth)

    def hide(self, track_id: int, start: int, frames: int, across: float | None = None) -> None:
        """The object stopped at frame `start` for `frames` frames behind an occluder that covers it whole,
        in front of everything. The occluder is at least the object's radius plus MARGIN from its centre
        in every direction (`across`, in degrees, lays it square to that direction at exactly that)."""
        thing = self.objects[track_id - 1]
        self.splice(track_id, start, np.repeat(thing.poses[start:start + 1, :2], frames - 1, 0))
        thing = self.objects[track_id - 1]
        radius, cover = thing.poses[start, 2], thing.poses[start, 2] + MARGIN
        if across is None:
            half = cover * self.rng.uniform(1.0, 1.5, 2)
            angle = self.rng.uniform(0, 180)
        else:  # across its path, only as wide as the object is that way while it waits
            wide = radius * _extent(thing.look, thing.poses[start:start + frames, 3] - across) + MARGIN
            half, angle = (wide, cover * self.rng.uniform(1.2, 2.5)), across
        look, radius = occluder_look(self.rng, *half)
        self.occlude(look, np.array([*thing.poses[start, :2], radius, angle]))
        self.events.append(Event("occlusion", (track_id,), start, frames))

    def occlude(self, look: Look, pose: np.ndarray) -> None:
        self.occluders.append(Thing(look, np.tile(pose, (self.fmt.frames, 1)), OCCLUDER, depth=1.0))

    def leave(self, track_id: int, start: int, frames: int, same_edge: bool = True, travel: int | None = None) -> None:
        """The object leaves the frame by the nearest edge from its place at frame `start`, stays wholly out
        of it (the shaking camera included) for `frames` frames, and comes back there or by another
        edge to that place, then goes on; going out and coming back take `travel` frames at most."""
        thing, fmt = self.objects[track_id - 1], self.fmt
        here = thing.poses[start, :2]
        away = thing.poses[start, 2] + self.reach + MARGIN + 1
        out = _beyond_edge(here, fmt, away, _nearest_edge(here, fmt))
        back = out if same_edge else _beyond_edge(here, fmt, away, int(self.rng.integers(4)))
        speed = self.rng.uniform(0.3, 0.8) * min(fmt.width, fmt.height) / fmt.fps
        if travel is not None:
            speed = max(speed, (np.hypot(*(out - here)) + np.hypot(*(back - here))) / max(1, travel - 2))
        going, coming = _steps(here, out, speed), _steps(back, here, speed)
        keys = [(0, *here), (going, *out), (going + frames - 1, *out), (going + frames, *back),
                (going + frames + coming, *here)]
        self.splice(track_id, start, motion.straight(keys, keys[-1][0]))
        self.events.append(Event("exit", (track_id,), start + going, frames))

    def cross(self, first: int, second: int, at: int) -> None:
        """The two objects' paths replaced by two that cross at frame `at` near the frame's centre: one from
        the left, one from the right, the nearer passing over the other."""
        fmt, rng = self.fmt, self.rng
        centre = np.array([fmt.width / 2, fmt.height / 2]) + rng.uniform(-0.1, 0.1, 2) * [fmt.width, fmt.height]
        offset = rng.uniform(-0.3, 0.3) * self.objects[first - 1].poses[at, 2]  # the far one mostly hidden
        for track_id, side in ((first, -1), (second, 1)):
            thing = self.objects[track_id - 1]
            radius = thing.poses[:, 2].max()
            start = (min(fmt.width - radius, max(radius, centre[0] + side * 0.35 * fmt.width)),
                     min(fmt.height - radius, max(radius, centre[1] + rng.uniform(-0.3, 0.3) * fmt.height)))
            end = (2 * centre[0] - start[0], 2 * centre[1] - start[1])
            keys = [(0, *start), (at, centre[0], centre[1] + side * offset / 2), (fmt.frames - 1, *end)]
            poses = thing.poses.copy()
            smooth = 0 < at < fmt.frames - 1  # a key at the clip's end has no neighbour to take a slope from
            poses[:, :2] = motion.through(keys, fmt.frames) if smooth else motion.straight(keys, fmt.frames)
            self.objects[track_id - 1] = Thing(thing.look, poses, track_id, thing.depth)
        self.events = [e for e in self.events if not (e.kind == "jump" and set(e.track_ids) & {first, second})]
        self.events.append(Event("crossing", (first, second), at, 1))

    def scene(self) -> Scene:
        last = self.fmt.frames
        events = tuple(Event(e.kind, e.track_ids, e.start, min(e.frames, last - e.start))
                       for e in self.events if e.start < last)  # what the clip's end cut off
        return Scene(self.name, self.scenario, self.fmt, self.background, tuple(self.objects), tuple(self.occluders),
                     self.light, self.camera, self.noise, int(self.rng.integers(2**31)), events)


def random_scene(seed: int | Sequence[int], fmt: Format = Format(), name: str | None = None,
                 nuisance: bool = True) -> Scene:
    """1 to MAX_OBJECTS objects of any shape, size, texture and motion, look-alike twins among them, and
    by chance: twins crossing, an occlusion of up to MAX_HIDDEN_SECONDS, an exit and return, pillars."""
    b = _Builder(seed, fmt, "random", name, nuisance)
    rng, frames = b.rng, fmt.frames
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        if b.objects and rng.uniform() < 0.25:  # a twin of an object already there: same look and sizes
            original = b.objects[int(rng.integers(len(b.objects)))]
            twin = b.wander(original.look, original.poses[:, 2])
            b.events.append(Event("twins", (original.track_id, twin), 0, frames))
        else:
            b.wander()
    twins = [e.track_ids for e in b.events if e.kind == "twins"]
    if twins and frames >= 3 and rng.uniform() < 0.6:
        b.cross(*twins[int(rng.integers(len(twins)))], at=int(rng.integers(frames // 3, 2 * frames // 3 + 1)))
    ids = [int(i) for i in rng.permutation(len(b.objects)) + 1]
    if frames >= 10 and rng.uniform() < 0.5:
        start = int(rng.integers(frames // 10, frames // 2))
        b.hide(ids.pop(), start, min(fmt.frames_in(rng.uniform(0.2, MAX_HIDDEN_SECONDS)), frames - start - 1))
    if frames >= 10 and ids and rng.uniform() < 0.35:
        start = int(rng.integers(frames // 10, frames // 2))
        b.leave(ids.pop(), start, fmt.frames_in(rng.uniform(0.2, 2.0)), same_edge=rng.uniform() < 0.7)
    for _ in range(int(rng.integers(0, 3)) if rng.uniform() < 0.3 else 0):  # pillars objects may pass behind
        half = (rng.uniform(0.03, 0.12) * fmt.width, rng.uniform(0.15, 0.5) * fmt.height)
        look, radius = occluder_look(rng, *half)
        b.occlude(look, np.array([rng.uniform(0, fmt.width), rng.uniform(0, fmt.height), radius, rng.uniform(-20, 20)]))
    return b.scene()


def occlusion(seed: int | Sequence[int], fmt: Format = Format(), hidden_seconds: float = 1.0, others: int = 0,
              name: str | None = None, nuisance: bool = True) -> Scene:
    """Object 1 slides in at a steady speed behind an occluder, stops there wholly hidden for
    `hidden_seconds`, and slides out the other side. The occluder is as wide as the object across its
    path (plus MARGIN), so that it is hidden for about that long, not while it crosses a wide one."""
    hidden = fmt.frames_in(hidden_seconds)
    travel = (fmt.frames - hidden) // 2
    _need(travel >= 2, f"an occlusion of {hidden_seconds} s needs at least {hidden + 4} frames at {fmt.fps:g} fps, "
                       f"not {fmt.frames}")
    b = _Builder(seed, fmt, "occlusion", name, nuisance)
    radius = min(b.radius(), 0.2 * fmt.width)
    y = b.rng.uniform(0.3, 0.7) * fmt.height
    path = motion.straight([(0, 0.15 * fmt.width, y), (travel, 0.5 * fmt.width, y), (2 * travel, 0.85 * fmt.width, y)],
                           fmt.frames)
    track_id = b.add(random_look(b.rng), path, np.full(fmt.frames, radius), motion.spin(b.rng, fmt))
    b.hide(track_id, travel, hidden, across=0.0)
    _wanderers(b, others)
    return b.scene()


def crossing(seed: int | Sequence[int], fmt: Format = Format(), twins: bool = True, others: int = 0,
             name: str | None = None, nuisance: bool = True) -> Scene:
    """Objects 1 and 2 cross mid-clip, one from each side, the nearer over the other; look-alike twins
    (same shape, size and texture) unless `twins=False`."""
    _need(fmt.frames >= 3, f"a crossing needs at least 3 frames, not {fmt.frames}")
    b = _Builder(seed, fmt, "crossing", name, nuisance)
    first = b.wander()
    look = b.objects[0].look if twins else random_look(b.rng)
    second = b.wander(look, b.objects[0].poses[:, 2] if twins else None)
    if twins:
        b.events.append(Event("twins", (first, second), 0, fmt.frames))
    b.cross(first, second, at=fmt.frames // 2)
    _wanderers(b, others)
    return b.scene()


def exit_and_return(seed: int | Sequence[int], fmt: Format = Format(), outside_seconds: float = 1.0,
                    same_edge: bool = True, others: int = 0, name: str | None = None, nuisance: bool = True) -> Scene:
    """Object 1 leaves the frame by its nearest edge, stays wholly out of it for `outside_seconds`, and comes
    back (by the same edge unless `same_edge=False`) to where it left from."""
    outside = fmt.frames_in(outside_seconds)

    def travel(frames: int) -> int:  # to go out and come back: the clip less its time outside and in view
        return frames - outside - 2 * max(1, frames // 5)  # as long in view after it comes back as before

    needed = next(frames for frames in itertools.count(outside) if travel(frames) >= 4)
    _need(fmt.frames >= needed, f"an exit of {outside_seconds} s needs at least {needed} frames at {fmt.fps:g} fps, "
                                f"not {fmt.frames}")
    b = _Builder(seed, fmt, "exit-and-return", name, nuisance)
    track_id = b.wander()
    b.leave(track_id, max(1, fmt.frames // 5), outside, same_edge, travel(fmt.frames))
    _wanderers(b, others)
    return b.scene()


SCENARIOS = {"random": random_scene, "occlusion": occlusion, "crossing": crossing, "exit-and-return": exit_and_return}


def _wanderers(b: _Builder, count: int) -> None:
    for _ in range(count):
        b.wander()


def _need(condition: bool, sentence: str) -> None:
    if not condition:
        raise ValueError(sentence)


def _extent(look: Look, angles: np.ndarray) -> float:
    """How far the outline reaches along x, in unit radii, at the largest of these rotations (degrees)."""
    points = np.concatenate([np.asarray(contour) for contour in look.outline])
    turns = np.radians(np.asarray(angles))[:, None]
    return float(np.abs(points[:, 0] * np.cos(turns) - points[:, 1] * np.sin(turns)).max())


def _nearest_edge(point: np.ndarray, fmt: Format) -> int:
    """0 left, 1 right, 2 top, 3 bottom."""
    return int(np.argmin([point[0], fmt.width - point[0], point[1], fmt.height - point[1]]))


def _beyond_edge(point: np.ndarray, fmt: Format, away: float, edge: int) -> np.ndarray:
    x, y = point
    return np.array([(-away, y), (fmt.width + away, y), (x, -away), (x, fmt.height + away)][edge])


def _steps(start: np.ndarray, end: np.ndarray, speed: float) -> int:
    return max(1, int(np.ceil(np.hypot(*(end - start)) / speed)))
