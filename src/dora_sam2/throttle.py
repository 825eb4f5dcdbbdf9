"""Log lines that a flood cannot multiply: at most `burst` lines per kind every `seconds`.

A kind is a fixed name the code chooses (an input id from the dataflow YAML, a refusal reason of the
click server), never text a sender chose: a neighbour that sends a million different bad messages
still gets a bounded number of lines, and the next line of that kind says how many were held back.
"""

from __future__ import annotations

import logging
import threading
import time

MAX_KINDS = 256  # kinds are fixed names; this only keeps a mistake from growing the table


class Throttle:
    def __init__(self, logger: logging.Logger, seconds: float = 10.0, burst: int = 1):
        self.logger = logger
        self.seconds = seconds
        self.burst = burst
        self._kinds: dict[str, tuple[float, int, int]] = {}  # kind -> (window start, lines in it, held back)
        self._lock = threading.Lock()  # the click server logs from its request threads

    def warning(self, kind: str, message: str, *args) -> bool:
        return self.log(logging.WARNING, kind, message, *args)

    def error(self, kind: str, message: str, *args) -> bool:
        return self.log(logging.ERROR, kind, message, *args)

    def log(self, level: int, kind: str, message: str, *args) -> bool:
        """Writes the line unless this kind has had its `burst` lines in the current window; True if written."""
        now = time.monotonic()
        with self._lock:
            start, lines, held = self._kinds.get(kind, (now, 0, 0))
            if now - start >= self.seconds:
                start, lines = now, 0
            if lines >= self.burst:
                self._kinds[kind] = (start, lines, held + 1)
                return False
            if kind not in self._kinds and len(self._kinds) >= MAX_KINDS:
                self._kinds.pop(next(iter(self._kinds)))
            self._kinds[kind] = (start, lines + 1, 0)
        if held:
            message += f" ({held} more like this held back since the last one)"
        self.logger.log(level, message, *args)
        return True
