"""What the node did and what it cost: per-stage times, answers, skipped work and latency."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone

log = logging.getLogger("dora_sam2")

STAGES = ("frame_decode", "encode", "find", "prompt_decode", "memory", "remember", "postprocess", "send")
# The stats line's words for the stages it reports, in its order, and whether it counts their calls.
SAID = {"find": ("find", True), "encode": ("encode", True), "memory": ("memory attention", False),
        "prompt_decode": ("prompt decode", False), "postprocess": ("post-process", False),
        "frame_decode": ("frame decode", False)}
# Latency is read from the sender's timestamp on this machine's clock. A timestamp ahead of it (a sender's
# clock ahead of ours, a camera stamping years ahead) or older than this (a clock that stepped, a local time
# read as UTC, a replay carrying its recording's times) says nothing about how fast we answer: such answers
# are counted apart, and the line says how many, so one of them cannot turn the mean negative or absurd.
LATENCY_HORIZON_S = 3600.0


class Stages:
    """Seconds and calls per stage of the data path."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def time(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started
            self.calls[stage] += 1

    def mean_ms(self, stage: str) -> float:
        return 1e3 * self.seconds[stage] / max(self.calls[stage], 1)


class Stats:
    """Counts answers and skipped prompts, and says so every `every_s` seconds."""

    def __init__(self, stages: Stages, every_s: float = 10.0):
        self.stages = stages
        self.every_s = every_s
        self.answers = 0
        self.skipped = 0
        self.prompts = 0  # prompt messages that reached the node and decoded
        self.filtered = 0  # detector boxes dropped by MIN_CONFIDENCE / CLASSES
        self.latencies_ms: list[float] = []
        self.stamped_ahead = 0  # answers whose timestamp is ahead of this machine's clock: not in the latency
        self.stamped_long_ago = 0  # ... older than LATENCY_HORIZON_S
        self.tracking: dict | None = None  # track mode: tracks started, ended, live
        self._last = time.monotonic()

    def answered(self, timestamp: datetime | None) -> None:
        self.answers += 1
        if timestamp is None:
            return
        latency_s = (datetime.now(timezone.utc) - timestamp).total_seconds()
        if latency_s < 0:
            self.stamped_ahead += 1
        elif latency_s > LATENCY_HORIZON_S:
            self.stamped_long_ago += 1
        else:
            self.latencies_ms.append(latency_s * 1e3)
            del self.latencies_ms[:-10_000]  # a window: the node runs for hours

    def report(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (self.every_s <= 0 or now - self._last < self.every_s):
            return
        self._last = now
        tracks = ""
        if self.tracking is not None:  # track mode answers frames, not prompts
            tracks = (f"; tracks: {self.tracking['live']} live, {self.tracking['started']} started, "
                      f"{self.tracking['ended']} ended, {self.tracking.get('revived', 0)} revived")
        log.info("%sanswered %d, skipped %d stale inputs, filtered %d boxes; %s; %s%s", "final: " if final else "",
                 self.answers, self.skipped, self.filtered, self._latency(), self._stages(), tracks)

    def _latency(self) -> str:
        mean = f"{sum(self.latencies_ms) / len(self.latencies_ms):.0f} ms" if self.latencies_ms else "none measured"
        long_ago = f"stamped over {LATENCY_HORIZON_S / 3600:g} h before"
        apart = [f"{n} {words}" for n, words in ((self.stamped_ahead, "stamped ahead of this machine's clock"),
                                                 (self.stamped_long_ago, long_ago))
                 if n]
        return f"mean latency {mean}" + (f" (not counted: {', '.join(apart)})" if apart else "")

    def _stages(self) -> str:
        """The stages that ran, and only those: a SAM 3 finder encodes inside `find`, a segment node has no
        memory attention."""
        said = []
        for stage, (words, counted) in SAID.items():
            calls = self.stages.calls[stage]
            if calls:
                mean = self.stages.mean_ms(stage)
                said.append(f"{words} {mean:.{1 if mean < 10 else 0}f} ms" + (f" x {calls}" if counted else ""))
        return ", ".join(said) or "no model work yet"

    def as_dict(self) -> dict:
        return {
            "answers": self.answers,
            "skipped": self.skipped,
            "prompts": self.prompts,
            "filtered": self.filtered,
            "stages_ms": {stage: self.stages.mean_ms(stage) for stage in STAGES},
            "stage_calls": {stage: self.stages.calls[stage] for stage in STAGES},
            "latency_ms": _percentiles(self.latencies_ms),
            "latency_not_counted": {"stamped_ahead": self.stamped_ahead, "stamped_long_ago": self.stamped_long_ago},
            **({"tracking": self.tracking} if self.tracking is not None else {}),
        }

    def write(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=2)


def _percentiles(latencies_ms: list[float]) -> dict:
    """Camera-to-answer latency of the answers kept (the newest 10,000): median, 90th percentile, mean."""
    if not latencies_ms:
        return {}
    ordered = sorted(latencies_ms)
    return {"p50": ordered[len(ordered) // 2], "p90": ordered[int(len(ordered) * 0.9)],
            "mean": sum(ordered) / len(ordered)}
