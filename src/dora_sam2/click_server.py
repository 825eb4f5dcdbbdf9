"""The click page's server: the page, the frame stream and the click endpoint, on HOST:PORT.

Only the operator's page may click (`access.Access`): a request must come to the address the server listens
on, from the page it serves (Origin), with the run's token, as JSON of a sane size and shape
(`click_requests`). Anything else is refused before it reaches the robot, with one log line per kind of
refusal every 10 s, kinds it names itself. What clients can hold is bounded by `click_connections`.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa

from .access import Access
from .click_connections import BoundedHTTPServer, BoundedRequestHandler, Slots
from .click_requests import click_message, parse_body
from .click_view import LiveView
from .quoting import shown
from .settings import FixedLimits, Limits
from .throttle import Throttle

log = logging.getLogger("dora_sam2.click")

PATHS = ("/", "/events", "/points", "/reset")  # what the log names; any other path is "another path"


class ClickServer:
    """The page, the frame stream and the click endpoint, on HOST:PORT. Clicks land in `outbox`."""

    def __init__(self, view: LiveView, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 limits: Limits = Limits()):
        self.view = view
        self.limits = limits
        self.outbox: queue.Queue = queue.Queue(maxsize=limits.max_clicks)
        self.page = resources.files("dora_sam2").joinpath("static/click.html").read_bytes()
        self.refusals = Throttle(log)
        self.httpd = BoundedHTTPServer((host, port), functools.partial(ClickHandler, click=self), self.refusals,
                                       Slots(limits.max_connections, limits.max_client_connections),
                                       limits.read_timeout)
        self.access = Access(host, self.httpd.server_address[1], token)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def url(self) -> str:
        """Where the operator opens the page: the address, with the token."""
        return self.address + (f"?token={self.access.token}" if self.access.token else "")

    def start(self) -> "ClickServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="click-http").start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ClickHandler(BoundedRequestHandler):
    """One request to the click server: the page, its frame stream, a click or a reset."""

    def __init__(self, *args, click: ClickServer, **kwargs):
        self.click = click
        super().__init__(*args, **kwargs)  # handles the request

    def do_GET(self):
        url = urlsplit(self.path)
        access = self.click.access
        checks = [("host", lambda: access.host_refusal(self.headers.get("Host")))]
        if url.path == "/events":  # the frames are the operator's too
            checks += [("origin", lambda: access.origin_refusal(self.headers, required=False)),
                       ("token", lambda: access.token_refusal(self.headers, parse_qs(url.query)))]
        if self._refused(checks):
            return
        if url.path == "/":
            self._send(200, "text/html; charset=utf-8", self.click.page)
        elif url.path == "/events":
            self._stream()
        else:
            self._send(404, "text/plain", b"not found")

    def do_POST(self):
        access, limits = self.click.access, self.click.limits
        if self._refused([("host", lambda: access.host_refusal(self.headers.get("Host"))),
                          ("origin", lambda: access.origin_refusal(self.headers, required=True)),
                          ("token", lambda: access.token_refusal(self.headers, {})),
                          ("content-type", self._content_type_refusal)]):
            return
        try:
            length = int(self.headers["Content-Length"])
            if length < 0:
                raise ValueError
        except (TypeError, ValueError):
            return self._refuse(400, "length", f"Content-Length {shown(self.headers.get('Content-Length'))} "
                                               "is not a length")
        if length > FixedLimits.MAX_BODY:
            return self._refuse(413, "size", f"a body of {length} bytes (at most {FixedLimits.MAX_BODY})")
        path = urlsplit(self.path).path
        if path not in ("/points", "/reset"):
            return self._send(404, "text/plain", b"not found")
        try:
            body = parse_body(self.rfile.read(length))
            message = click_message(body, limits) if path == "/points" else ("reset", pa.array([], pa.null()), {})
        except (ValueError, TypeError) as error:  # json's errors are ValueErrors
            return self._refuse(400, "body", str(error))
        if path == "/points":
            message = ("points", *message)
        try:
            self.click.outbox.put_nowait(message)
        except queue.Full:  # dora is not taking them: the robot is not listening
            return self._refuse(503, "queue", f"MAX_CLICKS={limits.max_clicks} clicks are queued for dora already")
        if path == "/reset":
            self.click.view.clear_masks()
        self._send(204, "text/plain", b"")

    def _refused(self, checks) -> bool:
        """The first of (kind, check) that refuses the request answers it with 403."""
        for kind, check in checks:
            reason = check()
            if reason:
                self._refuse(403, kind, reason)
                return True
        return False

    def _content_type_refusal(self) -> str | None:
        if self.headers.get_content_type() != "application/json":
            return f"Content-Type {shown(self.headers.get('Content-Type'))} is not application/json"
        return None

    def _refuse(self, status: int, kind: str, reason: str):
        """One log line per request kind (a fixed name) every 10 s; the reason is quoted cut short."""
        path = urlsplit(self.path).path
        named = path if path in PATHS else "(another path)"
        self.click.refusals.warning(f"{self.command} {named} {kind}", "refused %s %s: %s", self.command, named,
                                    reason[:200])
        self.close_connection = True
        self._send(status, "text/plain", reason[:200].encode())

    def _stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        subscriber = self.click.view.subscribe()
        try:
            while True:
                try:
                    message = subscriber.get(timeout=15)
                    self.wfile.write(f"data: {json.dumps(message)}\n\n".encode())
                except queue.Empty:
                    self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
        except OSError:  # the page went away, or stopped reading for READ_TIMEOUT
            pass
        finally:
            self.click.view.unsubscribe(subscriber)

    def _send(self, status: int, content_type: str, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # one line per request would drown the node's log
        pass
