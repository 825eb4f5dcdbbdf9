"""What a clip of the world holds, as data: a `Scene` says everything the renderer draws, frame by frame.

Scenes are made by the builders in `scenarios.py` from a seed, and are plain values: the renderer draws
the same frames from the same scene, and `to_json` / `from_json` carry one through a file unchanged (the
world command writes each clip's scene beside its frames, so a clip can be remade or inspected later).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass

import numpy as np

OCCLUDER = 0  # the track id of a thing that is drawn but never annotated: a foreground occluder


@dataclass(frozen=True)
class Format:
    """A clip's frame size, rate and length."""

    width: int = 640
    height: int = 480
    fps: float = 30.0
    frames: int = 150

    def frames_in(self, seconds: float) -> int:
        return max(1, round(seconds * self.fps))


@dataclass(frozen=True)
class Texture:
    """How a surface is painted: an object's, an occluder's or the background's.

    `kind` is one of render.TEXTURES. `scale` is a feature's size (a stripe, a tile, a blob of noise) as a
    fraction of the surface; `at` and `crop` place a `footage` texture in the real clip (where in its run,
    0 to 1, and which part of the frame, as fractions x, y, width, height), so that a scene does not depend
    on which clip is at hand."""

    kind: str
    colours: tuple[tuple[int, int, int], ...]  # RGB
    scale: float = 0.25
    angle: float = 0.0  # degrees: stripes, checks and gradients
    seed: int = 0  # noise and tiles
    at: float = 0.0
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Look:
    """An object's appearance: its outline and its texture. Twins share one Look.

    `outline` holds contours in the object's own unit coordinates (every point within radius 1 of its
    centre); the first is the outside, later ones cut holes (a ring)."""

    shape: str  # the object's label, and its COCO category
    outline: tuple[tuple[tuple[float, float], ...], ...]
    texture: Texture


@dataclass(frozen=True, eq=False)
class Thing:
    """An object (a track id from 1) or an occluder (`OCCLUDER`): a look, and its pose on every frame.

    `poses` is (frames, 4): the centre x, y in world pixels (the camera's frame before shake), the radius in
    pixels (the outline's unit circle scaled) and the rotation in degrees. `depth` orders objects among
    themselves (larger is nearer, drawn later); occluders are in front of every object."""

    look: Look
    poses: np.ndarray
    track_id: int = OCCLUDER
    depth: float = 0.0

    def __post_init__(self):
        # a thousandth of a pixel is below what any frame shows, and keeps scene files short
        object.__setattr__(self, "poses", np.round(np.asarray(self.poses, dtype=np.float64), 3))


@dataclass(frozen=True)
class Event:
    """What a builder put in a scene on purpose: `kind` (occlusion, exit, crossing, jump, twins, light) for
    `track_ids`, from frame `start` for `frames` frames. The annotations hold what the frames show."""

    kind: str
    track_ids: tuple[int, ...]
    start: int
    frames: int


@dataclass(frozen=True, eq=False)
class Scene:
    """A whole clip: its format, background, objects, occluders, light and camera on every frame.

    `light` is (frames, 3), a gain per RGB channel; `camera` is (frames, 3), the shake: a shift dx, dy in
    pixels and a rotation in degrees about the frame's centre. `noise` is the sensor noise's standard
    deviation in grey levels, drawn from `seed` and the frame's index."""

    name: str
    scenario: str
    format: Format
    background: Texture
    objects: tuple[Thing, ...]
    occluders: tuple[Thing, ...] = ()
    light: np.ndarray = None
    camera: np.ndarray = None
    noise: float = 0.0
    seed: int = 0
    events: tuple[Event, ...] = field(default=())

    def __post_init__(self):
        frames = self.format.frames
        light = np.ones((frames, 3)) if self.light is None else self.light
        camera = np.zeros((frames, 3)) if self.camera is None else self.camera
        object.__setattr__(self, "light", np.round(np.asarray(light, dtype=np.float64), 4))
        object.__setattr__(self, "camera", np.round(np.asarray(camera, dtype=np.float64), 3))
        for thing in self.objects + self.occluders:
            if len(thing.poses) != frames:
                raise ValueError(f"scene {self.name}: a thing has {len(thing.poses)} poses for {frames} frames")
        ids = [thing.track_id for thing in self.objects]
        if OCCLUDER in ids or len(set(ids)) != len(ids):
            raise ValueError(f"scene {self.name}: objects need distinct track ids from 1, not {ids}")

    def thing(self, track_id: int) -> Thing:
        return next(thing for thing in self.objects if thing.track_id == track_id)


def to_json(scene: Scene) -> str:
    return json.dumps(_plain(scene), separators=(",", ":"))


def from_json(text: str) -> Scene:
    return _build(Scene, json.loads(text))


def _plain(value):
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


_NESTED = {  # the dataclass fields that hold dataclasses, for reading a scene back
    (Scene, "format"): Format, (Scene, "background"): Texture, (Scene, "objects"): (Thing,),
    (Scene, "occluders"): (Thing,), (Scene, "events"): (Event,), (Thing, "look"): Look, (Look, "texture"): Texture,
}


def _build(cls, data: dict):
    values = {}
    for f in fields(cls):
        value, nested = data[f.name], _NESTED.get((cls, f.name))
        if isinstance(nested, tuple):
            value = tuple(_build(nested[0], item) for item in value)
        elif nested is not None:
            value = _build(nested, value)
        elif isinstance(value, list):
            value = np.array(value, dtype=np.float64) if f.name in ("poses", "light", "camera") else _tuples(value)
        values[f.name] = value
    return cls(**values)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
