"""Choices measured at start-up, kept for the starts that follow.

`DTYPE=auto` on a CPU with native bf16 times fp32 against bf16 on the model: a minute on a small CPU at
1024, for an answer that depends only on the machine, the model, its input size and the libraries. In
track mode on a CPU the node also times the ways of running memory attention (memory_attention.py's
`AttentionPath`: the fused kernel, or blocks of 128, 256 or 512 rows) and how many objects' memories to
encode in one batch, in the dtype it runs. So each answer is kept, under a key that names all it depends
on (`dtype_key`, `attention_key`, `memory_group_key`), in one JSON file in the user's cache
(`choices_path`), and a later start whose key is the same reads it instead of measuring.

The file is a cache: one that cannot be read or written, or holds what we did not write, is one log line
and the node measures as it would without it. It keeps the newest `FixedLimits.CHOICES_KEPT` entries, and
is read only up to `FixedLimits.CHOICES_FILE_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .settings import FixedLimits

log = logging.getLogger("dora_sam2")

FORMAT = 1  # the file's layout; a file of another is measured over and replaced
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # a checkpoint's weight files, shards too
MEASURED_DTYPES = ("float32", "bfloat16")  # what Sam2Backend.choose_dtype_by_measuring times: a kept one is one


def choices_path(env=None) -> Path:
    """Where kept choices live: `$XDG_CACHE_HOME/dora-sam2/choices.json`, `~/.cache/dora-sam2/choices.json`
    when XDG_CACHE_HOME is unset or empty, as huggingface_hub places its own cache."""
    env = os.environ if env is None else env
    cache = env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.path.expandvars(os.path.expanduser(cache))) / "dora-sam2" / "choices.json"


# ---------------------------------------------------------------------------- what a choice depends on


def dtype_key(backend, compile: bool = False) -> dict:
    """What makes `DTYPE=auto`'s measurement on `backend` (a Sam2Backend) come out another way: the CPU
    and the cores this process may use, the model and the input size it runs at, and the libraries."""
    return _key("dtype", backend, compile)


def attention_key(backend, compile: bool = False) -> dict:
    """What makes the memory attention measurement come out another way: all `dtype_key` names, and the
    dtype it ran in."""
    return {**_key("attention", backend, compile), "dtype": str(backend.dtype).removeprefix("torch.")}


def memory_group_key(backend, compile: bool = False) -> dict:
    """What makes the memory encoder's best batch come out another way: as `attention_key`."""
    return {**_key("memory group", backend, compile), "dtype": str(backend.dtype).removeprefix("torch.")}


def _key(choice: str, backend, compile: bool) -> dict:
    import torch
    import transformers

    from . import __version__
    from .devices import cpu_identity, cpu_kernels

    return {
        "choice": choice,
        **cpu_identity(),
        **cpu_kernels(),
        "cores": _cores(),
        "threads": torch.get_num_threads(),
        "device": backend.device.type,
        "model": model_identity(backend.name),
        "image_size": backend.input_size,
        "compile": compile,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "dora-sam2": __version__},
    }


def model_identity(source: str) -> dict:
    """The model as MODEL names it, and what changes when its weights or architecture change: its
    directory (for a hub id, the cached snapshot, named by the hub's commit), config.json's hash, and
    each weight file's size and modification time."""
    directory = _checkpoint_directory(source)
    if directory is None:
        return {"source": source}
    identity = {"source": source, "directory": str(directory)}
    try:
        identity["config_sha256"] = hashlib.sha256((directory / "config.json").read_bytes()).hexdigest()
        identity["weights"] = sorted([path.name, stat.st_size, stat.st_mtime_ns] for path in directory.iterdir()
                                     if path.suffix in WEIGHT_SUFFIXES for stat in [path.stat()])
    except OSError:  # loaded a moment ago: a file gone since makes a key no later start has
        identity["unreadable"] = True
    return identity


def _checkpoint_directory(source: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(source, "config.json")
    except Exception:  # noqa: BLE001 - not a hub id after all: the source alone names it
        return None
    return Path(config).parent if isinstance(config, str) else None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class KeptChoice:
    """What an earlier start measured: what it kept (a dtype, an attention path), each candidate's
    seconds, and when."""

    value: str
    seconds: dict[str, float]
    measured: str  # ISO 8601, UTC

    @classmethod
    def from_entry(cls, entry: dict, field: str, candidates: tuple[str, ...]) -> "KeptChoice":
        choice = entry.get("choice")
        if not isinstance(choice, dict):
            raise ValueError("an entry holds no choice")
        value, seconds, measured = choice.get(field), choice.get("seconds"), entry.get("measured")
        if value not in candidates:
            raise ValueError(f"an entry keeps {str(value)[:40]!r}, not one of {', '.join(candidates)}")
        if not (isinstance(seconds, dict) and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0
                                                  for s in seconds.values())):
            raise ValueError("an entry's timings are not seconds")
        if not isinstance(measured, str):
            raise ValueError("an entry does not say when it was measured")
        return cls(value, {str(name): float(s) for name, s in seconds.items()}, measured)

    def timings(self) -> str:
        return ", ".join(f"{name} {s * 1e3:.0f} ms" for name, s in self.seconds.items())


class ChoicesFile:
    """The kept choices, read and written whole. Whatever goes wrong with the file is said once per start
    (one line) and the caller measures, as it would without a file."""

    def __init__(self, path: Path):
        self.path = path
        self._said = False

    def find_dtype(self, key: dict) -> KeptChoice | None:
        """The dtype kept under `key` (a `dtype_key`), or None: none kept, or the file unusable (said once)."""
        return self._find(key, "dtype", MEASURED_DTYPES)

    def find_attention(self, key: dict) -> KeptChoice | None:
        """The attention path kept under `key` (an `attention_key`), as `AttentionPath.named` reads it."""
        from .memory_attention import ATTENTION_PATHS

        return self._find(key, "attention", tuple(map(str, ATTENTION_PATHS)))

    def find_memory_group(self, key: dict) -> KeptChoice | None:
        """The objects per memory-encoder batch kept under `key` (a `memory_group_key`)."""
        from .video import MEMORY_GROUPS

        return self._find(key, "memory_group", tuple(map(str, MEMORY_GROUPS)))

    def keep_dtype(self, key: dict, dtype: str, seconds: dict[str, float]) -> bool:
        return self._keep(key, {"dtype": dtype, "seconds": seconds})

    def keep_attention(self, key: dict, path: str, seconds: dict[str, float]) -> bool:
        return self._keep(key, {"attention": path, "seconds": seconds})

    def keep_memory_group(self, key: dict, group: str, seconds: dict[str, float]) -> bool:
        return self._keep(key, {"memory_group": group, "seconds": seconds})

    def _find(self, key: dict, field: str, candidates: tuple[str, ...]) -> KeptChoice | None:
        try:
            entry = next((e for e in self._read() if e["key"] == key), None)
            return None if entry is None else KeptChoice.from_entry(entry, field, candidates)
        except (OSError, ValueError) as error:
            self._say("could not read the measured choices kept in %s (%s): measuring as if none were kept; "
                      "the file is replaced if it can be written", error)
            return None

    def _keep(self, key: dict, choice: dict) -> bool:
        """Keeps a measurement under `key` (replacing one of the same key), the newest CHOICES_KEPT in all.
        False, said once, where the file cannot be written."""
        entry = {"key": key, "choice": choice, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():  # two nodes starting side by side: neither loses the other's entry
                try:
                    entries = [e for e in self._read() if e["key"] != key]
                except ValueError:  # said when it was read: replaced by what is measured now
                    entries = []
                self._write([*entries, entry][-FixedLimits.CHOICES_KEPT:])
        except OSError as error:
            self._say("could not keep the measured choice in %s (%s): the next start measures again; point "
                      "XDG_CACHE_HOME at a writable directory to keep it", error)
            return False
        return True

    def _read(self) -> list[dict]:
        """The entries; [] when there is no file. ValueError for a file that is not ours or over its bound."""
        try:
            with open(self.path, "rb") as file:
                data = file.read(FixedLimits.CHOICES_FILE_BYTES + 1)
        except FileNotFoundError:
            return []
        if len(data) > FixedLimits.CHOICES_FILE_BYTES:
            raise ValueError(f"it is over {FixedLimits.CHOICES_FILE_BYTES} bytes")
        try:
            content = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"it is not JSON: {error}") from None
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise ValueError(f"it is not a format {FORMAT} choices file")
        entries = content.get("entries")
        if not (isinstance(entries, list) and all(isinstance(e, dict) and isinstance(e.get("key"), dict)
                                                  for e in entries)):
            raise ValueError("its entries are not keyed choices")
        return entries

    def _write(self, entries: list[dict]) -> None:
        """Written beside and moved into place: a reader sees the old file or the new one, never half."""
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".choices-", suffix=".tmp",
                                         delete=False) as file:
            temporary = Path(file.name)
        try:
            temporary.write_text(json.dumps({"format": FORMAT, "entries": entries}, indent=1) + "\n")
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self):
        try:
            import fcntl
        except ImportError:  # Windows: two nodes starting at once may keep only one of their entries
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _say(self, message: str, error: Exception) -> None:
        if not self._said:
            self._said = True
            reason = f"{type(error).__name__}: {error.strerror or error}" if isinstance(error, OSError) else str(error)
            log.warning(message, self.path, reason)
