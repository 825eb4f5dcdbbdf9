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
        self.tracking: dict | None = None  # track mode: tracks started, ended, live
        self._last = time.monotonic()

    def answered(self, timestamp: datetime | None) -> None:
        self.answers += 1
        if timestamp is not None:
            self.latencies_ms.append((datetime.now(timezone.utc) - timestamp).total_seconds() * 1e3)
            del self.latencies_ms[:-10_000]  # a window: the node runs for hours

    def report(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (self.every_s <= 0 or now - self._last < self.every_s):
            return
        self._last = now
        latency = sum(self.latencies_ms) / len(self.latencies_ms) if self.latencies_ms else float("nan")
        tracks = ""
        if self.tracking is not None:  # track mode answers frames, not prompts
            tracks = (f"; tracks: {self.tracking['live']} live, {self.tracking['started']} started, "
                      f"{self.tracking['ended']} ended, {self.tracking.get('revived', 0)} revived, memory attention {self.stages.mean_ms('memory'):.0f} ms")
        log.info(
            "%sanswered %d, skipped %d stale inputs, filtered %d boxes; mean latency %.0f ms; encode %.0f ms x %d, "
            "prompt decode %.0f ms, post-process %.0f ms, frame decode %.1f ms%s",
            "final: " if final else "", self.answers, self.skipped, self.filtered, latency, self.stages.mean_ms("encode"),
            self.stages.calls["encode"], self.stages.mean_ms("prompt_decode"), self.stages.mean_ms("postprocess"),
            self.stages.mean_ms("frame_decode"), tracks,
        )

    def as_dict(self) -> dict:
        return {
            "answers": self.answers,
            "skipped": self.skipped,
            "prompts": self.prompts,
            "filtered": self.filtered,
            "stages_ms": {stage: self.stages.mean_ms(stage) for stage in STAGES},
            "stage_calls": {stage: self.stages.calls[stage] for stage in STAGES},
            "latency_ms": _percentiles(self.latencies_ms),
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
