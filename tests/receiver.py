"""A real HTTP receiver on loopback that records every request it gets.

Tests script its answers per request (status, headers, body, delay) and wait for arrivals.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"OK"
    delay: float = 0.0


class Receiver:
    """``answer`` decides each reply from the request (default: 200 OK); with ``tls`` it
    serves https."""

    def __init__(self, answer: Callable[[Received], Answer] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.active = 0
        self.max_active = 0
        self.answer = answer or (lambda _req: Answer())
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Received(self.command, self.path, dict(self.headers.items()), body,
                               time.monotonic())
                with receiver._cond:
                    receiver.requests.append(req)
                    receiver.active += 1
                    receiver.max_active = max(receiver.max_active, receiver.active)
                    receiver._cond.notify_all()
                reply = receiver.answer(req)
                if reply.delay:
                    time.sleep(reply.delay)
                with receiver._cond:
                    receiver.active -= 1
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    no_body = reply.status in (204, 304)
                    if not no_body:
                        self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if not no_body:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls is not None:  # https, on the same loopback port
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://localhost:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"receiver got {len(self.requests)} requests, expected {count}")
                self._cond.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
