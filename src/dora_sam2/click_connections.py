"""The click server's connections, bounded: how many are open (MAX_CONNECTIONS, MAX_CLIENT_CONNECTIONS per
address) and how long a request may take to come in (READ_TIMEOUT, one deadline for head and body). A
client that holds connections open without finishing its request (slowloris) gives way to the next one,
so it cannot keep the operator out (`Slots`)."""

from __future__ import annotations

import io
import selectors
import socket
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .throttle import Throttle


class Connection:
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


class Slots:
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
        self._open: dict[socket.socket, Connection] = {}
        self._lock = threading.Lock()

    def admit(self, sock: socket.socket, address: str) -> tuple[Connection | None, str | None]:
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
            self._open[sock] = Connection(sock, address)
        if victim:
            try:
                victim.socket.shutdown(socket.SHUT_RDWR)  # its thread's read ends at once; that thread closes it
            except OSError:
                pass
        return victim, None

    def get(self, sock: socket.socket) -> Connection | None:
        """The connection, while it holds its slot (None once it gave way)."""
        with self._lock:
            return self._open.get(sock)

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


class BoundedHTTPServer(ThreadingHTTPServer):
    """The standard library's threading server, with its connections held to `Slots` (idle keep-alive
    connections, slow clients and event streams would otherwise hold a thread each, without end)."""

    daemon_threads = True
    # Connections the system takes in before they are accepted: the standard 5 drops the operator's SYN for
    # seconds at a time when a flood keeps that queue full; the system caps this at its own somaxconn.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address, handler, refusals: Throttle, slots: Slots, read_timeout: float):
        self.refusals = refusals
        self.slots = slots
        self.read_timeout = read_timeout
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


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """A handler of `BoundedHTTPServer`: its request is read against the server's one deadline, and a
    write waits as long on a client that stops reading."""

    server: BoundedHTTPServer

    def setup(self):
        self.timeout = self.server.read_timeout  # writes to a page that stops reading; reads keep one deadline instead
        super().setup()
        self.rfile.close()  # the standard file reads without a deadline for the whole request
        connection = self.server.slots.get(self.request) or Connection(self.request, self.client_address[0])
        self.rfile = io.BufferedReader(RequestReader(connection, self.server.read_timeout, self.server.refusals))


class RequestReader(io.RawIOBase):
    """The client's side of one connection, read against one deadline for the whole request, head and
    body (READ_TIMEOUT from the connection's start), not per read: a client that sends a byte every few
    seconds is cut off as surely as one that sends nothing."""

    def __init__(self, connection: Connection, read_timeout: float, refusals: Throttle):
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
