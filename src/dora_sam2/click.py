"""`dora-sam2-click`: click on the live camera image in a browser, send SAM2 `points`, see the masks.

    inputs:  image (the camera), optionally mask or masks (dora-sam2's answers, drawn tinted)
    outputs: points (the current object's clicks: flat x,y; metadata labels 1/0, the clicked frame's
             timestamp, object_id, label), reset (the user cleared everything)
    env:     HOST (default 127.0.0.1), PORT (default 8000), TOKEN (default: a new one each run; `off`
             turns it off on a loopback HOST)

The page gets frames by server-sent events and posts clicks back; the server is the standard
library's. Left click = foreground, right click = background; z undoes, n starts a new object,
c clears all.

Only the operator's page may click: a request must come to the address the server listens on, from the
page it serves (Origin), with the run's token, as JSON of a sane size and shape; anything else is refused
before it reaches the robot (`click_server`, `click_requests`). As a server it bounds what clients can
hold: open connections (MAX_CONNECTIONS, MAX_CLIENT_CONNECTIONS per address), the time to send a whole
request (READ_TIMEOUT), clicks queued for dora (MAX_CLICKS), and its log (one line per kind of refusal
every 10 s, kinds it names itself). A client that holds connections open without finishing its request
(slowloris) gives way to the next one, so it cannot keep the operator out (`click_connections`).

This module is the node: the server's clicks out to dora, the camera and the answers in to the page
(`click_view`).
"""

from __future__ import annotations

import logging
import os
import queue
import sys

from . import codecs
from .access import resolve_token
from .click_server import ClickServer
from .click_view import LiveView
from .domain import InputError
from .joining import join_dataflow
from .node_loop import inputs, or_exit, start_logging
from .settings import ConfigError, Limits
from .throttle import Throttle

log = logging.getLogger("dora_sam2.click")


def main() -> None:
    start_logging("dora-sam2-click")
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    view = LiveView()
    token, limits = or_exit(log, lambda: (resolve_token(os.environ.get("TOKEN"), host), Limits.from_env()),
                            ValueError, ConfigError)
    server = _serve(view, host, port, token, limits)
    log.info("open %s and click: left = object, right = background; z undo, n new object, c clear", server.url)

    node = join_dataflow()  # quietly gone when another node failed the start: its sentence is the one
    said = Throttle(log, burst=20)
    for event in inputs(node, between=lambda: _send_clicks(node, server.outbox, said)):
        _handle(event, view, limits, said)
    server.stop()


def _serve(view: LiveView, host: str, port: str, token: str | None, limits: Limits) -> ClickServer:
    """The click server, serving; or the sentence saying what to change, and exit 1."""
    try:
        return ClickServer(view, host, int(port), token, limits).start()
    except (OSError, ValueError, OverflowError) as error:
        log.error("cannot serve on %s:%s (%s): set HOST and PORT to a free local address", host, port, error)
        sys.exit(1)


def _send_clicks(node, outbox: queue.Queue, said: Throttle) -> None:
    while True:
        try:
            output, value, metadata = outbox.get_nowait()
        except queue.Empty:
            return
        try:
            node.send_output(output, value, metadata)
        except Exception as error:  # noqa: BLE001 - one click dora would not take must not end the page
            said.error("send", "could not send %s to dora (%s: %s)", output, type(error).__name__, error)


def _handle(event: dict, view: LiveView, limits: Limits, said: Throttle) -> None:
    """A camera frame to show, or dora-sam2's answer to draw on it; a bad one is one line."""
    input_id = event["id"]
    try:
        if input_id.startswith("image"):
            view.show_frame(codecs.decode_frame(input_id, event["value"], event["metadata"], limits))
        elif input_id in ("mask", "masks"):  # a union `mask` is drawn as one object
            masks = codecs.decode_answer(input_id, event["value"], event["metadata"], limits)
            view.show_masks(masks.masks, list(masks.class_names), [float(s) for s in masks.scores])
    except InputError as error:
        said.warning(input_id, "%s", error)


if __name__ == "__main__":
    main()
