"""Log lines a flood cannot multiply: `Throttle`, which every node's bad-input lines go through."""

from __future__ import annotations

import logging

from dora_sam2 import throttle
from dora_sam2.throttle import MAX_KINDS, Throttle


class Clock:
    """time.monotonic as the test sets it: the window's end comes when the test says, not when a slow
    machine gets there."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_each_kind_gets_its_burst_of_lines_per_window_and_then_says_how_many_it_held_back(caplog, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throttle.time, "monotonic", clock)
    say = Throttle(logging.getLogger("test.throttle"), seconds=10, burst=2)
    with caplog.at_level(logging.WARNING):
        written = [say.warning("image", "bad frame %d", i) for i in range(1000)]
        written += [say.warning("bbox", "bad boxes")]
        clock.now += 9.9  # still the same window
        written += [say.warning("image", "bad frame late")]
        clock.now += 0.1
        written += [say.warning("image", "bad frame %d", 1001)]
    assert written.count(True) == 4
    assert lines(caplog) == ["bad frame 0", "bad frame 1", "bad boxes",
                             "bad frame 1001 (999 more like this held back since the last one)"]


def test_errors_and_warnings_share_a_kinds_budget(caplog):
    say = Throttle(logging.getLogger("test.throttle"), seconds=3600, burst=1)
    with caplog.at_level(logging.WARNING):
        say.error("write", "disk full")
        say.warning("write", "disk full again")
    assert lines(caplog) == ["disk full"] and caplog.records[0].levelno == logging.ERROR


def test_the_table_of_kinds_stays_bounded_whatever_names_it_is_given(caplog):
    """Kinds are names the code chooses; a mistake that keyed them by a sender's text still keeps the
    table at MAX_KINDS entries."""
    say = Throttle(logging.getLogger("test.throttle"), seconds=3600)
    with caplog.at_level(logging.WARNING):
        for i in range(10 * MAX_KINDS):
            say.warning(f"kind {i}", "line")
    assert len(say._kinds) == MAX_KINDS
