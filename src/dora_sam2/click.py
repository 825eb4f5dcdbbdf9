"""`dora-sam2-click`: click on the live camera image in a browser, send SAM2 `points`, see the masks.

    inputs:  image (the camera), optionally mask or masks (dora-sam2's answers, drawn tinted)
    outputs: points (the current object's clicks: flat x,y; metadata labels 1/0, the clicked frame's
             timestamp, object_id, label), reset (the user cleared everything)
    env:     HOST (default 127.0.0.1), PORT (default 8000), TOKEN (default: a new one each run; `off`
             turns it off on a loopback HOST)

The page gets frames by server-sent events and posts clicks back; the server is the standard
library's. Left click = foreground, right click = background; z undoes, n starts a new object,
c clears all.

Only the operator's page may click (`access.Access`): a request must come to the address the server listens
on, from the page it serves (Origin), with the run's token, as JSON of a sane size and shape. Anything
else is refused before it reaches the robot. As a server it bounds what clients can hold: open
connections (MAX_CONNECTIONS, MAX_CLIENT_CONNECTIONS per address), the time to send a whole request
(READ_TIMEOUT), clicks queued for dora (MAX_CLICKS), and its log (one line per kind of refusal every
10 s, kinds it names itself). A client that holds connections open without finishing its request
(slowloris) gives way to the next one, so it cannot keep the operator out (`_Slots`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import queue
import selectors
import socket
import struct
import sys
import threading
import time
from collections import Counter, OrderedDict
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import pyarrow as pa

from . import codecs, overlay
from .access import Access, resolve_token
from .domain import InputError, Masks
from .joining import join_dataflow
from .settings import ConfigError, FixedLimits, Limits
from .throttle import Throttle

log = logging.getLogger("dora_sam2.click")

class LiveView:
    """The newest frame with the newest mask of each object drawn on it, as the page shows it."""

    def __init__(self):
        self._subscribers: list[queue.Queue] = []
        self._lock = threading.Lock()
        # per object label: every object stays visible, the least recently answered beyond DRAWN_OBJECTS go
        self._masks: OrderedDict[str, tuple[np.ndarray, float]] = OrderedDict()

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
                self._masks.pop(label, None)
                self._masks[label] = (mask, float(score))
            while len(self._masks) > FixedLimits.DRAWN_OBJECTS:
                self._masks.popitem(last=False)

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


def click_message(body: dict, limits: Limits = Limits()) -> tuple[pa.Array, dict]:
    """The page's JSON ({points: [[x, y, label]...], object, timestamp}) as a `points` message. Raises
    ValueError, saying why, for anything dora could not carry or SAM 2 could not use."""
    points = body.get("points")
    if not isinstance(points, list) or not points or not all(isinstance(p, list) and len(p) == 3 for p in points):
        raise ValueError("points should be a non-empty list of [x, y, label]")
    if len(points) > limits.max_points:
        raise ValueError(f"{len(points)} points for one object, over MAX_POINTS={limits.max_points}")
    if not all(_is_number(v) and abs(v) <= FixedLimits.MAX_COORDINATE for x, y, _ in points for v in (x, y)):
        raise ValueError(f"point coordinates should be finite numbers of at most {FixedLimits.MAX_COORDINATE:g} "
                         "pixels")
    if not all(_is_number(label) and codecs.is_point_label(label) for _, _, label in points):
        raise ValueError("point labels should be 1 (foreground) or 0 (background)")
    obj = body.get("object", 0)
    if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj <= FixedLimits.MAX_OBJECT_ID:
        raise ValueError(f"object should be an integer from 0 to {FixedLimits.MAX_OBJECT_ID}")
    metadata = {"labels": [int(p[2]) for p in points], "object_id": obj, "label": f"object {obj}"}
    timestamp = body.get("timestamp")
    if timestamp:
        if not isinstance(timestamp, str) or len(timestamp) > FixedLimits.TIMESTAMP_CHARS:
            raise ValueError("timestamp should be the frame's ISO 8601 time")
        metadata["timestamp"] = datetime.fromisoformat(timestamp)
    return pa.array(np.array([p[:2] for p in points], np.float32).ravel()), metadata


def _is_number(value) -> bool:
    """A finite JSON number: an int of any size (JSON allows 400 digits), or a float that is not inf/nan."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def parse_body(data: bytes) -> dict:
    """A request body as a JSON object of at most MAX_DEPTH levels; NaN and Infinity, which JSON does not
    have, are refused, as is nesting Python's parser would recurse on. Raises ValueError."""
    try:
        body = json.loads(data or b"{}", parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ValueError("the body should be a JSON object")
    level, depth = [body], 1
    while level:
        level = [v for item in level for v in (item.values() if isinstance(item, dict) else item)
                 if isinstance(v, (dict, list))]
        depth += bool(level)
        if depth > FixedLimits.MAX_DEPTH:
            raise ValueError(f"the body is nested more than {FixedLimits.MAX_DEPTH} levels deep")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON has")


class ClickServer:
    """The page, the frame stream and the click endpoint, on HOST:PORT. Clicks land in `outbox`."""

    def __init__(self, view: LiveView, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 limits: Limits = Limits()):
        self.view = view
        self.outbox: queue.Queue = queue.Queue(maxsize=limits.max_clicks)
        page = resources.files("dora_sam2").joinpath("static/click.html").read_bytes()
        refusals = Throttle(log)
        self.httpd = _Server((host, port), _handler(view, self.outbox, page, refusals, limits), refusals,
                             _Slots(limits.max_connections, limits.max_client_connections))
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


class _Connection:
    """One accepted connection: its client's address, when it opened, and whether its request head is in."""

    def __init__(self, sock: socket.socket, address: str):
        self.socket = sock
        self.address = address
        self.opened = time.monotonic()
        self._head_in = False  # the blank line that ends the request head has been read
        self._tail = b""  # the last bytes read, for a blank line split across two reads
        # Held to read and note what was read, and to judge the head: the two never see each other half done.
        self._lock = threading.Lock()

    def read_into(self, buffer) -> int:
        """What the client sent (the caller waited until something came), noting whether the head is in."""
        with self._lock:
            count = self.socket.recv_into(buffer)
            if not self._head_in:
                self._head_in, self._tail = _ends_head(self._tail + bytes(buffer[:count]))
        return count

    def head_in(self) -> bool:
        """Its whole request head has come, read or still waiting to be: it is about to be answered."""
        with self._lock:
            if self._head_in:
                return True
            try:  # bytes not read yet (its thread has not run): there, the peek does not wait
                waiting = _bytes_waiting(self.socket)
                peeked = self.socket.recv(min(waiting, PEEK), socket.MSG_PEEK) if waiting else b""
            except OSError:
                return False
            return _ends_head(self._tail + peeked)[0]


PEEK = 8192  # bytes of an unread request looked at for the end of its head: a page's head is under 2 kB


def _ends_head(seen: bytes) -> tuple[bool, bytes]:
    """Whether the bytes hold the blank line that ends a request head, and the tail to carry to the next."""
    return b"\n\n" in seen or b"\n\r\n" in seen, seen[-2:]


def _bytes_waiting(sock: socket.socket) -> int:
    """Bytes the client sent that the server has not read yet (0 where the system cannot say)."""
    try:
        import fcntl
        import termios
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except (ImportError, OSError, ValueError):
        return 0


class _Slots:
    """The open connections: `total` in all, `per_client` from one address.

    A full server makes room rather than turn the newcomer away. What gives way is the oldest connection
    still short of its request head, of the address that holds the most: what a client holding slots
    with a byte every few seconds (slowloris) holds. A request whose head is in is never cut, and the only
    ones that then keep a slot for long are the token's (the frame stream, a click's body): everything
    else is answered at once. So the operator's page gets in however many slots a stranger holds, and a
    stranger on another address holds at most `per_client` of them.
    """

    def __init__(self, total: int, per_client: int):
        self.total = total
        self.per_client = per_client
        self._open: dict[socket.socket, _Connection] = {}
        self._lock = threading.Lock()

    def admit(self, sock: socket.socket, address: str) -> tuple[_Connection | None, str | None]:
        """Takes the connection in: (the connection it closed to make room, or None; None) or, where
        every slot it could take holds a request whose head is in, (None, the bound that refused it)."""
        with self._lock:
            held = Counter(c.address for c in self._open.values())
            if held[address] >= self.per_client:
                bound, candidates = "MAX_CLIENT_CONNECTIONS", [c for c in self._open.values() if c.address == address]
            elif len(self._open) >= self.total:
                bound, candidates = "MAX_CONNECTIONS", list(self._open.values())
            else:
                bound, candidates = None, []
            victim = None
            if bound:
                candidates.sort(key=lambda c: (-held[c.address], c.opened))
                victim = next((c for c in candidates if not c.head_in()), None)
                if victim is None:
                    return None, bound
                del self._open[victim.socket]
            self._open[sock] = _Connection(sock, address)
        if victim:
            try:
                victim.socket.shutdown(socket.SHUT_RDWR)  # its thread's read ends at once; that thread closes it
            except OSError:
                pass
        return victim, None

    def get(self, sock: socket.socket) -> _Connection | None:
        """The connection, while it holds its slot (None once it gave way)."""
        with self._lock:
            return self._open.get(sock)

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


class _Server(ThreadingHTTPServer):
    """The standard library's threading server, with its connections held to `_Slots` (idle keep-alive
    connections, slow clients and event streams would otherwise hold a thread each, without end)."""

    daemon_threads = True
    # Connections the system takes in before they are accepted: the standard 5 drops the operator's SYN for
    # seconds at a time when a flood keeps that queue full; the system caps this at its own somaxconn.
    request_queue_size = socket.SOMAXCONN
    access: Access

    def __init__(self, address, handler, refusals: Throttle, slots: _Slots):
        self.refusals = refusals
        self.slots = slots
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        address = client_address[0]
        gave_way, bound = self.slots.admit(request, address)
        if bound:
            limit = self.slots.per_client if bound == "MAX_CLIENT_CONNECTIONS" else self.slots.total
            self.refusals.warning(f"{bound} full", "refused a connection from %s: %s=%d are open, each with its "
                                  "request head in", address, bound, limit)
            self.shutdown_request(request)
            return
        if gave_way:
            self.refusals.warning("gave way", "closed a connection from %s after %.1f s without its request "
                                  "head, to make room (MAX_CONNECTIONS=%d, MAX_CLIENT_CONNECTIONS=%d)", gave_way.address,
                                  time.monotonic() - gave_way.opened, self.slots.total, self.slots.per_client)
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release(request)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release(request)

    def handle_error(self, request, client_address):  # a client that hangs up or times out: no traceback
        if self.slots.get(request) is None:  # closed to make room: said when it was
            return
        self.refusals.warning("client", "a request from %s failed: %s", client_address[0],
                              type(sys.exc_info()[1]).__name__)


class _RequestReader(io.RawIOBase):
    """The client's side of one connection, read against one deadline for the whole request, head and
    body (READ_TIMEOUT from the connection's start), not per read: a client that sends a byte every few
    seconds is cut off as surely as one that sends nothing."""

    def __init__(self, connection: _Connection, read_timeout: float, refusals: Throttle):
        self.connection = connection
        self.read_timeout = read_timeout
        self.refusals = refusals
        self._arrival = _Selector()
        self._arrival.register(connection.socket, selectors.EVENT_READ)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.connection.opened + self.read_timeout - time.monotonic()
        if left <= 0 or not self._arrival.select(left):
            self.refusals.warning("deadline", "closed a connection from %s: its request was not in after "
                                  "READ_TIMEOUT=%gs", self.connection.address, self.read_timeout)
            raise TimeoutError("READ_TIMEOUT")  # the standard handler closes the connection
        return self.connection.read_into(buffer)

    def close(self) -> None:
        self._arrival.close()
        super().close()


# what socketserver waits with: poll where there is one (select cannot wait on a descriptor past 1023)
_Selector = selectors.PollSelector if hasattr(selectors, "PollSelector") else selectors.SelectSelector


PATHS = ("/", "/events", "/points", "/reset")  # what the log names; any other path is "another path"


def _handler(view: LiveView, outbox: queue.Queue, page: bytes, refusals: Throttle, limits: Limits):
    class Handler(BaseHTTPRequestHandler):
        timeout = limits.read_timeout  # writes to a page that stops reading; reads keep one deadline instead

        def setup(self):
            super().setup()
            self.rfile.close()  # the standard file reads without a deadline for the whole request
            connection = self.server.slots.get(self.request) or _Connection(self.request, self.client_address[0])
            self.rfile = io.BufferedReader(_RequestReader(connection, limits.read_timeout, refusals))

        def do_GET(self):
            url = urlsplit(self.path)
            access = self.server.access
            checks = [("host", lambda: access.host_refusal(self.headers.get("Host")))]
            if url.path == "/events":  # the frames are the operator's too
                checks += [("origin", lambda: access.origin_refusal(self.headers, required=False)),
                           ("token", lambda: access.token_refusal(self.headers, parse_qs(url.query)))]
            if self._refused(checks):
                return
            if url.path == "/":
                self._send(200, "text/html; charset=utf-8", page)
            elif url.path == "/events":
                self._stream()
            else:
                self._send(404, "text/plain", b"not found")

        def do_POST(self):
            access = self.server.access
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
                return self._refuse(400, "length", f"Content-Length {_shown(self.headers.get('Content-Length'))} "
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
                outbox.put_nowait(message)
            except queue.Full:  # dora is not taking them: the robot is not listening
                return self._refuse(503, "queue", f"MAX_CLICKS={limits.max_clicks} clicks are queued for dora already")
            if path == "/reset":
                view.clear_masks()
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
                return f"Content-Type {_shown(self.headers.get('Content-Type'))} is not application/json"
            return None

        def _refuse(self, status: int, kind: str, reason: str):
            """One log line per request kind (a fixed name) every 10 s; the reason is quoted cut short."""
            path = urlsplit(self.path).path
            shown = path if path in PATHS else "(another path)"
            refusals.warning(f"{self.command} {shown} {kind}", "refused %s %s: %s", self.command, shown, reason[:200])
            self.close_connection = True
            self._send(status, "text/plain", reason[:200].encode())

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
            except OSError:  # the page went away, or stopped reading for READ_TIMEOUT
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


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s dora-sam2-click: %(message)s", stream=sys.stderr)
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    view = LiveView()
    try:
        token = resolve_token(os.environ.get("TOKEN"), host)
        limits = Limits.from_env()
    except (ValueError, ConfigError) as error:
        log.error("%s", error)
        sys.exit(1)
    try:
        server = ClickServer(view, host, int(port), token, limits).start()
    except (OSError, ValueError, OverflowError) as error:
        log.error("cannot serve on %s:%s (%s): set HOST and PORT to a free local address", host, port, error)
        sys.exit(1)
    log.info("open %s and click: left = object, right = background; z undo, n new object, c clear", server.url)

    node = join_dataflow()  # quietly gone when another node failed the start: its sentence is the one
    said = Throttle(log, burst=20)
    while True:
        _send_clicks(node, server.outbox, said)
        event = node.next(timeout=0.05)
        if event is None:
            break
        if event["type"] == "INPUT":
            _handle(event, view, limits, said)
    server.stop()


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
