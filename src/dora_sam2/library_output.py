"""What C libraries write to the process's stderr while a call runs, taken instead of printed.

libpng and libjpeg report a truncated or corrupt image by writing straight to file descriptor 2
("libpng error: PNG input buffer is incomplete", "Corrupt JPEG data: 3 extraneous bytes before marker
0xd9"): past Python's logging, past OpenCV's log level (cv2.utils.logging silences OpenCV's own lines
only), one unthrottled line per bad frame, however many a sender sends. `captured()` points descriptor
2 at a file of its own for the length of a call and hands what was written to the caller, who says it
once, throttled. One capture at a time (descriptor 2 is the process's); Python's log handlers wait for
it to end, so another thread's log line lands where it always does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass

# OpenCV's own log line, "[ERROR:0@0.140] global loadsave.cpp:1412 imdecode_ ...: OpenCV(5.1.0)
# /path/bitstrm.cpp:59: error: (-2:Unspecified error) Unexpected end of input stream in function 'readBlock'",
# is quoted by its message alone: "Unexpected end of input stream".
_OPENCV_LOG = re.compile(r"^\[\s*[A-Z]+:[^\]]*\]\s*(?:global\s+)?\S+:\d+\s+\S+\s+")
_OPENCV_ERROR = re.compile(r"^.*? error: \(-?\d+:[^)]*\)\s*|\s+in function '[^']*'$")
KEPT_BYTES = 4096  # of what one call wrote: its first lines are what a log line quotes
LINE_CHARS = 120  # of the first line, as a log line quotes it

_lock = threading.Lock()
_sink: int | None = None  # one file per process, emptied before each capture


@dataclass
class Said:
    """What the C code wrote during the capture (empty when it wrote nothing, or could not be captured)."""

    text: str = ""

    @property
    def first_line(self) -> str:
        """The first line written, printable and cut to LINE_CHARS: what a log line may quote."""
        line = next((line.strip() for line in self.text.splitlines() if line.strip()), "")
        line = _OPENCV_ERROR.sub("", _OPENCV_LOG.sub("", line))
        line = "".join(c if c.isprintable() else "?" for c in line)
        return line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "..."


@contextlib.contextmanager
def captured():
    """`with captured() as said:` ... `said.text`. Where descriptor 2 cannot be redirected (closed, no
    file to point it at), the call runs as it would have, its words printed."""
    said = Said()
    with _lock, _log_handlers_waiting():
        sink = _sink_file()
        saved = _redirect(sink) if sink is not None else None
        try:
            yield said
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
                os.lseek(sink, 0, os.SEEK_SET)
                said.text = os.read(sink, KEPT_BYTES).decode("utf-8", "replace")


def _redirect(sink: int) -> int | None:
    """Descriptor 2 onto the emptied sink; the real stderr's duplicate, to put back, or None."""
    try:
        sys.stderr.flush()  # Python's own buffered text goes where it was meant to
    except (AttributeError, OSError, ValueError):  # no stderr, or a closed one
        pass
    try:
        os.ftruncate(sink, 0)
        os.lseek(sink, 0, os.SEEK_SET)  # descriptor 2 will share this offset
        saved = os.dup(2)
    except OSError:
        return None
    try:
        os.dup2(sink, 2)
    except OSError:
        os.close(saved)
        return None
    return saved


def _sink_file() -> int | None:
    global _sink
    if _sink is None:
        try:
            _sink = os.memfd_create("dora-sam2-stderr") if hasattr(os, "memfd_create") else _temporary_file()
        except OSError:  # no memory file, no writable temporary directory: nothing is captured
            return None
    return _sink


def _temporary_file() -> int:
    descriptor, path = tempfile.mkstemp(prefix="dora-sam2-stderr-")
    with contextlib.suppress(OSError):  # unlinked at once where the system allows it: nothing left behind
        os.unlink(path)
    return descriptor


@contextlib.contextmanager
def _log_handlers_waiting():
    """Python's stream log handlers held for the capture: a line another thread logs meanwhile waits
    (a millisecond) and goes to stderr, instead of into the capture."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    for handler in handlers:
        handler.acquire()
    try:
        yield
    finally:
        for handler in reversed(handlers):
            handler.release()
