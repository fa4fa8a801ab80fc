"""The modern async-Python baseline: an arq worker (Redis-backed asyncio jobs) sending each
postback with aiohttp. Used by ``bench/drain.py --arq N``; one worker process per core,
``max_jobs`` as many requests at once as the bare loops have."""

from __future__ import annotations

import os
from typing import Any

import aiohttp
from arq.connections import RedisSettings


async def startup(ctx: dict[str, Any]) -> None:
    ctx["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["session"].close()


async def send(ctx: dict[str, Any], url: str) -> int:
    async with ctx["session"].get(url) as response:
        await response.read()
        return response.status


class WorkerSettings:
    functions = [send]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(os.environ.get("BENCH_BROKER",
                                                           "redis://127.0.0.1:6379/9"))
    queue_name = os.environ.get("BENCH_QUEUE", "arq:queue")
    max_jobs = 512
    keep_result = 0
