"""The node's settings, read once from the environment (the dataflow YAML's `env:`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields

log = logging.getLogger("dora_sam2")

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MODES = ("segment", "track")
MASK_LAYOUTS = ("union", "stack")
NON_OVERLAPS = ("off", "memory", "all")  # NON_OVERLAP: where no pixel belongs to two objects
# SAM 3's own score threshold for a detection (Sam3VideoModel's score_threshold_detection): what a phrase
# finds when MIN_CONFIDENCE is 0, its default. Its processor's default of 0.3 keeps more false instances.
PHRASE_MIN_SCORE = 0.5


class ConfigError(Exception):
    """A setting the node cannot start with. Its text is the one sentence the user sees."""


# REVIVE_REACH_GROWTH's largest: past 1000 box diagonals a second an ended track already reaches across any frame
# within a few ms, and a reach that grows without bound would overflow to infinity, which the matching cannot weigh.
MAX_REVIVE_REACH_GROWTH = 1000.0


@dataclass(frozen=True)
class Limits:
    """A bound on every count that comes from outside, so that no neighbour, however wrong its messages,
    makes a node grow without end. Each has a setting of the same name in capitals (the README's Limits
    table says what happens past each)."""

    max_pixels: int = 3840 * 2160  # per frame: raw, or what a compressed image's header declares (4K UHD)
    max_boxes: int = 100  # per detection message: the most confident are kept, the rest counted
    max_points: int = 64  # per object of a `points` message (or a click)
    max_cameras: int = 16  # distinct camera ids a node keeps anything for
    max_waiting: int = 64  # answers waiting for their frames, all cameras together (viewers, consumers)
    max_masks: int = 1000  # masks of one answer a viewer, the dataset writer or a consumer reads
    max_phrases: int = 16  # per `text` message (SAM 3): each phrase costs a detector pass per detection round
    max_clicks: int = 32  # clicks queued: per camera in the node, in total in the click node
    max_ended_tracks: int = 64  # ended tracks remembered for their ids to come back, per camera
    max_remove: int = 1000  # track ids in one `remove` message: the defaults let 256 live (16 objects x 16 cameras)
    max_connections: int = 32  # the click server's open connections
    max_client_connections: int = 16  # ... of them from one client address
    read_timeout: float = 10.0  # seconds the click server gives a client to send its whole request, head and body
    log_ids: int = 10  # ids named in one log line; the rest are counted

    @classmethod
    def from_env(cls, env=None) -> "Limits":
        env = os.environ if env is None else env
        d = cls()
        return cls(
            max_pixels=int_setting(env, "MAX_PIXELS", d.max_pixels, minimum=1),
            max_boxes=int_setting(env, "MAX_BOXES", d.max_boxes, minimum=1),
            max_points=int_setting(env, "MAX_POINTS", d.max_points, minimum=1),
            max_cameras=int_setting(env, "MAX_CAMERAS", d.max_cameras, minimum=1),
            max_waiting=int_setting(env, "MAX_WAITING", d.max_waiting, minimum=1),
            max_masks=int_setting(env, "MAX_MASKS", d.max_masks, minimum=1),
            max_clicks=int_setting(env, "MAX_CLICKS", d.max_clicks, minimum=1),
            max_phrases=int_setting(env, "MAX_PHRASES", d.max_phrases, minimum=1),
            max_ended_tracks=int_setting(env, "MAX_ENDED_TRACKS", d.max_ended_tracks, minimum=0),
            max_remove=int_setting(env, "MAX_REMOVE", d.max_remove, minimum=1),
            max_connections=int_setting(env, "MAX_CONNECTIONS", d.max_connections, minimum=1),
            max_client_connections=int_setting(env, "MAX_CLIENT_CONNECTIONS", d.max_client_connections, minimum=1),
            read_timeout=float_setting(env, "READ_TIMEOUT", d.read_timeout, minimum=0.1),
            log_ids=int_setting(env, "LOG_IDS", d.log_ids, minimum=1),
        )


class FixedLimits:
    """The bounds on what comes from outside that no setting changes: each follows from what it bounds (a
    phrase SAM 3 reads, a click the page sends), not from the machine or the deployment. With `Limits`,
    the one list of them: the README's Limits table names each, and a test holds it to this class."""

    DETECTIONS_WAITING = 30  # prompts waiting for their frames, per camera and prompt source
    DRAWN_OBJECTS = 64  # masks the click page keeps to draw, one per object label: labels come from messages
    # the dataset writer's categories, one per label: past it, further labels share one category (a sender
    # minting a label per message would otherwise grow the file's category list without end)
    MAX_CATEGORIES = 1000
    # SAM 3: phrases whose text embedding is kept: a node asked for a few concepts at a time re-encodes none
    TEXT_EMBEDDINGS_KEPT = 64
    LABEL_CHARS = 100  # a class name travels in every answer's metadata and log line: longer ones are cut
    PHRASE_CHARS = 200  # a phrase SAM 3 reads: its text encoder takes 32 tokens, a few words
    MAX_OBJECT_ID = 2**31 - 1  # the click page's object index: it travels back in metadata, as an int64
    MAX_BODY = 64 * 1024  # bytes of a request body the click server reads: a click is a few hundred
    MAX_DEPTH = 4  # JSON nesting of a click body: {"points": [[x, y, label]]} is three deep
    MAX_COORDINATE = 1e6  # pixels of a click: far beyond any camera, well inside what float32 and dora carry
    TIMESTAMP_CHARS = 64  # a click's frame time, in ISO 8601 (32 characters with microseconds and a zone)
    # measured start-up choices kept in the user's cache (choices.py): one per machine, model, size and versions
    CHOICES_KEPT = 64
    CHOICES_FILE_BYTES = 1024 * 1024  # ... read of that file: 64 entries are about 60 kB
    # memory the attention keys kept with one frame's memories may take (video.py), their objects' whole
    # windows counted: 32 MB an object for hiera-tiny at 512, 128 MB at 1024; past it they are projected again
    MEMORY_KEYS_MB = 512


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    frame_buffer: int = 30  # frames kept per camera to match a prompt to the frame it was computed on
    stats_every: float = 10.0  # seconds between "answered / skipped / latency" log lines; 0 = only at the end
    warmup: bool = True
    threads: int = 0  # torch CPU threads; 0 = the cores this process may run on
    compile: bool = False  # torch.compile the image encoder (slow start, faster frames on some machines)
    remeasure: bool = False  # DTYPE=auto: measure at start even where a choice measured here is kept (choices.py)
    stats_file: str = ""  # where to write the final stats as JSON (the benchmark reads it)
    mode: str = "segment"  # segment: answer each prompt on its frame; track: follow objects on every frame
    max_objects: int = 16  # track mode: live tracks at most; further new objects are refused, said once
    lost_seconds: float | None = 3.0  # track mode: a track SAM2 has not seen for this long (camera time) ends
    lost_frames: int | None = None  # track mode, the older setting: ... for this many answered frames
    match_iou: float = 0.3  # track mode: least overlap of a detection and a track's box to be that track
    match_reach: float = 2.0  # track mode: ... else how near (box diagonals), with its label, it may be; 0 = off
    detector_misses: int = 3  # track mode: a track no detection round confirms this many times ends; 0 = off
    revive_seconds: float = 10.0  # track mode: a detection where a track ended this lately takes its id back
    revive_reach_growth: float = 6.0  # track mode: a lost track reaches this many diagonals further a second
    min_confidence: float = 0.0  # detections: boxes the detector is less sure of are dropped
    classes: frozenset[str] = frozenset()  # detections: only these labels (empty = all)
    text: tuple[str, ...] = ()  # SAM 3: the concept phrases to find from the start (the `text` input replaces them)
    phrase_min_score: float = PHRASE_MIN_SCORE  # SAM 3: instances scored lower are dropped (MIN_CONFIDENCE)
    detect_seconds: float = 1.0  # track mode with phrases: camera seconds between detection rounds; 0 = every frame
    image_size: int = 0  # the model's square input in pixels; 0 = the checkpoint's own (1024 for SAM 2)
    every_frame: bool = False  # answer every frame (track) or prompt (segment) in order, none skipped
    # track mode, every_frame, a detector wired: seconds a camera's first frames wait for its first boxes; 0 = none
    first_boxes_seconds: float = 10.0
    mask_layout: str = "union"  # `mask`: the objects' union, one H*W mask (the seed's format), or `stack`
    clock_jump_seconds: float = 60.0  # track mode: camera time back, or ahead by more than this, is a jump
    non_overlap: str = "off"  # track mode: SAM 2's non-overlapping constraint, on what the memory sees or on all
    forget_on_prompt: bool = False  # track mode: a track prompted again forgets the frames it tracked before
    limits: Limits = Limits()

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
        non_overlap = env.get("NON_OVERLAP", cls.non_overlap).strip().lower() or cls.non_overlap
        if non_overlap not in NON_OVERLAPS:
            raise ConfigError(f"NON_OVERLAP={non_overlap!r} is not one of {', '.join(NON_OVERLAPS)}.")
        match_iou = float_setting(env, "MATCH_IOU", cls.match_iou, minimum=0, maximum=1, what="an IoU")
        lost_seconds, lost_frames = float_setting(env, "LOST_SECONDS", cls.lost_seconds, minimum=0.0), None
        if (env.get("LOST_FRAMES") or "").strip() and not (env.get("LOST_SECONDS") or "").strip():
            lost_seconds, lost_frames = None, int_setting(env, "LOST_FRAMES", 30, minimum=1)
            log.warning("LOST_FRAMES counts answered frames, which come slower on a slower machine: it still "
                        "works, but set LOST_SECONDS (camera time) instead.")
        # a box's conf and SAM 3's score are from 0 to 1: MIN_CONFIDENCE=50 (meant as a percent) would drop every box
        min_confidence = float_setting(env, "MIN_CONFIDENCE", cls.min_confidence, minimum=0, maximum=1,
                                       what="a confidence")
        phrase_min_score = min_confidence or PHRASE_MIN_SCORE  # 0 keeps every box, not SAM 3's 200 queries
        limits = Limits.from_env(env)
        text = tuple(dict.fromkeys(t.strip() for t in env.get("TEXT", "").split(",") if t.strip()))
        if len(text) > limits.max_phrases:
            raise ConfigError(f"TEXT holds {len(text)} phrases, over MAX_PHRASES={limits.max_phrases}: "
                              "raise MAX_PHRASES or ask for fewer.")
        if (longest := max(map(len, text), default=0)) > FixedLimits.PHRASE_CHARS:
            raise ConfigError(f"TEXT holds a phrase of {longest} characters, over PHRASE_CHARS="
                              f"{FixedLimits.PHRASE_CHARS}: give a few words (SAM 3 reads its first 32 tokens).")
        return cls(
            model=env.get("MODEL", DEFAULT_MODEL).strip() or DEFAULT_MODEL,
            device=device,
            dtype=dtype,
            frame_buffer=int_setting(env, "FRAME_BUFFER", cls.frame_buffer, minimum=1),
            stats_every=float_setting(env, "STATS_EVERY", cls.stats_every, minimum=0.0),
            warmup=bool_setting(env, "WARMUP", cls.warmup),
            threads=int_setting(env, "THREADS", cls.threads, minimum=0),
            compile=bool_setting(env, "COMPILE", cls.compile),
            remeasure=bool_setting(env, "REMEASURE", cls.remeasure),
            stats_file=env.get("STATS_FILE", "").strip(),
            mode=mode,
            max_objects=int_setting(env, "MAX_OBJECTS", cls.max_objects, minimum=1),
            lost_seconds=lost_seconds,
            lost_frames=lost_frames,
            match_iou=match_iou,
            match_reach=float_setting(env, "MATCH_REACH", cls.match_reach, minimum=0.0),
            detector_misses=int_setting(env, "DETECTOR_MISSES", cls.detector_misses, minimum=0),
            revive_seconds=float_setting(env, "REVIVE_SECONDS", cls.revive_seconds, minimum=0.0),
            revive_reach_growth=float_setting(env, "REVIVE_REACH_GROWTH", cls.revive_reach_growth, minimum=0.0,
                                              maximum=MAX_REVIVE_REACH_GROWTH, what="a reach's growth"),
            min_confidence=min_confidence,
            classes=frozenset(c.strip() for c in env.get("CLASSES", "").split(",") if c.strip()),
            text=text,
            phrase_min_score=phrase_min_score,
            detect_seconds=float_setting(env, "DETECT_SECONDS", cls.detect_seconds, minimum=0.0),
            every_frame=bool_setting(env, "EVERY_FRAME", cls.every_frame),
            first_boxes_seconds=float_setting(env, "FIRST_BOXES_SECONDS", cls.first_boxes_seconds, minimum=0.0),
            image_size=int_setting(env, "IMAGE_SIZE", cls.image_size, minimum=0),
            mask_layout=mask_layout,
            clock_jump_seconds=float_setting(env, "CLOCK_JUMP_SECONDS", cls.clock_jump_seconds, minimum=0.001),
            non_overlap=non_overlap,
            forget_on_prompt=bool_setting(env, "FORGET_ON_PROMPT", cls.forget_on_prompt),
            limits=limits,
        )


# Fields no variable sets by itself: MIN_CONFIDENCE decides phrase_min_score too, and Limits has its own.
DERIVED_FIELDS = frozenset({"phrase_min_score", "limits"})


def variables() -> dict[str, str]:
    """The environment variables the settings are read from, each -> the field it sets (a limit's as
    `limits.<field>`): a field's variable is its name in capitals, with no other spelling anywhere.
    `from_env` reads these and no others, and the README's tables and dora-node.yml are held to them."""
    own = {f.name.upper(): f.name for f in fields(Settings) if f.name not in DERIVED_FIELDS}
    return {**own, **{f.name.upper(): f"limits.{f.name}" for f in fields(Limits)}}


def int_setting(env, key: str, default: int, minimum: int, maximum: int | None = None, what: str = "it") -> int:
    """`key` as an integer from `minimum` up (to `maximum` where one is given: only where a value past it
    means nothing, as a JPEG quality past 100; a count the user may want larger has none). `what` names
    the quantity in the sentence that refuses a value out of a bounded range."""
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer.") from None
    if value < minimum:
        raise ConfigError(f"{key}={value} is below its minimum of {minimum}{_range(minimum, maximum, what)}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key}={value} is above its maximum of {maximum}{_range(minimum, maximum, what)}.")
    return value


def float_setting(env, key: str, default: float, minimum: float, maximum: float | None = None,
                  what: str = "it") -> float:
    """`key` as a finite number from `minimum` up (to `maximum` where one is given: a fraction, a
    probability, an IoU, whose values past 1 mean nothing). `what` as for `int_setting`."""
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number.") from None
    if not minimum <= value < float("inf"):  # NaN fails it too
        raise ConfigError(f"{key}={value} is not a finite number of at least {minimum}"
                          f"{_range(minimum, maximum, what)}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key}={value} is above its maximum of {maximum}{_range(minimum, maximum, what)}.")
    return value


def _range(minimum, maximum, what: str) -> str:
    """The end of the sentence refusing a bounded setting: the range, said once, from the bounds the check
    uses, so that the sentence cannot disagree with the check."""
    return "" if maximum is None else f": {what} is from {minimum} to {maximum}"


def bool_setting(env, key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}={raw!r} is not a boolean (use 1 or 0).")
