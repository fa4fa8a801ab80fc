"""What every HTTP driver must do alike, beyond the address rules (``test_ssrf.py``)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from postback.core.addresses import AddressPolicy
from postback.delivery.http import MAX_STORED_BODY, Sender


class StallingServer:
    """Announces a 100 MB body, sends 64 KB of it and then nothing: a partner whose answer
    never ends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        held: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                break
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n"
                         + b"y" * 65536)
            held.append(conn)  # open, silent
        for conn in held:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_a_body_past_what_is_stored_is_not_read_to_the_end(driver: type[Sender]) -> None:
    server = StallingServer()
    try:
        async def go() -> Any:
            async with driver(1.0, 5.0, 4, "test", AddressPolicy.parse("127.0.0.0/8")) as s:
                return await s.send("GET", f"http://127.0.0.1:{server.port}/pb", {}, None)

        started = time.monotonic()
        got = asyncio.run(go())
        assert got.status == 200 and got.error is None, got
        assert got.body == b"y" * MAX_STORED_BODY
        assert time.monotonic() - started < 2.0  # not the 5 s time limit
    finally:
        server.close()
