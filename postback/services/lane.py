"""The test tool's own lane: a partner's **Test** sends one request now, from the API
process, never through the delivery engine, so it cannot take an engine's capacity, and at
most ``SIZE`` at once per API process, so a burst of tests (each may take the full timeout)
cannot take the API's threads either. Each test runs on the calling thread (a request
thread from FastAPI's pool, never the event loop) with an event loop of its own."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from postback.config import Settings
from postback.core.render import Value
from postback.delivery.drivers import sender_for
from postback.services import test_tool
from postback.services.notification_settings import Compiled

SIZE = 4


class Busy(Exception):
    """Every place in the lane is taken."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(f"{size} tests are being sent already; wait a few seconds for one "
                         "to finish and test again")


class TestLane:
    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._places = threading.BoundedSemaphore(size)

    def send(self, settings: Settings, setting: dict[str, Any], compiled: Compiled,
             values: dict[str, Value], event_id: str) -> dict[str, Any]:
        """Send one test and explain the result (``test_tool.send_test``); raises
        :class:`Busy` at once when ``size`` tests are under way."""
        if not self._places.acquire(blocking=False):
            raise Busy(self.size)
        try:
            return asyncio.run(self._send(settings, setting, compiled, values, event_id))
        finally:
            self._places.release()

    @staticmethod
    async def _send(settings: Settings, setting: dict[str, Any], compiled: Compiled,
                    values: dict[str, Value], event_id: str) -> dict[str, Any]:
        async with sender_for(settings, 1) as sender:
            return await test_tool.send_test(sender, setting, compiled, values, event_id)
