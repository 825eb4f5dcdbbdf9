"""Paths, turns, growth, light and shake, frame by frame: the arrays a `Thing` and a `Scene` hold.

Positions are (frames, 2) arrays of world pixels; a key is (frame, x, y). Nothing here draws."""

from __future__ import annotations

import numpy as np

from .scene import Format


def through(keys: list[tuple[int, float, float]], frames: int, stops: set[int] = frozenset()) -> np.ndarray:
    """A smooth path through `keys` (frames in increasing order), held at the first and last key outside
    them. The path's velocity is continuous through each key (a cubic Hermite spline with the neighbours'
    slope), except at the keys whose index is in `stops`, where the object comes to rest."""
    times = np.array([k[0] for k in keys], dtype=np.float64)
    points = np.array([k[1:] for k in keys], dtype=np.float64)
    slopes = np.zeros_like(points)
    for i in range(1, len(keys) - 1):
        if i not in stops:
            slopes[i] = (points[i + 1] - points[i - 1]) / (times[i + 1] - times[i - 1])
    path = np.full((frames, 2), np.nan)  # every frame is set below: a gap would show
    t = np.arange(frames, dtype=np.float64)
    path[t <= times[0]] = points[0]
    path[t >= times[-1]] = points[-1]
    for i in range(len(keys) - 1):
        inside = (t >= times[i]) & (t < times[i + 1])
        span = times[i + 1] - times[i]
        s = ((t[inside] - times[i]) / span)[:, None]
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        path[inside] = h00 * points[i] + h10 * span * slopes[i] + h01 * points[i + 1] + h11 * span * slopes[i + 1]
    return path


def straight(keys: list[tuple[int, float, float]], frames: int) -> np.ndarray:
    """Constant speed from key to key (a sharp turn or stop at each), held outside them."""
    times = [k[0] for k in keys]
    t = np.arange(frames)
    return np.stack([np.interp(t, times, [k[1] for k in keys]), np.interp(t, times, [k[2] for k in keys])], 1)


def glide(rng: np.random.Generator, fmt: Format, radius: float, waypoints: int = 4) -> np.ndarray:
    """Smooth wandering through random points of the frame."""
    times = np.unique(np.linspace(0, fmt.frames - 1, waypoints).round().astype(int))  # short clips: fewer
    return through([(int(t), *_inside(rng, fmt, radius)) for t in times], fmt.frames)


def bounce(rng: np.random.Generator, fmt: Format, radius: float) -> np.ndarray:
    """A straight line at constant speed, reflected off the frame's edges."""
    speed = rng.uniform(0.15, 0.6) * min(fmt.width, fmt.height) / fmt.fps  # pixels a frame
    heading = rng.uniform(0, 2 * np.pi)
    start = np.array(_inside(rng, fmt, radius))
    free = np.array([fmt.width, fmt.height]) - 2 * radius  # the room the centre moves in
    unfolded = start - radius + np.arange(fmt.frames)[:, None] * speed * np.array([np.cos(heading), np.sin(heading)])
    folded = np.mod(unfolded, 2 * free)
    return radius + np.where(folded > free, 2 * free - folded, folded)


def dash(rng: np.random.Generator, fmt: Format, radius: float) -> tuple[np.ndarray, list[int]]:
    """Sudden motion: still, then a dash of a few frames to another place, then still again; and the
    frames where each dash starts."""
    keys, starts, frame = [(0, *_inside(rng, fmt, radius))], [], 0
    while True:
        frame += fmt.frames_in(rng.uniform(0.3, 1.5))
        if frame >= fmt.frames - 2:
            return straight(keys, fmt.frames), starts
        starts.append(frame)
        keys += [(frame, *keys[-1][1:]), (frame + int(rng.integers(2, 6)), *_inside(rng, fmt, radius))]
        frame = keys[-1][0]


def hold(path: np.ndarray, start: int, frames: int) -> np.ndarray:
    """`path` stopped at its point of frame `start` for `frames` frames, and then resumed where it was:
    its end falls off the clip."""
    held = np.concatenate([path[:start], np.repeat(path[start:start + 1], frames, 0), path[start:]])
    return held[:len(path)]


def spin(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """A rotation in degrees on every frame: still, turning steadily, or rocking."""
    start, t = rng.uniform(0, 360), np.arange(fmt.frames) / fmt.fps
    kind = rng.choice(["still", "turn", "rock"])
    if kind == "turn":
        return start + rng.uniform(-120, 120) * t
    if kind == "rock":
        return start + rng.uniform(10, 45) * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
    return np.full(fmt.frames, start)


def grow(rng: np.random.Generator, fmt: Format, radius: float) -> np.ndarray:
    """A radius on every frame: steady, zooming by up to 2x in or out over the clip, or swelling and
    shrinking (an object coming nearer and going away)."""
    t = np.arange(fmt.frames) / max(1, fmt.frames - 1)
    kind = rng.choice(["steady", "zoom", "swell"])
    if kind == "zoom":
        return radius * np.exp(np.log(rng.uniform(0.5, 2.0)) * t)
    if kind == "swell":
        cycles, phase = rng.uniform(0.5, 2), rng.uniform()
        return radius * np.exp(np.log(rng.uniform(1.1, 1.6)) * np.sin(2 * np.pi * (cycles * t + phase)))
    return np.full(fmt.frames, radius)


def lighting(rng: np.random.Generator, fmt: Format) -> tuple[np.ndarray, int | None]:
    """A gain per RGB channel on every frame: steady, drifting (a cloud), or switched at one frame (a lamp);
    and the frame it is switched at."""
    frames, t = fmt.frames, np.arange(fmt.frames) / fmt.fps
    tint = rng.uniform(0.9, 1.1, 3)
    kind = rng.choice(["steady", "drift", "switch"])
    if kind == "drift":
        gain = 1 + rng.uniform(0.15, 0.35) * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3))
        return gain[:, None] * tint, None
    if kind == "switch" and frames > 2:
        at = int(rng.integers(1, frames - 1))
        gain = np.where(np.arange(frames) < at, 1.0, rng.choice([rng.uniform(0.5, 0.75), rng.uniform(1.25, 1.5)]))
        return gain[:, None] * tint, at
    return np.tile(tint, (frames, 1)), None


def shake(rng: np.random.Generator, fmt: Format, pixels: float) -> np.ndarray:
    """A hand-held camera: (frames, 3) shifts dx, dy of up to about `pixels` and rotations of up to a
    degree, a slow sway and a quick jitter."""
    if pixels <= 0:
        return np.zeros((fmt.frames, 3))
    sway = np.cumsum(rng.normal(0, 1, (fmt.frames, 3)), axis=0)
    sway -= sway.mean(axis=0)
    sway /= max(1e-9, np.abs(sway).max())
    jitter = rng.uniform(-1, 1, (fmt.frames, 3))
    motion = 0.7 * sway + 0.3 * jitter
    return motion * np.array([pixels, pixels, min(1.0, pixels / 10)])


def _inside(rng: np.random.Generator, fmt: Format, radius: float) -> tuple[float, float]:
    """A point where an object of this radius is wholly in the frame, where the frame allows it."""
    def along(side: float) -> float:
        return float(rng.uniform(radius, side - radius)) if side > 2 * radius else side / 2
    return along(fmt.width), along(fmt.height)
