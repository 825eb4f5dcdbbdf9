"""Shapes and textures, sampled: what objects, occluders and backgrounds look like.

Every outline lies within the unit circle, so an object's radius bounds where its pixels can be: the
builders rely on that to hide an object wholly behind an occluder, or wholly outside the frame."""

from __future__ import annotations

import numpy as np

from .scene import Look, Texture

SHAPES = ("disc", "ellipse", "box", "triangle", "polygon", "star", "ring", "cross", "blob")
# What objects wear; `footage` is a crop of the real clip (a noise texture stands in where it is absent).
OBJECT_TEXTURES = ("solid", "stripes", "checker", "gradient", "noise", "dots", "tiles", "footage")
BACKGROUNDS = ("footage", "noise", "tiles", "stripes", "gradient")
# Where in the real clip a footage texture is cut from: a few places, so that one run decodes a few frames.
FOOTAGE_PLACES = 8

_CIRCLE = 64  # vertices of a round outline: under 0.2 px from a true circle at a radius of 150 px


def outline(shape: str, rng: np.random.Generator) -> tuple:
    """The contours of one `shape` (its proportions drawn from `rng`), within the unit circle."""
    if shape == "disc":
        return (_ellipse(1.0),)
    if shape == "ellipse":
        return (_ellipse(rng.uniform(0.4, 0.8)),)
    if shape == "box":
        aspect = rng.uniform(0.35, 1.0)
        w = 1 / np.hypot(1, aspect)
        return (_points([(w, aspect * w), (-w, aspect * w), (-w, -aspect * w), (w, -aspect * w)]),)
    if shape == "triangle":
        angles = np.radians([90, 210, 330] + rng.uniform(-15, 15, 3))
        return (_points(np.stack([np.cos(angles), np.sin(angles)], 1)),)
    if shape == "polygon":
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 9)))
        radii = rng.uniform(0.75, 1.0, len(angles))
        return (_points(np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)),)
    if shape == "star":
        tips, inner = int(rng.integers(4, 8)), rng.uniform(0.38, 0.6)
        angles = np.pi / 2 + np.arange(2 * tips) * np.pi / tips
        radii = np.where(np.arange(2 * tips) % 2 == 0, 1.0, inner)
        return (_points(np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)),)
    if shape == "ring":
        return (_ellipse(1.0), _ellipse(1.0, rng.uniform(0.45, 0.65)))
    if shape == "cross":
        arm = rng.uniform(0.3, 0.5)
        half = [(1, arm), (arm, arm), (arm, 1), (-arm, 1), (-arm, arm), (-1, arm),
                (-1, -arm), (-arm, -arm), (-arm, -1), (arm, -1), (arm, -arm), (1, -arm)]
        return (_points(np.array(half) / np.hypot(1, arm)),)
    if shape == "blob":
        t = np.linspace(0, 2 * np.pi, _CIRCLE, endpoint=False)
        radius = 1 + sum(rng.uniform(0, 0.25) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
        radius /= radius.max()
        return (_points(np.stack([radius * np.cos(t), radius * np.sin(t)], 1)),)
    raise ValueError(f"no shape {shape!r}: one of {', '.join(SHAPES)}")


def random_look(rng: np.random.Generator, shape: str | None = None) -> Look:
    shape = shape or str(rng.choice(SHAPES))
    return Look(shape, outline(shape, rng), random_texture(rng, OBJECT_TEXTURES))


def occluder_look(rng: np.random.Generator, half_width: float, half_height: float) -> tuple[Look, float]:
    """A box of these half sides, and the radius to draw it at (its corners lie on the unit circle)."""
    radius = float(np.hypot(half_width, half_height))
    w, h = half_width / radius, half_height / radius
    corners = _points([(w, h), (-w, h), (-w, -h), (w, -h)])
    return Look("occluder", (corners,), random_texture(rng, OBJECT_TEXTURES)), radius


def random_texture(rng: np.random.Generator, kinds: tuple[str, ...]) -> Texture:
    kind = str(rng.choice(kinds))
    colours = tuple(_colour(rng) for _ in range(int(rng.integers(2, 4))))
    return Texture(kind, colours, scale=float(rng.uniform(0.08, 0.4)), angle=float(rng.uniform(0, 180)),
                   seed=int(rng.integers(2**31)), at=float(rng.integers(FOOTAGE_PLACES) / FOOTAGE_PLACES),
                   crop=_crop(rng))


def random_background(rng: np.random.Generator) -> Texture:
    texture = random_texture(rng, BACKGROUNDS)
    # backgrounds are busier than objects: finer features, muted colours that objects stand out from or not
    return Texture(texture.kind, tuple(tuple(int(c * 0.4 + 60) for c in colour) for colour in texture.colours),
                   scale=texture.scale / 3, angle=texture.angle, seed=texture.seed, at=texture.at, crop=texture.crop)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _crop(rng: np.random.Generator) -> tuple[float, float, float, float]:
    w = float(rng.uniform(0.3, 1.0))
    h = min(1.0, w * float(rng.uniform(0.6, 1.0)))
    return (float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h)), w, h)


def _ellipse(aspect: float, scale: float = 1.0):
    t = np.linspace(0, 2 * np.pi, _CIRCLE, endpoint=False)
    return _points(np.stack([scale * np.cos(t), scale * aspect * np.sin(t)], 1))


def _points(points) -> tuple[tuple[float, float], ...]:
    return tuple((round(float(x), 5), round(float(y), 5)) for x, y in np.asarray(points, dtype=np.float64))
