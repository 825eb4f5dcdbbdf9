"""The click node: its HTTP side in pytest, and the real page in headless Chromium in a real dataflow."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import select
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.browser import CHROMIUM, launch_chromium, open_when_served
from support.dataflows import (ROOT, camera, collector, dataflow_in_background, flow, free_port, node, read_events,
                               sam2, wait_for)
from support.slowloris import Slowloris

from dora_sam2.click_requests import click_message
from dora_sam2.click_server import ClickServer
from dora_sam2.click_view import LiveView
from dora_sam2.domain import Frame
from dora_sam2.settings import Limits

T0 = datetime(2026, 4, 1, 8, 30, 0, 123456, tzinfo=timezone.utc)


TOKEN = "test-token-0123456789"


@pytest.fixture
def server():
    view = LiveView()
    server = ClickServer(view, "127.0.0.1", free_port(), TOKEN).start()
    yield server
    server.stop()


def page_headers(server) -> dict:
    """What the served page sends: its own origin, JSON, the token."""
    return {"Origin": server.address.rstrip("/"), "Content-Type": "application/json",
            "Authorization": f"Bearer {TOKEN}"}


def post(server, path, body, timeout: float = 5, **headers):
    """POST as the page does; `headers` replace or (None) remove the page's."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Length": str(len(data)), **page_headers(server), **headers}
    host = sent.pop("Host", None)
    return raw(server, "POST", path, {k: v for k, v in sent.items() if v is not None}, data, host, timeout)


def raw(server, method: str, path: str, headers: dict, body: bytes = b"", host: str | None = None,
        timeout: float = 5) -> int:
    """A request exactly as given (urllib would fix up Host and Content-Length); its status."""
    port = int(server.address.rstrip("/").rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host or f"127.0.0.1:{port}")
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders(body or None)
        return connection.getresponse().status
    finally:
        connection.close()


def test_page_is_served(server):
    page = urllib.request.urlopen(server.address, timeout=5).read().decode()
    assert "EventSource" in page and "contextmenu" in page


def test_clicks_become_points_messages_on_the_clicked_frame(server):
    status = post(server, "/points", {"object": 2, "timestamp": T0.isoformat(),
                                      "points": [[10, 20, 1], [30.5, 40, 0]]})
    assert status == 204
    output, value, metadata = server.outbox.get(timeout=2)
    assert output == "points"
    assert value.to_pylist() == [10, 20, 30.5, 40]
    assert metadata == {"labels": [1, 0], "object_id": 2, "label": "object 2", "timestamp": T0}


@pytest.mark.parametrize("body", [{"points": []}, {"points": [[1, 2]]}, {"points": [[1, 2, 5]]},
                                  {"points": "x"}, {"points": [[1, 2, 1]], "timestamp": "yesterday"}])
def test_bad_clicks_are_refused(server, body):
    assert post(server, "/points", body) == 400
    assert server.outbox.empty()


def test_reset_is_sent_and_forgets_masks(server):
    server.view.show_masks(np.ones((1, 4, 4), bool), ["object 0"], [0.8])
    assert post(server, "/reset", {}) == 204
    assert server.outbox.get(timeout=2)[0] == "reset"
    assert server.view._drawable(4, 4) is None


def test_frames_stream_with_their_timestamp_and_masks(server):
    stream = urllib.request.urlopen(server.address + f"events?token={TOKEN}", timeout=5)
    frame = Frame("image", np.full((48, 64, 3), 100, np.uint8), T0, "bgr8")
    server.view.show_masks(np.pad(np.ones((1, 10, 10), bool), ((0, 0), (0, 38), (0, 54))), ["object 0"], [0.8])
    deadline = time.monotonic() + 5
    while not server.view._subscribers and time.monotonic() < deadline:  # the server thread registers the page
        time.sleep(0.01)
    server.view.show_frame(frame)
    line = b""
    while not line.startswith(b"data: "):
        line = stream.readline()
    message = json.loads(line[6:])
    assert (message["width"], message["height"], message["masks"]) == (64, 48, 1)
    assert datetime.fromisoformat(message["timestamp"]) == T0
    image = cv2.imdecode(np.frombuffer(base64.b64decode(message["jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3)
    change = np.abs(image.astype(int) - 100).max(axis=2)  # the largest change of any channel, per pixel
    assert change[5, 5] > 20 and change[40, 60] < 8  # tinted where the mask is, untouched elsewhere


# ---------------------------------------------------------------------------- only the operator's page


CLICK = {"object": 0, "points": [[10, 20, 1]]}


@pytest.mark.parametrize("headers, why", [
    ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, "what any page sends with no-cors"),
    ({"Origin": "http://evil.example"}, "another site, even with JSON and the token"),
    ({"Origin": "http://127.0.0.1:1"}, "another local server"),
    ({"Origin": None, "Referer": "http://evil.example/page"}, "a referer from elsewhere"),
    ({"Origin": None}, "neither origin nor referer"),
    ({"Host": "attacker.example:8765", "Origin": "http://attacker.example:8765"}, "DNS rebinding"),
    ({"Authorization": None}, "no token"),
    ({"Authorization": "Bearer guessed"}, "a wrong token"),
    ({"Content-Type": "text/plain"}, "not JSON"),
])
@pytest.mark.parametrize("path", ["/points", "/reset"])
def test_requests_not_from_the_page_are_refused_and_nothing_is_sent(server, headers, why, path, caplog):
    with caplog.at_level("WARNING", logger="dora_sam2.click"):
        assert post(server, path, CLICK, **headers) == 403, why
    assert server.outbox.empty()
    assert len([r for r in caplog.records if r.getMessage().startswith(f"refused POST {path}")]) == 1


def test_refusals_are_one_line_per_kind_however_many(server, caplog):
    with caplog.at_level("WARNING", logger="dora_sam2.click"):
        for _ in range(20):
            assert post(server, "/points", CLICK, Origin="http://evil.example") == 403
    assert len(caplog.records) == 1 and server.outbox.empty()


def test_the_pages_own_clicks_from_any_loopback_name_are_obeyed(server):
    port = server.address.rstrip("/").rsplit(":", 1)[1]
    for name in ("127.0.0.1", "localhost"):
        assert post(server, "/points", CLICK, Host=f"{name}:{port}", Origin=f"http://{name}:{port}") == 204
    assert server.outbox.qsize() == 2


@pytest.mark.parametrize("length, body, status", [
    ("abc", b"{}", 400), (None, b"{}", 400), ("-5", b"{}", 400),
    (str(10**6), b"", 413),  # refused on its Content-Length, before anything is read
    (None, b"{not json", 400),
])
def test_malformed_or_oversized_bodies_are_refused_and_the_server_goes_on(server, length, body, status, capfd):
    headers = page_headers(server)
    if length is not None:
        headers["Content-Length"] = length
    elif body != b"{}":
        headers["Content-Length"] = str(len(body))
    assert raw(server, "POST", "/points", headers, body) == status
    assert server.outbox.empty() and "Traceback" not in capfd.readouterr().err
    assert post(server, "/points", CLICK) == 204  # still serving


@pytest.mark.parametrize("body, why", [
    (b"[" * 30_000 + b"]" * 30_000, "nesting Python's parser would recurse on"),
    (b'{"points": [[[[[1]]]], 2, 1]]}', "nesting past MAX_DEPTH"),
    (b'{"points": [[5, 5, 1]], "object": Infinity}', "a number JSON does not have"),
    (b'{"points": [[NaN, 5, 1]]}', "NaN"),
    (b'{"points": [[1e400, 5, 1]]}', "infinity, spelt as a number"),
    (b'{"points": [[5, 5, 1]], "object": 1e300}', "an object id dora cannot carry"),
    (b'{"points": [[5, 5, 1]], "object": 1180591620717411303424}', "an object id past int64"),
    (b'{"points": [[5, 5, 1]], "object": true}', "a boolean object id"),
    (b'{"points": [[5, 5, 1.9]]}', "a label that is not 0 or 1 (not rounded to 1)"),
    (b'{"points": [[5, 5, -0.5]]}', "a label that is not 0 or 1 (not rounded to 0)"),
    (b'{"points": [[5e7, 5, 1]]}', "a coordinate past any camera"),
    (b'{"points": [[5, 5, 1]], "timestamp": 5}', "a timestamp that is not a time"),
    (json.dumps({"points": [[5, 5, 1]] * 65}).encode(), "more than MAX_POINTS points"),
])
def test_bodies_the_page_never_sends_are_400_and_nothing_reaches_dora(server, body, why, caplog):
    with caplog.at_level("WARNING", logger="dora_sam2.click"):
        assert post(server, "/points", body) == 400, why
    assert server.outbox.empty()
    assert [r.getMessage()[:len("refused POST /points: ")] for r in caplog.records] == ["refused POST /points: "]
    assert post(server, "/points", CLICK) == 204  # still serving


def test_refusals_on_300_paths_are_one_line_and_hold_no_memory(server, caplog):
    """The refusal log is keyed by kinds the server names, never by the path a requester chose."""
    import resource

    with caplog.at_level("WARNING", logger="dora_sam2.click"):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(300):
            assert post(server, f"/points/{i}" + "x" * 1000, CLICK, Origin="http://evil.example") == 403
        grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert [r.getMessage() for r in caplog.records] == [
        "refused POST (another path): origin 'http://evil.example' is not this page's"]
    assert grown_kb < 20_000  # 300 different 1 kB paths, remembered, would still be small: see BENCHMARKS.md


def test_open_connections_are_capped_and_idle_ones_let_go():
    """MAX_CONNECTIONS: past it, the oldest connection without its request gives way to the new one;
    READ_TIMEOUT: one that sends nothing is dropped, so a page that opens hundreds of connections and
    sends nothing cannot hold the server for good."""
    import threading

    from dora_sam2.settings import Limits

    server = ClickServer(LiveView(), "127.0.0.1", free_port(), TOKEN,
                         Limits(max_connections=4, read_timeout=1.0)).start()
    port = int(server.address.rstrip("/").rsplit(":", 1)[1])
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(12)]
    try:
        closed = 0
        for sock in idle:  # every one ends: 8 giving way to newer ones, 4 after READ_TIMEOUT
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == 12 and threading.active_count() <= threads + 4
        wait_for(lambda: _status(server, "/") == 200)  # and the page is served again
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def _status(server, path: str) -> int | None:
    try:
        return raw(server, "GET", path, {})
    except OSError:
        return None


# ---------------------------------------------------------------------------- slow clients


@contextlib.contextmanager
def camera_for(view: LiveView, seconds: float = 600):
    """A frame shown every 50 ms while the block runs (`seconds`: a hang guard)."""
    stop = threading.Event()

    def show():
        end = time.monotonic() + seconds
        while not stop.wait(0.05) and time.monotonic() < end:
            view.show_frame(Frame("image", np.full((48, 64, 3), 100, np.uint8), T0, "bgr8"))

    thread = threading.Thread(target=show, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def open_stream(server) -> http.client.HTTPResponse:
    """The page's frame stream, as its EventSource opens it."""
    port = int(server.address.rstrip("/").rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", f"/events?token={TOKEN}")
    response = connection.getresponse()
    assert response.status == 200
    return response


def next_frame(stream) -> dict:
    for _ in range(1000):  # keep-alive comments between frames
        line = stream.fp.readline()
        if line.startswith(b"data: "):
            return json.loads(line[6:])
        assert line, "the stream ended"
    raise AssertionError("no frame in 1000 lines")


def slots_held(server, count: int) -> bool:
    return len(server.httpd.slots) >= count


@pytest.mark.parametrize("limits, held", [
    (Limits(), 16),  # loopback is one address: MAX_CLIENT_CONNECTIONS binds first
    (Limits(max_connections=8, max_client_connections=100), 8),  # MAX_CONNECTIONS binds
], ids=["per-client bound", "total bound"])
def test_a_slowloris_on_every_slot_does_not_keep_the_operator_out(limits, held):
    """200 connections each sending a byte a second hold every slot the server gives one address; their
    bytes come far inside READ_TIMEOUT (10 s), and each one the server closes is opened again. Meanwhile
    the operator's page loads, its frames stream, its clicks land, every time, and the frame stream it
    opened before keeps streaming."""
    view = LiveView()
    server = ClickServer(view, "127.0.0.1", free_port(), TOKEN, limits).start()
    try:
        with camera_for(view):
            first = open_stream(server)
            next_frame(first)
            with Slowloris(server.httpd.server_address[1], connections=200, every=1.0) as slowloris:
                for load in range(5):  # each once every slot is held, the slowloris a round or more in
                    wait_for(lambda: slowloris.rounds >= 2 and slots_held(server, held), 120, "every slot held")
                    assert raw(server, "GET", f"/?token={TOKEN}", {}, timeout=60) == 200, load
                    stream = open_stream(server)
                    assert next_frame(stream)["width"] == 64
                    stream.close()
                    assert post(server, "/points", CLICK, timeout=60) == 204, load
                    next_frame(first)  # the first page's stream, all along
                assert slowloris.answered == 0  # nothing it sent was ever taken for a request
            first.close()
        assert server.outbox.qsize() == 5
    finally:
        server.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_the_page_in_chromium_loads_and_clicks_under_a_slowloris():
    """The operator's real page, in a real browser (its preconnects, retries and event stream included),
    while a slowloris holds every slot the server gives one address."""
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    view = LiveView()
    server = ClickServer(view, "127.0.0.1", free_port(), TOKEN).start()
    try:
        with camera_for(view), Slowloris(server.httpd.server_address[1], connections=200, every=1.0) as slowloris, \
                playwright.sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 900, "height": 700})
            for load in range(3):
                wait_for(lambda: slowloris.rounds >= 2 and slots_held(server, 16), 120, "every slot held")
                page.goto(server.url, timeout=120_000)
                page.wait_for_function("+document.body.dataset.frames >= 2", timeout=120_000)
                box = page.locator("#view").bounding_box()
                page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                output, value, _ = server.outbox.get(timeout=120)
                assert output == "points" and len(value) == 2, load
            browser.close()
            assert slowloris.answered == 0
    finally:
        server.stop()


@pytest.mark.parametrize("trickled", ["head", "body"])
def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_its_deadline(trickled, caplog):
    """READ_TIMEOUT bounds the whole request, not each read: a byte every 50 ms keeps no request open past
    it, whether the head comes so (slowloris) or the body does, after a head with the right token."""
    server = ClickServer(LiveView(), "127.0.0.1", free_port(), TOKEN, Limits(read_timeout=1.0)).start()
    port = server.httpd.server_address[1]
    body = json.dumps(CLICK).encode().ljust(2000)  # valid JSON: 100 s at a byte every 50 ms
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{port}", "Content-Length": len(body),
                                                 **page_headers(server)}.items())
    request = f"POST /points HTTP/1.1\r\n{head}\r\n".encode() + body
    at_once = len(request) - len(body) if trickled == "body" else 0
    try:
        with caplog.at_level("WARNING", logger="dora_sam2.click"), \
                socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(request[:at_once])
            sent, cut = at_once, False
            while sent < len(request) and not cut:
                try:
                    sock.sendall(request[sent:sent + 1])
                    sent += 1
                    cut = bool(select.select([sock], [], [], 0.05)[0]) and sock.recv(100) == b""
                except OSError:  # reset: closed with bytes unread
                    cut = True
            assert cut and sent < len(request)
        assert server.outbox.empty()
        assert [r.getMessage() for r in caplog.records] == [
            "closed a connection from 127.0.0.1: its request was not in after READ_TIMEOUT=1s"]
        assert post(server, "/points", CLICK) == 204  # and the server goes on
    finally:
        server.stop()


def test_the_frame_stream_outlives_the_request_deadline():
    """The deadline is for the request: the page's frame stream, once asked for, streams on past it."""
    view = LiveView()
    server = ClickServer(view, "127.0.0.1", free_port(), TOKEN, Limits(read_timeout=0.5)).start()
    try:
        with camera_for(view):
            stream = open_stream(server)
            deadline_passed = time.monotonic() + 4 * 0.5
            while time.monotonic() < deadline_passed:
                next_frame(stream)
            assert next_frame(stream)["width"] == 64
            stream.close()
    finally:
        server.stop()


def test_one_address_holds_its_share_and_a_request_whose_head_is_in_is_never_cut():
    """The slot policy, on socket pairs standing for clients of three addresses."""
    from dora_sam2.click_connections import Slots

    pairs = []

    def connect(slots, address: str, sends: bytes = b""):
        server_side, client = socket.socketpair()
        pairs.append((server_side, client))
        client.sendall(sends)
        gave_way, bound = slots.admit(server_side, address)
        return client, (gave_way and gave_way.socket), bound

    def closed(client) -> bool:
        client.settimeout(5)
        return client.recv(1) == b""

    stranger, operator, other = "192.0.2.1", "198.51.100.7", "203.0.113.5"
    head = b"GET /events?token=t HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        slots = Slots(total=10, per_client=2)  # MAX_CLIENT_CONNECTIONS: the address's own oldest gives way
        s1, _, _ = connect(slots, stranger)
        connect(slots, stranger, b"GET / HTTP/1.1\r\n")
        _, gave_way, bound = connect(slots, stranger)
        assert gave_way is pairs[0][0] and bound is None and closed(s1)
        assert connect(slots, operator, head)[1:] == (None, None)  # the operator's own share: nothing gives way
        connect(slots, operator, head)
        assert connect(slots, operator, head)[1:] == (None, "MAX_CLIENT_CONNECTIONS")  # both its heads are in

        slots = Slots(total=3, per_client=3)  # MAX_CONNECTIONS: the oldest without its head, of who holds most
        connect(slots, stranger, head)  # the oldest, but its head is in
        s2, _, _ = connect(slots, stranger, b"GET / HT")
        o1, _, _ = connect(slots, operator)  # older than what follows, and no head yet
        _, gave_way, _ = connect(slots, other)
        assert gave_way is pairs[-3][0] and closed(s2)  # the stranger held the most
        o1.sendall(head)  # now it has: the newer connection of the other address is what gives way
        other1, newest = pairs[-1][1], connect(slots, other, head)
        assert newest[1] is pairs[-2][0] and closed(other1) and not select.select([o1], [], [], 0)[0]
        assert connect(slots, other)[1:] == (None, "MAX_CONNECTIONS")  # every head is in: the new one is refused
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_clicks_queued_for_dora_are_bounded():
    from dora_sam2.settings import Limits

    server = ClickServer(LiveView(), "127.0.0.1", free_port(), TOKEN, Limits(max_clicks=2)).start()
    try:
        assert [post(server, "/points", CLICK) for _ in range(3)] == [204, 204, 503]
        assert server.outbox.qsize() == 2
    finally:
        server.stop()


def test_the_frame_stream_needs_the_token_and_the_pages_origin(server):
    assert raw(server, "GET", "/events", {}) == 403
    assert raw(server, "GET", "/events?token=guessed", {}) == 403
    assert raw(server, "GET", f"/events?token={TOKEN}", {"Origin": "http://evil.example"}) == 403
    assert raw(server, "GET", f"/events?token={TOKEN}", {}, host="attacker.example:80") == 403
    assert raw(server, "GET", f"/events?token={TOKEN}", {}) == 200


def test_token_setting():
    from dora_sam2.access import resolve_token

    assert len(resolve_token(None, "127.0.0.1")) >= 20 and resolve_token("", "::1") != resolve_token("", "::1")
    assert resolve_token("mine-0123456789", "0.0.0.0") == "mine-0123456789"
    assert resolve_token("off", "127.0.0.1") is None
    with pytest.raises(ValueError, match="anyone on the network could click"):
        resolve_token("off", "0.0.0.0")


def test_a_network_server_takes_ip_addresses_but_not_other_names():
    from dora_sam2.access import Access

    access = Access("0.0.0.0", 8000, "t")
    assert access.host_refusal("192.168.1.20:8000") is None and access.host_refusal("localhost:8000") is None
    assert access.host_refusal("evil.example:8000") is not None and access.host_refusal("192.168.1.20:9") is not None
    loopback = Access("127.0.0.1", 8000, "t")
    assert loopback.host_refusal("192.168.1.20:8000") is not None


def test_click_message_rejects_labels_other_than_0_and_1():
    with pytest.raises(ValueError):
        click_message({"points": [[1, 2, 2]]})


# ---------------------------------------------------------------------------- the real page


@pytest.mark.dataflow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
@pytest.mark.parametrize("mode", ["segment", "track"])
def test_clicks_in_chromium_reach_sam2_and_its_mask_is_drawn(tmp_path, model_dir, mode):
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    port, out = free_port(), tmp_path / "out"
    dataflow = tmp_path / "interactive.yml"
    dataflow.write_text(flow(
        camera(tick_ms=200),
        node("click", "dora-sam2-click", {"image": "camera/image", "masks": "sam2/masks"}, ["points", "reset"],
             {"PORT": port, "TOKEN": TOKEN}),
        # LOST_FRAMES: random weights' masks are noise, so SAM 2's random losses would end tracks (this is plumbing)
        sam2(model_dir, {"image": "camera/image", "points": "click/points", "reset": "click/reset"}, ["mask", "masks"],
             {"MODE": mode, "LOST_FRAMES": "100000"}, stats=None),
        collector({"points": "click/points", "reset": "click/reset", "mask": "sam2/mask"}, out=out)))
    evil = _serve_elsewhere(tmp_path, port)
    try:
        with dataflow_in_background(dataflow):
            with playwright.sync_playwright() as p:
                browser = launch_chromium(p)
                # Another site open in the same browser tries to click and to wipe the tracks, as any web page
                # can: fetch() in no-cors mode with a text/plain body, no preflight.
                other = browser.new_page()
                open_when_served(other, f"http://127.0.0.1:{port}/")  # the click node is up
                other.goto(evil.url)
                other.wait_for_function("document.title === 'sent'", timeout=30_000)
                page = browser.new_page(viewport={"width": 900, "height": 700})
                open_when_served(page, f"http://127.0.0.1:{port}/?token={TOKEN}")
                page.wait_for_function("+document.body.dataset.frames >= 2", timeout=300_000)
                box = page.locator("#view").bounding_box()
                scale = box["width"] / 640
                page.mouse.click(box["x"] + 200 * scale, box["y"] + 150 * scale)
                clicked = time.monotonic()
                page.wait_for_function("+document.body.dataset.masks >= 1", timeout=300_000)
                delay = time.monotonic() - clicked
                page.mouse.click(box["x"] + 400 * scale, box["y"] + 300 * scale, button="right")
                wait_for(lambda: any(e["id"] == "points" and e["metadata"]["labels"] == [1, 0]
                                      for e in read_events(out)))
                # the answers this test reads: waited for, however slow the machine (track mode answers
                # every frame from the click on; segment mode each of the two clicks)
                wait_for(lambda: len([e for e in read_events(out) if e["id"] == "mask" and
                                       e["metadata"]["num_masks"]]) >= 2, seconds=120)
                page.screenshot(path=str(tmp_path / "click.png"))
                browser.close()
            print(f"{mode} mode, click to mask drawn: {delay * 1e3:.0f} ms")
    finally:
        evil.shutdown()
    events = read_events(out)
    points = [e for e in events if e["id"] == "points"]
    assert points, (tmp_path / "dora.log").read_text()[-3000:]
    # nothing from the other site: every points message is one of the page's two clicks, no reset
    assert [e["metadata"]["labels"] for e in points] == [[1], [1, 0]] and not any(e["id"] == "reset" for e in events)
    logged = (tmp_path / "dora.log").read_text()
    assert f"?token={TOKEN}" in logged and "refused POST /points" in logged and "refused POST /reset" in logged
    last = points[-1]
    assert last["metadata"]["labels"] == [1, 0]
    coords = np.load(out / f"{last['index']:04d}.npy").reshape(-1, 2)
    np.testing.assert_allclose(coords, [[200, 150], [400, 300]], atol=2)
    assert "datetime" in last["metadata"]["timestamp"]  # the displayed frame's, for SAM2 to match
    assert any(e["id"] == "mask" for e in events)
    if mode == "track":  # answered on every frame from the click on, as one object refined, not two
        tracked = [e for e in events if e["id"] == "mask" and e["metadata"]["num_masks"]]
        assert len(tracked) >= 2 and all(e["metadata"]["track_ids"] == [1] for e in tracked)
    if os.environ.get("SAVE_SCREENSHOT") and mode == "segment":
        shutil.copy(tmp_path / "click.png", ROOT / "docs" / "click.png")


def network_address() -> str:
    """This machine's address on its network (no packet is sent: a UDP socket only picks its route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"  # no network at all: the server still listens on every interface


@pytest.mark.dataflow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_on_the_network_with_a_token_the_pages_keys_and_undo_send_what_the_operator_sees(tmp_path):
    """HOST=0.0.0.0: the page is opened at this machine's network address with the token; without it the
    same address sends nothing. z, Backspace and the Undo button take back the current object's last click,
    n starts object 1, c sends reset: each change reaches dora as the page's current object."""
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    port, out, address = free_port(), tmp_path / "out", network_address()
    dataflow = tmp_path / "network.yml"
    dataflow.write_text(flow(
        camera(tick_ms=200),
        node("click", "dora-sam2-click", {"image": "camera/image"}, ["points", "reset"],
             {"HOST": "0.0.0.0", "PORT": port, "TOKEN": TOKEN}),
        collector({"points": "click/points", "reset": "click/reset"}, out=out)))
    sent = lambda: [(e["metadata"].get("object_id"), e["metadata"].get("labels")) if e["id"] == "points"  # noqa: E731
                    else e["id"] for e in read_events(out)]
    with dataflow_in_background(dataflow), playwright.sync_playwright() as p:
        browser = launch_chromium(p)
        stranger = browser.new_page()  # the right address, but not the token
        open_when_served(stranger, f"http://{address}:{port}/")
        assert stranger.evaluate("fetch('/points', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                                 " body: JSON.stringify({object: 0, points: [[5, 5, 1]]})}).then(r => r.status)") == 403
        page = browser.new_page(viewport={"width": 900, "height": 700})
        open_when_served(page, f"http://{address}:{port}/?token={TOKEN}")
        page.wait_for_function("+document.body.dataset.frames >= 1", timeout=300_000)
        box = page.locator("#view").bounding_box()
        at = lambda x, y: (box["x"] + x * box["width"] / 640, box["y"] + y * box["height"] / 480)  # noqa: E731
        actions = [lambda: page.mouse.click(*at(200, 150)),
                   lambda: page.mouse.click(*at(400, 300), button="right"),
                   lambda: page.keyboard.press("z"),
                   lambda: (page.keyboard.press("n"), page.mouse.click(*at(100, 100))),
                   lambda: page.mouse.click(*at(300, 200), button="right"),
                   lambda: page.locator("#undo").click(),
                   lambda: page.mouse.click(*at(50, 400)),
                   lambda: page.keyboard.press("Backspace"),
                   lambda: page.keyboard.press("c")]
        for count, action in enumerate(actions, 1):  # one at a time: two requests in flight may swap
            action()
            wait_for(lambda count=count: len(sent()) >= count, seconds=300, what=f"message {count} from the page")
        status = page.locator("#status").text_content()
        browser.close()
    assert sent() == [(0, [1]), (0, [1, 0]), (0, [1]), (1, [1]), (1, [1, 0]), (1, [1]), (1, [1, 1]), (1, [1]),
                      "reset"]
    points = [e for e in read_events(out) if e["id"] == "points"]
    np.testing.assert_allclose(np.load(out / f"{points[-1]['index']:04d}.npy").reshape(-1, 2), [[100, 100]], atol=2)
    assert status == "object 0: 0 point(s) · 1 object(s)"  # after c: one empty object, as the page began
    logged = (tmp_path / "dora.log").read_text()
    assert "refused POST /points" in logged and "no token" in logged


EVIL_PAGE = """<!doctype html><title>loading</title><script>
const target = "http://127.0.0.1:PORT";
const click = JSON.stringify({object: 0, points: [[5, 5, 1]]});
Promise.allSettled([
  fetch(target + "/points", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: click}),
  fetch(target + "/reset", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "{}"}),
]).then(() => { document.title = "sent"; });
</script>"""


def _serve_elsewhere(tmp_path: Path, port: int):
    """A page on another local origin (localhost, another port) that tries to drive the click server."""
    import http.server
    import threading

    site = tmp_path / "elsewhere"
    site.mkdir()
    (site / "index.html").write_text(EVIL_PAGE.replace("PORT", str(port)))
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(site), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    httpd.url = f"http://localhost:{httpd.server_address[1]}/index.html"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_no_page_open_means_no_drawing(monkeypatch):
    view = LiveView()
    drawn = []
    monkeypatch.setattr("dora_sam2.click_view.overlay.draw", lambda *a: drawn.append(a))
    view.show_masks(np.ones((1, 48, 64), bool), ["object 0"], [0.8])
    view.show_frame(Frame("image", np.zeros((48, 64, 3), np.uint8), T0, "bgr8"))
    assert drawn == []
