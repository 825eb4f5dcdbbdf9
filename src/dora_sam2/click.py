"""`dora-sam2-click`: click on the live camera image in a browser, send SAM2 `points`, see the masks.

    inputs:  image (the camera), optionally mask or masks (dora-sam2's answers, drawn tinted)
    outputs: points (the current object's clicks: flat x,y; metadata labels 1/0, the clicked frame's
             timestamp, object_id, label), reset (the user cleared everything)
    env:     HOST (default 127.0.0.1), PORT (default 8000), TOKEN (default: a new one each run; `off`
             turns it off on a loopback HOST)

The page gets frames by server-sent events and posts clicks back; the server is the standard
library's. Left click = foreground, right click = background; z undoes, n starts a new object,
c clears all.

Only the operator's page may click (`Access`): a request must come to the address the server listens
on, from the page it serves (Origin), with the run's token, as JSON of a sane size. Anything else is
refused before it reaches the robot.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import os
import queue
import secrets
import socket
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pyarrow as pa

from . import codecs, overlay
from .domain import InputError, Masks
from .masks import decode_masks, decode_union

log = logging.getLogger("dora_sam2.click")


class LiveView:
    """The newest frame with the newest mask of each object drawn on it, as the page shows it."""

    def __init__(self):
        self._subscribers: list[queue.Queue] = []
        self._lock = threading.Lock()
        self._masks: dict[str, tuple[np.ndarray, float]] = {}  # per object label: every object stays visible

    def show_frame(self, frame) -> None:
        with self._lock:
            watched = bool(self._subscribers)
        if not watched:  # nobody has the page open: do not draw and encode 30 frames a second for nothing
            return
        masks = self._drawable(frame.height, frame.width)
        rgb = overlay.draw(frame, masks) if masks is not None else frame.rgb
        jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
        message = {
            "jpeg": base64.b64encode(jpeg.tobytes()).decode(), "width": frame.width, "height": frame.height,
            "timestamp": frame.timestamp.isoformat() if frame.timestamp else None,
            "masks": 0 if masks is None else len(masks),
        }
        with self._lock:
            for subscriber in self._subscribers:
                if subscriber.qsize() < 2:  # a slow browser gets the newest frames, not a backlog
                    subscriber.put(message)

    def show_masks(self, stack: np.ndarray, labels: list[str], scores: list[float]) -> None:
        with self._lock:
            for mask, label, score in zip(stack, labels or [""] * len(stack), scores or [float("nan")] * len(stack)):
                self._masks[label] = (mask, float(score))

    def clear_masks(self) -> None:
        with self._lock:
            self._masks.clear()

    def subscribe(self) -> queue.Queue:
        subscriber: queue.Queue = queue.Queue()
        with self._lock:
            self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: queue.Queue) -> None:
        with self._lock:
            self._subscribers.remove(subscriber)

    def _drawable(self, height: int, width: int) -> Masks | None:
        with self._lock:
            items = [(label, m, score) for label, (m, score) in self._masks.items() if m.shape == (height, width)]
        if not items:
            return None
        labels, stack, scores = zip(*items)
        return Masks(np.stack(stack), np.array(scores, np.float32), tuple(labels), "image", None)


def click_message(body: dict) -> tuple[pa.Array, dict]:
    """The page's JSON ({points: [[x, y, label]...], object, timestamp}) as a `points` message."""
    points = body.get("points")
    if not isinstance(points, list) or not points or not all(
        isinstance(p, list) and len(p) == 3 and all(isinstance(v, (int, float)) for v in p) for p in points
    ):
        raise ValueError("points should be a non-empty list of [x, y, label]")
    labels = [int(p[2]) for p in points]
    if any(label not in (0, 1) for label in labels):
        raise ValueError("point labels should be 1 (foreground) or 0 (background)")
    obj = int(body.get("object", 0))
    metadata = {"labels": labels, "object_id": obj, "label": f"object {obj}"}
    if body.get("timestamp"):
        metadata["timestamp"] = datetime.fromisoformat(body["timestamp"])
    return pa.array(np.array([p[:2] for p in points], np.float32).ravel()), metadata


MAX_BODY = 64 * 1024  # a click is a few hundred bytes
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class Access:
    """Which requests the click server obeys.

    - Host must name this server: a loopback server answers only to localhost, 127.0.0.1 or [::1] at its
      port; one on the network also to an IP address or this machine's own name. A DNS name that merely
      resolves here (DNS rebinding: a web page whose domain re-resolves to 127.0.0.1) is refused.
    - A POST must come from the page this server serves: its Origin (or, without one, its Referer) is
      this server's own address. Any other web page the operator has open sends its own origin.
    - The token (a new one each run, as notebook servers do) must come with every POST (Authorization:
      Bearer) and with the frame stream (?token=, which EventSource cannot send as a header).
    """

    def __init__(self, host: str, port: int, token: str | None):
        self.port = port
        self.token = token
        self.loopback = is_loopback(host)
        names = {host.lower(), *LOOPBACK_NAMES}
        if not self.loopback:
            names |= {socket.gethostname().lower(), f"{socket.gethostname().lower()}.local"}
        self._names = names

    def host_refusal(self, host_header: str | None) -> str | None:
        if not host_header:
            return "no Host header"
        split = urlsplit(f"//{host_header}")
        try:
            name, port = (split.hostname or "").lower(), split.port
        except ValueError:
            return f"Host {host_header!r} is malformed"
        bracketed = f"[{name}]" if ":" in name else name
        ip_literal = _is_ip(name)
        if port not in (self.port, None) or not (bracketed in self._names or name in self._names
                                                 or (ip_literal and not self.loopback)):
            return f"Host {host_header!r} is not this server (DNS rebinding?)"
        if self.loopback and ip_literal and not is_loopback(name):
            return f"Host {host_header!r} is not this loopback server"
        return None

    def origin_refusal(self, headers, required: bool) -> str | None:
        """The request's Origin (or Referer) is the page's own: http:// and the Host it was sent to."""
        own = f"http://{headers.get('Host', '')}"
        origin = headers.get("Origin")
        if origin is None and headers.get("Referer"):
            referer = urlsplit(headers["Referer"])
            origin = f"{referer.scheme}://{referer.netloc}"
        if origin is None:
            return "no Origin or Referer: not sent by the page" if required else None
        if origin != own:
            return f"origin {origin!r} is not this page's"
        return None

    def token_refusal(self, headers, query: dict) -> str | None:
        if self.token is None:
            return None
        given = headers.get("Authorization", "").removeprefix("Bearer ").strip() or (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "no token or a wrong one" if given else "no token"
        return None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def resolve_token(raw: str | None, host: str) -> str | None:
    """TOKEN: unset or empty -> a new random token; `off` -> none (loopback HOST only); else that token."""
    raw = (raw or "").strip()
    if raw.lower() in ("off", "0", "false", "no"):
        if not is_loopback(host):
            raise ValueError(f"TOKEN={raw} with HOST={host}: anyone on the network could click. Keep the token "
                             "(the default), or keep HOST on 127.0.0.1 and reach it through an SSH tunnel.")
        return None
    return raw or secrets.token_urlsafe(18)


class ClickServer:
    """The page, the frame stream and the click endpoint, on HOST:PORT. Clicks land in `outbox`."""

    def __init__(self, view: LiveView, host: str = "127.0.0.1", port: int = 8000, token: str | None = None):
        self.view = view
        self.outbox: queue.Queue = queue.Queue()
        page = resources.files("dora_sam2").joinpath("static/click.html").read_bytes()
        self.httpd = _Server((host, port), _handler(view, self.outbox, page))
        self.access = Access(host, self.httpd.server_address[1], token)
        self.httpd.access = self.access

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    access: Access

    def handle_error(self, request, client_address):  # a client that hangs up: one line, no traceback
        log.warning("request from %s failed: %s", client_address[0], sys.exc_info()[1])


class _Refusals:
    """One log line per kind of refusal (request and reason) every 10 s: a hostile page may retry in a loop."""

    def __init__(self):
        self._said: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def say(self, method: str, path: str, reason: str) -> None:
        now, kind = time.monotonic(), (method, path, reason)
        with self._lock:
            if now - self._said.get(kind, -10.0) < 10.0:
                return
            self._said[kind] = now
        log.warning("refused %s %s: %s", method, path, reason)


def _handler(view: LiveView, outbox: queue.Queue, page: bytes):
    refusals = _Refusals()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlsplit(self.path)
            refusal = self.server.access.host_refusal(self.headers.get("Host"))
            if url.path == "/events" and refusal is None:
                refusal = (self.server.access.origin_refusal(self.headers, required=False)
                           or self.server.access.token_refusal(self.headers, parse_qs(url.query)))
            if refusal:
                return self._refuse(403, refusal)
            if url.path == "/":
                self._send(200, "text/html; charset=utf-8", page)
            elif url.path == "/events":
                self._stream()
            else:
                self._send(404, "text/plain", b"not found")

        def do_POST(self):
            access = self.server.access
            refusal = (access.host_refusal(self.headers.get("Host"))
                       or access.origin_refusal(self.headers, required=True)
                       or access.token_refusal(self.headers, {}))
            if refusal is None and self.headers.get_content_type() != "application/json":
                refusal = f"Content-Type {self.headers.get('Content-Type')!r} is not application/json"
            if refusal:
                return self._refuse(403, refusal)
            try:
                length = int(self.headers["Content-Length"])
                if length < 0:
                    raise ValueError
            except (TypeError, ValueError):
                return self._refuse(400, f"Content-Length {self.headers.get('Content-Length')!r} is not a length")
            if length > MAX_BODY:
                return self._refuse(413, f"a body of {length} bytes (at most {MAX_BODY})")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the body should be a JSON object")
                if self.path == "/points":
                    outbox.put(("points", *click_message(body)))
                elif self.path == "/reset":
                    view.clear_masks()
                    outbox.put(("reset", pa.array([], pa.null()), {}))
                else:
                    return self._send(404, "text/plain", b"not found")
            except (ValueError, TypeError) as error:  # json's errors are ValueErrors
                return self._send(400, "text/plain", str(error).encode())
            self._send(204, "text/plain", b"")

        def _refuse(self, status: int, reason: str):
            refusals.say(self.command, urlsplit(self.path).path, reason)
            self.close_connection = True
            self._send(status, "text/plain", reason.encode())

        def _stream(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            subscriber = view.subscribe()
            try:
                while True:
                    try:
                        message = subscriber.get(timeout=15)
                        self.wfile.write(f"data: {json.dumps(message)}\n\n".encode())
                    except queue.Empty:
                        self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                view.unsubscribe(subscriber)

        def _send(self, status: int, content_type: str, body: bytes):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # one line per request would drown the node's log
            pass

    return Handler


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s dora-sam2-click: %(message)s", stream=sys.stderr)
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    view = LiveView()
    try:
        token = resolve_token(os.environ.get("TOKEN"), host)
    except ValueError as error:
        log.error("%s", error)
        sys.exit(1)
    try:
        server = ClickServer(view, host, int(port), token).start()
    except (OSError, ValueError) as error:
        log.error("cannot serve on %s:%s (%s): set HOST and PORT to a free local address", host, port, error)
        sys.exit(1)
    log.info("open %s and click: left = object, right = background; z undo, n new object, c clear", server.url)

    from dora import Node

    node = Node()
    while True:
        _send_clicks(node, server.outbox)
        event = node.next(timeout=0.05)
        if event is None:
            break
        if event["type"] == "INPUT":
            _handle(event, view)
    server.stop()


def _send_clicks(node, outbox: queue.Queue) -> None:
    while True:
        try:
            output, value, metadata = outbox.get_nowait()
        except queue.Empty:
            return
        node.send_output(output, value, metadata)


def _handle(event: dict, view: LiveView) -> None:
    try:
        if event["id"].startswith("image"):
            view.show_frame(codecs.decode_frame(event["id"], event["value"], event["metadata"]))
        elif event["id"] in ("mask", "masks"):
            metadata = event["metadata"]
            labels, scores = list(metadata.get("labels", [])), list(metadata.get("scores", []))
            if metadata.get("mask_layout") == "union":  # the objects drawn as one
                view.show_masks(decode_union(event)[None], [", ".join(filter(None, labels))], scores[:1])
            else:
                view.show_masks(decode_masks(event), labels, scores)
    except (InputError, ValueError) as error:
        log.warning("input '%s': %s", event["id"], error)


if __name__ == "__main__":
    main()
