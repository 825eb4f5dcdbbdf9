"""What the nodes beside dora-sam2 share (the click page, the rerun viewer, the dataset writer): their log
lines, a start that fails in one sentence, and the loop over their inputs."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


def start_logging(node: str) -> None:
    """Each log line as `LEVEL node: message` on stderr, where dora keeps what a node says."""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s {node}: %(message)s", stream=sys.stderr)


def require(module: str, log: logging.Logger, node: str, package: str, extra: str) -> ModuleType:
    """`module`, imported at the start; or the sentence saying what to install, and exit 1."""
    try:
        return importlib.import_module(module)
    except ImportError:
        log.error("%s needs %s: pip install 'dora-sam2[%s]'.", node, package, extra)
        sys.exit(1)


def or_exit(log: logging.Logger, setup: Callable[[], T], *errors: type[Exception]) -> T:
    """What `setup` returns; or, where it raises one of `errors` (a setting the node cannot start with),
    that error's sentence, the one line the user reads, and exit 1."""
    try:
        return setup()
    except errors as error:
        log.error("%s", error)
        sys.exit(1)


def inputs(node, between: Callable[[], None] | None = None, poll_s: float = 0.05) -> Iterator[dict]:
    """The node's input events, to the end of its stream: after STOP, dora still hands over what was queued.
    `between`, where given, runs before each wait for the next event, a wait then of at most `poll_s`: a
    node with work of its own (the click page's clicks) does it while the dataflow is quiet."""
    if between is None:
        for event in node:
            if event["type"] == "INPUT":
                yield event
        return
    while True:
        between()
        event = node.next(timeout=poll_s)
        if event is None:
            return
        if event["type"] == "INPUT":
            yield event


def dataflow_id(node) -> str:
    """The running dataflow's id, which names where a node writes ("dataflow" on dora 0.5, which has none)."""
    try:
        return str(node.dataflow_id())
    except AttributeError:  # dora 0.5
        return "dataflow"
