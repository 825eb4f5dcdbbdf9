"""`dora-sam2-click`: click on the live camera image in a browser, send SAM2 `points`, see the masks.

    inputs:  image (the camera), optionally mask or masks (dora-sam2's answers, drawn tinted)
    outputs: points (the current object's clicks: flat x,y; metadata labels 1/0, the clicked frame's
             timestamp, object_id, label), reset (the user cleared everything)
    env:     HOST (default 127.0.0.1), PORT (default 8000)

The page gets frames by server-sent events and posts clicks back; the server is the standard
library's. Left click = foreground, right click = background; z undoes, n starts a new object,
c clears all.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import sys
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

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


class ClickServer:
    """The page, the frame stream and the click endpoint, on HOST:PORT. Clicks land in `outbox`."""

    def __init__(self, view: LiveView, host: str = "127.0.0.1", port: int = 8000):
        self.view = view
        self.outbox: queue.Queue = queue.Queue()
        page = resources.files("dora_sam2").joinpath("static/click.html").read_bytes()
        self.httpd = ThreadingHTTPServer((host, port), _handler(view, self.outbox, page))
        self.httpd.daemon_threads = True

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "ClickServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True, name="click-http").start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(view: LiveView, outbox: queue.Queue, page: bytes):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/":
                self._send(200, "text/html; charset=utf-8", page)
            elif self.path == "/events":
                self._stream()
            else:
                self._send(404, "text/plain", b"not found")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == "/points":
                    outbox.put(("points", *click_message(body)))
                elif self.path == "/reset":
                    view.clear_masks()
                    outbox.put(("reset", pa.array([], pa.null()), {}))
                else:
                    return self._send(404, "text/plain", b"not found")
            except (ValueError, TypeError) as error:
                return self._send(400, "text/plain", str(error).encode())
            self._send(204, "text/plain", b"")

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
        server = ClickServer(view, host, int(port)).start()
    except (OSError, ValueError) as error:
        log.error("cannot serve on %s:%s (%s): set HOST and PORT to a free local address", host, port, error)
        sys.exit(1)
    log.info("open %s and click: left = object, right = background; z undo, n new object, c clear", server.address)

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
