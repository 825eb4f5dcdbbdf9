"""A `Scene` drawn, frame by frame, with the id of the thing each pixel shows.

Things are drawn back to front (the background, objects by depth, then occluders) into the image and, at
the same pixels, into an id buffer: an object's mask on a frame is exactly where the buffer holds its
track id, so masks are disjoint and hold only what can be seen. Edges are hard (no antialiasing): a pixel
is a thing's when its centre lies inside the thing's outline, and belongs to exactly one thing. Light and sensor noise change the image, never the ids."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .scene import Scene, Texture, Thing

TEXTURES = ("solid", "stripes", "checker", "gradient", "noise", "dots", "tiles", "footage")
PATCH = 256  # pixels of a thing's texture, across its unit circle's square
_FOOTAGE_FRAMES = 16  # decoded footage frames kept at once (scenes ask for a few places: looks.FOOTAGE_PLACES)


class FootageError(ValueError):
    """The footage file cannot be read. Its text is the sentence the user sees."""


class Footage:
    """A real clip that backgrounds and textures are cut from, read when a scene asks for a frame."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        capture = cv2.VideoCapture(str(self.path))
        self.count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        if self.count < 1:
            raise FootageError(f"cannot read footage {self.path}: give a video file opencv reads, or --footage none")
        self._frames: dict[int, np.ndarray] = {}

    def frame(self, at: float) -> np.ndarray:
        """The RGB frame at `at` (0 to 1) of the clip's run."""
        index = min(self.count - 1, max(0, int(at * self.count)))
        if index not in self._frames:
            capture = cv2.VideoCapture(str(self.path))
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, bgr = capture.read()
            capture.release()
            if not ok:
                raise FootageError(f"cannot read frame {index} of footage {self.path}")
            if len(self._frames) >= _FOOTAGE_FRAMES:
                self._frames.pop(next(iter(self._frames)))
            self._frames[index] = np.ascontiguousarray(bgr[..., ::-1])
        return self._frames[index]


@dataclass(frozen=True)
class Silhouette:
    """An object's own pixels in the frame, as if nothing were in front of it (amodal)."""

    bbox: tuple[int, int, int, int]  # x, y, width, height, in pixel edges
    area: int


@dataclass
class Rendered:
    rgb: np.ndarray  # (H, W, 3) uint8
    ids: np.ndarray  # (H, W) int16: the track id a pixel shows; 0 the background; -1, -2, ... occluders
    silhouettes: dict[int, Silhouette]  # by track id: objects with a pixel in the frame, occlusion ignored


def render(scene: Scene, footage: Footage | None = None) -> Iterator[Rendered]:
    """Every frame of `scene`, in order. Without `footage`, a footage texture is noise in its colours."""
    fmt = scene.format
    background = paint(scene.background, fmt.width, fmt.height, footage)
    things = sorted(scene.objects, key=lambda t: t.depth) + list(scene.occluders)
    labels = [t.track_id for t in sorted(scene.objects, key=lambda t: t.depth)] + \
             [-(i + 1) for i in range(len(scene.occluders))]
    patches = [paint(t.look.texture, PATCH, PATCH, footage) for t in things]
    for index in range(fmt.frames):
        camera = _camera(scene.camera[index], fmt.width, fmt.height)
        rgb = cv2.warpAffine(background, camera[:2], (fmt.width, fmt.height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        ids = np.zeros((fmt.height, fmt.width), np.int16)
        silhouettes = {}
        for thing, label, patch in zip(things, labels, patches):
            silhouette = _draw(thing, index, label, patch, camera, rgb, ids)
            if silhouette is not None and label > 0:
                silhouettes[label] = silhouette
        yield Rendered(_expose(rgb, scene, index), ids, silhouettes)


def _draw(thing: Thing, index: int, label: int, patch: np.ndarray, camera: np.ndarray, rgb: np.ndarray,
          ids: np.ndarray) -> Silhouette | None:
    """`thing` as it is on frame `index`, painted over `rgb` and `ids` within its box; its silhouette."""
    x, y, radius, angle = thing.poses[index]
    turn = np.radians(angle)
    rotation = radius * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    placed = np.vstack([np.hstack([rotation, [[x], [y]]]), [0, 0, 1]])
    to_image = (camera @ placed)[:2]  # unit coordinates -> image pixels (2x3)
    contours = [np.asarray(c) @ to_image[:, :2].T + to_image[:, 2] for c in thing.look.outline]
    corners = np.concatenate(contours)
    height, width = ids.shape
    x0, y0 = np.maximum(0, np.floor(corners.min(axis=0)).astype(int) - 1)
    x1, y1 = np.minimum([width, height], np.ceil(corners.max(axis=0)).astype(int) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    mask = _raster([c - [x0, y0] for c in contours], x1 - x0, y1 - y0)
    area = int(np.count_nonzero(mask))
    if not area:
        return None
    from_patch = to_image @ np.array([[2 / PATCH, 0, 1 / PATCH - 1], [0, 2 / PATCH, 1 / PATCH - 1], [0, 0, 1]])

    from_patch[:, 2] -= [x0 + 0.5, y0 + 0.5]  # warpAffine puts pixel centres at integer coordinates
    painted = cv2.warpAffine(patch, from_patch, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
    cv2.copyTo(painted, mask, rgb[y0:y1, x0:x1])
    ids[y0:y1, x0:x1][mask.view(bool)] = label
    bx, by, bw, bh = cv2.boundingRect(mask)
    return Silhouette((int(x0 + bx), int(y0 + by), int(bw), int(bh)), area)


def _raster(contours: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """The pixels whose centres lie inside the contours (even-odd: a later contour inside the first is a
    hole), as a (height, width) uint8 0/1 mask; pixel (x, y) spans [x, x + 1) x [y, y + 1).

    cv2.fillPoly also fills every pixel the outline touches: half a pixel too much all round, 10% of the
    area of a disc of radius 10. Here each row's pixel centres are tested against the edges it crosses."""
    starts = np.concatenate(contours)
    ends = np.concatenate([np.roll(c, -1, axis=0) for c in contours])
    centres = np.arange(height)[:, None] + 0.5
    low, high = np.minimum(starts[:, 1], ends[:, 1]), np.maximum(starts[:, 1], ends[:, 1])
    rows, edges = np.nonzero((centres >= low) & (centres < high))  # half-open: a vertex is crossed once
    (ax, ay), (bx, by) = starts[edges].T, ends[edges].T
    crossing = ax + (rows + 0.5 - ay) * (bx - ax) / (by - ay)
    columns = np.clip(np.ceil(crossing - 0.5), 0, width).astype(int)  # the first pixel centred at or past it
    toggles = np.zeros((height, width + 1), np.int32)
    np.add.at(toggles, (rows, columns), 1)
    return (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(np.uint8)


def _camera(shake: np.ndarray, width: int, height: int) -> np.ndarray:
    """World -> image (3x3): the shake's rotation about the frame's centre, then its shift."""
    dx, dy, degrees = shake
    matrix = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), -degrees, 1.0), [0, 0, 1]])
    matrix[:2, 2] += [dx, dy]
    return matrix


def _expose(rgb: np.ndarray, scene: Scene, index: int) -> np.ndarray:
    """The light of frame `index` and the sensor's noise, on the drawn image."""
    gain = scene.light[index]
    if scene.noise <= 0 and np.allclose(gain, 1):
        return rgb
    exposed = cv2.multiply(rgb, (*gain.tolist(), 0), dtype=cv2.CV_32F)
    if scene.noise > 0:
        noise = np.empty_like(exposed)
        # OpenCV's generator, seeded per frame: a third of the time numpy's takes for a frame of noise
        cv2.setRNGSeed((scene.seed * 1_000_003 + index) % 2**31)
        cv2.randn(noise, 0.0, float(scene.noise))
        cv2.add(exposed, noise, dst=exposed)
    return cv2.convertScaleAbs(cv2.max(exposed, 0.0))  # rounded, and 255 at most


def paint(texture: Texture, width: int, height: int, footage: Footage | None = None) -> np.ndarray:
    """The texture as a (height, width, 3) uint8 RGB image."""
    colours = np.array(texture.colours, dtype=np.float32)
    kind = texture.kind
    if kind == "footage" and footage is not None:
        return _footage(footage, texture, width, height)
    if kind == "solid":
        return np.broadcast_to(colours[0].astype(np.uint8), (height, width, 3)).copy()
    size = max(width, height)
    feature = max(2.0, texture.scale * size)
    turn = np.radians(texture.angle)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xs * np.cos(turn) + ys * np.sin(turn)
    v = -xs * np.sin(turn) + ys * np.cos(turn)
    if kind == "stripes":
        return _palette(colours, (np.floor(u / feature) % len(colours)).astype(int))
    if kind == "checker":
        return _palette(colours, ((np.floor(u / feature) + np.floor(v / feature)) % 2).astype(int))
    if kind == "gradient":
        return _blend(colours, (u - u.min()) / max(1e-6, float(u.max() - u.min())))
    if kind == "dots":
        du, dv = (u % feature) / feature - 0.5, (v % feature) / feature - 0.5
        return _palette(colours, (np.hypot(du, dv) < 0.3).astype(int))
    if kind == "tiles":
        rng = np.random.default_rng(texture.seed)
        cells = rng.integers(0, len(colours), (int(np.ceil(height / feature)) + 1, int(np.ceil(width / feature)) + 1))
        return _palette(colours, cells[(ys / feature).astype(int), (xs / feature).astype(int)])
    if kind in ("noise", "footage"):  # footage without a clip at hand: noise in the same colours
        return _blend(colours, _value_noise(texture.seed, width, height, feature))
    raise ValueError(f"no texture {kind!r}: one of {', '.join(TEXTURES)}")


def _footage(footage: Footage, texture: Texture, width: int, height: int) -> np.ndarray:
    frame = footage.frame(texture.at)
    fh, fw = frame.shape[:2]
    x, y, w, h = texture.crop
    x0, y0 = int(x * fw), int(y * fh)
    x1, y1 = max(x0 + 1, int((x + w) * fw)), max(y0 + 1, int((y + h) * fh))
    return cv2.resize(frame[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_AREA)


def _value_noise(seed: int, width: int, height: int, feature: float) -> np.ndarray:
    """Smooth noise in [0, 1]: two octaves of random values on grids, upsampled."""
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width), np.float32)
    for octave, weight in ((1, 0.7), (3, 0.3)):
        cells = max(2, int(np.ceil(max(width, height) / feature * octave / 2)))
        grid = rng.random((cells, cells)).astype(np.float32)
        total += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip((total - total.min()) / max(1e-6, float(total.max() - total.min())), 0, 1)


def _palette(colours: np.ndarray, index: np.ndarray) -> np.ndarray:
    return colours.astype(np.uint8)[index]


def _blend(colours: np.ndarray, t: np.ndarray) -> np.ndarray:
    """t in [0, 1] along the colours in order."""
    position = t * (len(colours) - 1)
    low = np.minimum(position.astype(int), len(colours) - 2)
    frac = (position - low)[..., None]
    return np.clip(colours[low] * (1 - frac) + colours[low + 1] * frac + 0.5, 0, 255).astype(np.uint8)
