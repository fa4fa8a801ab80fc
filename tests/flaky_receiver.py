"""A fast asyncio receiver that flaps between 200, 500 and no answer, and counts what it
accepted by webhook-id, as an idempotent partner would."""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections import Counter


class FlakyReceiver:
    """Answers each event's first ``flaky_attempts`` requests with a 500, a hang or a 200
    (chosen by a hash of the event id and attempt), and 200 after that, unless ``down``."""

    def __init__(self, flaky_attempts: int = 2, hang: float = 2.0) -> None:
        self.flaky_attempts = flaky_attempts
        self.hang = hang
        self.down = False  # answer 500 to everything
        self.seen: Counter[str] = Counter()  # requests per webhook-id
        self.accepted: Counter[str] = Counter()  # 200s per webhook-id
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=2048))
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get(b"content-length", b"0") or 0)
                if length:
                    await reader.readexactly(length)
                status = self._answer(headers.get(b"webhook-id", b"").decode())
                if status is None:
                    await asyncio.sleep(self.hang)
                    writer.close()
                    return
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nOK" % status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            writer.close()

    def _answer(self, event_id: str) -> int | None:
        self.requests += 1
        self.seen[event_id] += 1
        attempt = self.seen[event_id]
        status: int | None = 200
        if self.down:
            status = 500
        elif attempt <= self.flaky_attempts:
            status = (200, 500, None)[zlib.crc32(f"{event_id}/{attempt}".encode()) % 3]
        if status == 200:
            self.accepted[event_id] += 1
        return status

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
