"""The stats line and STATS_FILE: latency only from timestamps that can be latencies, and the stages
that ran, by their names. Latencies are read against the real clock, so only their sign and lower
bound are asserted, never how long anything took."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from dora_sam2.stats import LATENCY_HORIZON_S, Stages, Stats


def stats_line(stats: Stats, caplog) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dora_sam2"):
        stats.report(final=True)
    [line] = [r.getMessage() for r in caplog.records]
    return line


def test_answers_stamped_ahead_or_long_ago_are_counted_apart_not_in_the_latency(caplog):
    stats = Stats(Stages(), every_s=0)
    now = datetime.now(timezone.utc)
    stats.answered(now - timedelta(milliseconds=200))
    stats.answered(now - timedelta(milliseconds=400))
    stats.answered(now + timedelta(days=3650))  # a camera stamping ten years ahead
    stats.answered(now + timedelta(seconds=5))  # a sender's clock ahead of ours
    stats.answered(now - timedelta(seconds=LATENCY_HORIZON_S + 60))  # a clock that stepped back
    stats.answered(datetime(2001, 1, 1, tzinfo=timezone.utc))
    stats.answered(None)  # dora 0.5: no timestamp, no latency
    figures = stats.as_dict()
    assert figures["answers"] == 7
    assert figures["latency_not_counted"] == {"stamped_ahead": 2, "stamped_long_ago": 2}
    assert len(stats.latencies_ms) == 2 and figures["latency_ms"]["p50"] >= 200 and figures["latency_ms"]["mean"] >= 300
    line = stats_line(stats, caplog)
    assert "answered 7" in line and "mean latency -" not in line
    assert "(not counted: 2 stamped ahead of this machine's clock, 2 stamped over 1 h before)" in line, line


def test_an_answer_just_within_the_horizon_counts(caplog):
    stats = Stats(Stages(), every_s=0)
    stats.answered(datetime.now(timezone.utc) - timedelta(seconds=LATENCY_HORIZON_S - 60))
    assert stats.as_dict()["latency_not_counted"] == {"stamped_ahead": 0, "stamped_long_ago": 0}
    assert stats.as_dict()["latency_ms"]["p50"] >= (LATENCY_HORIZON_S - 60) * 1e3
    assert "not counted" not in stats_line(stats, caplog)


def test_without_a_latency_the_line_says_none_was_measured(caplog):
    stats = Stats(Stages(), every_s=0)
    stats.answered(datetime.now(timezone.utc) + timedelta(hours=1))
    line = stats_line(stats, caplog)
    assert "mean latency none measured (not counted: 1 stamped ahead" in line and "nan" not in line, line


def test_the_line_names_the_stages_that_ran_and_only_those(caplog):
    """A SAM 3 finder encodes inside `find`: its line says find, not "encode 0 ms x 0"."""
    finder = Stats(Stages(), every_s=0)
    for _ in range(3):
        with finder.stages.time("find"):
            pass
    with finder.stages.time("frame_decode"):
        pass
    line = stats_line(finder, caplog)
    assert " x 3, frame decode " in line and line.split("; ")[2].startswith("find "), line
    assert "encode" not in line and "prompt decode" not in line and "memory attention" not in line, line
    idle = stats_line(Stats(Stages(), every_s=0), caplog)
    assert idle.endswith("; no model work yet"), idle
