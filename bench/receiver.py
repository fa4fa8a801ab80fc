"""A fast loopback HTTP receiver for benchmarks: a raw asyncio protocol.

Answers every request with 200 OK. For requests whose query has ``t=<unix seconds>`` it
records ``now - t`` as that request's latency. ``GET /__stats`` returns the count and the
latencies so far as JSON; ``GET /__reset`` clears them. With a second port it also runs a
black hole there: it accepts connections and never reads or answers (a dead partner).

    python bench/receiver.py PORT [HOLE_PORT]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlsplit

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nOK"


class State:
    count = 0
    first = 0.0
    last = 0.0
    latencies: list[float] = []


class Receiver(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            target = head.split(b" ", 2)[1].decode()
            self.handle(target)

    def handle(self, target: str) -> None:
        now = time.time()
        if target.startswith("/__stats"):
            body = json.dumps({"count": State.count, "first": State.first, "last": State.last,
                               "latencies": State.latencies}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))
            return
        if target.startswith("/__reset"):
            State.count, State.first, State.last, State.latencies = 0, 0.0, 0.0, []
            self.transport.write(OK)
            return
        State.count += 1
        State.first = State.first or now
        State.last = now
        sent = parse_qs(urlsplit(target).query).get("t")
        if sent:
            State.latencies.append(now - float(sent[0]))
        self.transport.write(OK)


class BlackHole(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]


async def main(port: int, hole: int | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", port, backlog=4096)
    if hole:
        await loop.create_server(BlackHole, "127.0.0.1", hole, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
