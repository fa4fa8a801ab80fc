"""A hostile partner: a raw-socket TCP server on 127.0.0.1 that answers every connection
with scripted bytes, whatever HTTP says, and records the raw bytes each request arrived as.

A ``Script`` is what one connection gets: ``reply`` (bytes sent as soon as the request has
been read) and then ``then``: ``"close"`` (an orderly close), ``"reset"`` (close with
SO_LINGER 0, so the peer gets a TCP RST), ``"drip"`` (one ``drip`` chunk every
``drip_interval`` seconds until the peer goes away) or ``"stall"`` (keep the connection
open, silent, until the server closes).

The named ``Scenario`` constants below (all of them in ``SCENARIOS``) are the answers a
partner's server may give that the senders must survive; each says what ``Sender.send``
returns for it on every driver (``status``, and the error class ``classify`` gives), so the
driver suite and the engine suite check the same table::

    with HostileReceiver(NUL_BODY.script) as server:
        response = await sender.send("GET", server.url + "/pb", {}, None)
    assert (response.status, classify(response.status, response.error)[1]) == (
        NUL_BODY.status, NUL_BODY.error)
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from postback.core.retry import ErrorClass

Then = Literal["close", "reset", "drip", "stall"]


@dataclass(frozen=True)
class Script:
    """What the receiver does with one connection, after reading the request."""

    reply: bytes = b""
    then: Then = "close"
    drip: bytes = b"x"
    drip_interval: float = 0.1


def reply(status_line: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
          length: bool = True) -> bytes:
    """A raw HTTP/1.1 answer; ``length`` adds a Content-Length for ``body``."""
    head = [status_line] + [name + b": " + value for name, value in headers]
    if length:
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Scenario:
    """A hostile answer and what every sender returns for it: ``status`` (None when no
    usable HTTP answer arrived) and ``error``, the class ``core.retry.classify`` gives."""

    name: str
    script: Script
    status: int | None
    error: ErrorClass | None
    body: bytes | None = None  # the body the sender returns, when that is the point


def _ok(body: bytes) -> bytes:
    return reply(b"HTTP/1.1 200 OK", [(b"Content-Type", b"application/octet-stream")], body)


NUL_BODY = Scenario("nul-body", Script(_ok(b"ok\x00\x00ok\x00")), 200, None, b"ok\x00\x00ok\x00")
INVALID_UTF8_BODY = Scenario("invalid-utf8-body", Script(_ok(b"caf\xe9 \xb2\xff\xfe \xc3(")),
                             200, None, b"caf\xe9 \xb2\xff\xfe \xc3(")
BINARY_BODY = Scenario("binary-body", Script(_ok(bytes(range(256)))), 200, None,
                       bytes(range(256)))
LONG_HEADERS = Scenario("300-long-headers", Script(reply(
    b"HTTP/1.1 200 OK", [(b"X-Long-%d" % i, b"v" * 200) for i in range(300)], b"OK")),
    200, None, b"OK")
NON_UTF8_HEADER = Scenario("non-utf8-header", Script(reply(
    b"HTTP/1.1 200 OK", [(b"X-Odd", b"\xb2\xff"), (b"X-Fine", b"caf\xc3\xa9")], b"OK")),
    200, None, b"OK")
JUNK_RETRY_AFTER_503 = Scenario("503-junk-retry-after", Script(reply(
    b"HTTP/1.1 503 Service Unavailable", [(b"Retry-After", b"\xb2")], b"busy")),
    503, ErrorClass.HTTP_5XX)
JUNK_RETRY_AFTER_429 = Scenario("429-junk-retry-after", Script(reply(
    b"HTTP/1.1 429 Too Many Requests", [(b"Retry-After", b"\xb2\xff soon")], b"slow down")),
    429, ErrorClass.HTTP_4XX)
RESET_MID_BODY = Scenario("reset-mid-body", Script(
    reply(b"HTTP/1.1 200 OK", [(b"Content-Length", b"100000")], b"partial", length=False),
    then="reset"), None, ErrorClass.CONNECTION)
TRUNCATED_CHUNKED = Scenario("truncated-chunked", Script(reply(
    b"HTTP/1.1 200 OK", [(b"Transfer-Encoding", b"chunked")], b"5\r\nhello\r\n10\r\nonly",
    length=False)), None, ErrorClass.CONNECTION)
ENDLESS_SLOW_BODY = Scenario("endless-slow-body", Script(
    reply(b"HTTP/1.1 200 OK", [(b"Content-Length", b"100000000")], b"", length=False),
    then="drip", drip=b"x", drip_interval=0.1), None, ErrorClass.TIMEOUT)
HTTP_09 = Scenario("http-0.9", Script(b"<html>no status line, no headers</html>\n"),
                   None, ErrorClass.CONNECTION)
GARBAGE_STATUS_LINE = Scenario("garbage-status-line", Script(
    b"HTTP/1.1 OK?? \x16\x03\xff\r\nContent-Length: 2\r\n\r\nOK"), None, ErrorClass.CONNECTION)
SILENT = Scenario("silent", Script(then="stall"), None, ErrorClass.TIMEOUT)

SCENARIOS: tuple[Scenario, ...] = (
    NUL_BODY, INVALID_UTF8_BODY, BINARY_BODY, LONG_HEADERS, NON_UTF8_HEADER,
    JUNK_RETRY_AFTER_503, JUNK_RETRY_AFTER_429, RESET_MID_BODY, TRUNCATED_CHUNKED,
    ENDLESS_SLOW_BODY, HTTP_09, GARBAGE_STATUS_LINE, SILENT,
)


class HostileReceiver:
    """Answers each connection with ``script`` (a ``Script``, or a function of the raw
    request bytes returning one; ``script`` may be replaced between requests). ``received``
    holds each request's raw bytes (head and Content-Length body), in arrival order."""

    def __init__(self, script: Script | Callable[[bytes], Script] = Script()) -> None:
        self.script = script
        self.received: list[bytes] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self) -> HostileReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                break
            with self._cond:
                self._open.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = _read_request(conn, self._stop)
            with self._cond:
                self.received.append(request)
                self._cond.notify_all()
            script = self.script if isinstance(self.script, Script) else self.script(request)
            if script.reply:
                conn.sendall(script.reply)
            if script.then == "drip":
                while not self._stop.wait(script.drip_interval):
                    conn.sendall(script.drip)
            elif script.then == "stall":
                self._stop.wait()
            elif script.then == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.shutdown(socket.SHUT_WR)
                _drain(conn)
        except OSError:
            pass  # the peer went away: what a hostile server shrugs off
        finally:
            with self._cond:
                self._open.discard(conn)
            conn.close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"received {len(self.received)} requests, expected {count}")
                self._cond.wait(left)
            return list(self.received)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        with self._cond:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)


def _read_request(conn: socket.socket, stop: threading.Event) -> bytes:
    """The request head and its Content-Length body (whatever arrived within 5 s)."""
    conn.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + 5.0
    expected: int | None = None
    while not stop.is_set() and time.monotonic() < deadline:
        if expected is None and b"\r\n\r\n" in data:
            head = data.split(b"\r\n\r\n", 1)[0]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and value.strip().isdigit():
                    length = int(value.strip())
            expected = len(head) + 4 + length
        if expected is not None and len(data) >= expected:
            break
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    conn.settimeout(None)
    return data


def _drain(conn: socket.socket) -> None:
    """Read until the peer closes (bounded), so closing does not reset the connection."""
    conn.settimeout(1.0)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def free_port() -> int:
    """A loopback port with nothing listening on it (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
