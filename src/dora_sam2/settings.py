"""The node's settings, read once from the environment (the dataflow YAML's `env:`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("dora_sam2")

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MODES = ("segment", "track")
MASK_LAYOUTS = ("union", "stack")


class ConfigError(Exception):
    """A setting the node cannot start with. Its text is the one sentence the user sees."""


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    frame_buffer: int = 30  # frames kept per camera to match a prompt to the frame it was computed on
    stats_every_s: float = 10.0  # period of the "answered / skipped / latency" log line; 0 turns it off
    warmup: bool = True
    threads: int = 0  # torch CPU threads; 0 = the cores this process may run on
    compile: bool = False  # torch.compile the image encoder (slow start, faster frames on some machines)
    stats_file: str = ""  # where to write the final stats as JSON (the benchmark reads it)
    mode: str = "segment"  # segment: answer each prompt on its frame; track: follow objects on every frame
    max_objects: int = 16  # track mode: live tracks at most; further new objects are refused, said once
    lost_seconds: float | None = 3.0  # track mode: a track SAM2 has not seen for this long (camera time) ends
    lost_frames: int | None = None  # track mode, the older setting: ... for this many answered frames
    match_iou: float = 0.3  # track mode: least overlap of a detection and a track's box to be that track
    detector_misses: int = 3  # track mode: a track no detection round confirms this many times ends; 0 = off
    revive_seconds: float = 10.0  # track mode: a detection where a track ended this lately takes its id back
    min_confidence: float = 0.0  # detections: boxes the detector is less sure of are dropped
    classes: frozenset[str] = frozenset()  # detections: only these labels (empty = all)
    image_size: int = 0  # the model's square input in pixels; 0 = the checkpoint's own (1024 for SAM 2)
    every_frame: bool = False  # answer every frame (track) or prompt (segment) in order, none skipped
    mask_layout: str = "union"  # `mask`: the objects' union, one H*W mask (the seed's format), or `stack`

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        device = env.get("DEVICE", "auto").strip().lower() or "auto"
        if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ConfigError(f"DEVICE={device!r} is not one of auto, cpu, cuda, cuda:N, mps.")
        dtype = env.get("DTYPE", "auto").strip().lower() or "auto"
        if dtype not in DTYPES:
            raise ConfigError(f"DTYPE={dtype!r} is not one of {', '.join(DTYPES)}.")
        mode = env.get("MODE", "segment").strip().lower() or "segment"
        if mode not in MODES:
            raise ConfigError(f"MODE={mode!r} is not one of {', '.join(MODES)}.")
        mask_layout = env.get("MASK_LAYOUT", "union").strip().lower() or "union"
        if mask_layout not in MASK_LAYOUTS:
            raise ConfigError(f"MASK_LAYOUT={mask_layout!r} is not one of {', '.join(MASK_LAYOUTS)}.")
        match_iou = _float(env, "MATCH_IOU", cls.match_iou, minimum=0.0)
        lost_seconds, lost_frames = _float(env, "LOST_SECONDS", cls.lost_seconds, minimum=0.0), None
        if (env.get("LOST_FRAMES") or "").strip() and not (env.get("LOST_SECONDS") or "").strip():
            lost_seconds, lost_frames = None, _int(env, "LOST_FRAMES", 30, minimum=1)
            log.warning("LOST_FRAMES counts answered frames, which come slower on a slower machine: it still "
                        "works, but set LOST_SECONDS (camera time) instead.")
        min_confidence = _float(env, "MIN_CONFIDENCE", cls.min_confidence, minimum=0.0)
        if min_confidence > 1:
            raise ConfigError(f"MIN_CONFIDENCE={min_confidence} is above 1: it is a detector's confidence, 0 to 1.")
        if match_iou > 1:
            raise ConfigError(f"MATCH_IOU={match_iou} is above 1: it is an overlap ratio between 0 and 1.")
        return cls(
            model=env.get("MODEL", DEFAULT_MODEL).strip() or DEFAULT_MODEL,
            device=device,
            dtype=dtype,
            frame_buffer=_int(env, "FRAME_BUFFER", cls.frame_buffer, minimum=1),
            stats_every_s=_float(env, "STATS_EVERY", cls.stats_every_s, minimum=0.0),
            warmup=_bool(env, "WARMUP", cls.warmup),
            threads=_int(env, "THREADS", cls.threads, minimum=0),
            compile=_bool(env, "COMPILE", cls.compile),
            stats_file=env.get("STATS_FILE", "").strip(),
            mode=mode,
            max_objects=_int(env, "MAX_OBJECTS", cls.max_objects, minimum=1),
            lost_seconds=lost_seconds,
            lost_frames=lost_frames,
            match_iou=match_iou,
            detector_misses=_int(env, "DETECTOR_MISSES", cls.detector_misses, minimum=0),
            revive_seconds=_float(env, "REVIVE_SECONDS", cls.revive_seconds, minimum=0.0),
            min_confidence=min_confidence,
            classes=frozenset(c.strip() for c in env.get("CLASSES", "").split(",") if c.strip()),
            every_frame=_bool(env, "EVERY_FRAME", cls.every_frame),
            image_size=_int(env, "IMAGE_SIZE", cls.image_size, minimum=0),
            mask_layout=mask_layout,
        )


def _int(env, key: str, default: int, minimum: int) -> int:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ConfigError(f"{key}={value} is below its minimum of {minimum}.")
    return value


def _float(env, key: str, default: float, minimum: float) -> float:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number.") from None
    if not value >= minimum:
        raise ConfigError(f"{key}={value} is below its minimum of {minimum}.")
    return value


def _bool(env, key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}={raw!r} is not a boolean (use 1 or 0).")
