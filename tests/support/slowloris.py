"""A slowloris: a client that holds connections to a server open without ever finishing a request.

It opens each connection with a request line, then sends one byte of an endless header every few
seconds, so a server that only times out silent clients never lets go. Each round it opens again every
connection the server closed (as the classic tool does), or, `eager`, the moment it sees one closed: a
flood of new connections on top. The tests hold the click server to it, and benchmarks/slowloris.py
counts what the operator gets while it runs.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time

REQUEST_LINE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
HEADER = b"X-a: b\r\n"  # sent a byte at a time, over and over: never the blank line that ends a head


class Slowloris:
    """`connections` connections to 127.0.0.1:`port`, one byte each every `every` seconds. A context
    manager; its thread stops on leaving it, or by itself after `seconds` (a hang guard)."""

    def __init__(self, port: int, connections: int = 200, every: float = 2.0, eager: bool = False,
                 seconds: float = 600):
        self.port = port
        self.connections = connections
        self.every = every
        self.eager = eager
        self.seconds = seconds
        self.holding = 0  # connections open now, as far as this client knows
        self.opened = 0  # connections opened in all
        self.answered = 0  # times the server sent anything back: a request it finished (never, if all is well)
        self.rounds = 0  # rounds of bytes sent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="slowloris")

    def __enter__(self) -> "Slowloris":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        slots: list[socket.socket | None] = [None] * self.connections
        connecting: dict[socket.socket, float] = {}  # connects under way (never waited on), since when
        sent = [0] * self.connections
        end = time.monotonic() + self.seconds
        next_byte = time.monotonic() + self.every
        try:
            while not self._stop.is_set() and time.monotonic() < end:
                now = time.monotonic()
                for i, sock in enumerate(slots):
                    if sock is None:
                        slots[i], sent[i] = self._connect(), 0
                        if slots[i] is not None:
                            connecting[slots[i]] = now
                    elif sock in connecting and now - connecting[sock] > 3:  # the listen queue is full: again
                        self._close(slots, connecting, i)
                live = [s for s in slots if s is not None and s not in connecting]
                self.holding = len(live)
                round_due = time.monotonic() >= next_byte
                readable, writable = select.select(live if self.eager or round_due else [], list(connecting), [],
                                                   0 if round_due else 0.05)[:2]
                for sock in writable:  # connected (or refused): the request line, and the head never ends
                    del connecting[sock]
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not self._send(sock, REQUEST_LINE):
                        self._close(slots, connecting, slots.index(sock))
                    else:
                        self.opened += 1
                for sock in readable:  # the server closed it (or, wrongly, answered): open another
                    self._close(slots, connecting, slots.index(sock), answered=self._read(sock))
                if round_due:
                    next_byte = time.monotonic() + self.every
                    self.rounds += 1
                    for i, sock in enumerate(slots):
                        if sock is not None and sock not in connecting:
                            if not self._send(sock, HEADER[sent[i] % len(HEADER):][:1]):
                                self._close(slots, connecting, i)
                            sent[i] += 1
        finally:
            for sock in slots:
                if sock is not None:
                    sock.close()
            self.holding = 0

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex(("127.0.0.1", self.port)) in (0, errno.EINPROGRESS):
            return sock
        sock.close()
        return None

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> bool:
        try:
            return sock.send(data) == len(data)
        except OSError:
            return False

    @staticmethod
    def _read(sock: socket.socket) -> bool:
        try:
            return bool(sock.recv(4096))
        except OSError:
            return False

    def _close(self, slots: list, connecting: dict, i: int, answered: bool = False) -> None:
        connecting.pop(slots[i], None)
        slots[i].close()
        slots[i] = None
        self.answered += answered
