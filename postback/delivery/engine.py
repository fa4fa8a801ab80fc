"""The delivery engine: one asyncio loop per worker process.

    claim (batch) ─▶ per-endpoint queues ─▶ Sender (pycurl | aiohttp) ─▶ results ─▶ record

* Claims are batched and leased (``queue.claim``); a worker holds at most ``max_in_flight``
  deliveries, and at most ``2 * endpoint_concurrency`` for any one endpoint (setting), of
  which ``endpoint_concurrency`` are on the wire. Each claim takes only what every endpoint
  has room for (anything over, should it happen, is handed back at once), so a slow or dead
  partner holds a bounded share of the worker and never delays the others.
* Results are written in batches (``queue.record``): one transaction per batch of attempts.
* Wake-ups: ``wake()`` (thread-safe) when the API commits new deliveries in this process;
  LISTEN/NOTIFY on PostgreSQL for commits anywhere; otherwise a poll every
  ``poll_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine as DbEngine

from postback.config import Settings
from postback.core.diagnosis import diagnose
from postback.core.retry import ErrorClass, Outcome, classify, parse_retry_after
from postback.db import wakeup
from postback.delivery import queue
from postback.delivery.http import Response, Sender, outgoing_headers
from postback.services.notification_settings import MASK

log = logging.getLogger("postback.engine")
FLUSH_SIZE = 256
FLUSH_INTERVAL = 0.02


@dataclass
class _Endpoint:
    active: int = 0
    waiting: deque[queue.Job] = field(default_factory=deque)

    @property
    def held(self) -> int:
        return self.active + len(self.waiting)


def worker_id() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}"


class Engine:
    def __init__(self, settings: Settings, db: DbEngine, name: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self.name = name or worker_id()
        self._endpoints: dict[int | None, _Endpoint] = {}
        self._held = 0
        self._results: list[queue.Result] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._flush_now: asyncio.Event | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._disable = queue.DisablePolicy(settings.disable_after_hours,
                                            settings.disable_after_failures)

    # -- control ----------------------------------------------------------------------

    def wake(self) -> None:
        """Tell the engine new deliveries are due (safe from any thread)."""
        if self._loop is not None and self._wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the engine has already stopped
                self._loop.call_soon_threadsafe(self._wakeup.set)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    # -- main loop --------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._flush_now = asyncio.Event()
        s = self.settings
        async with Sender.from_settings(s, s.max_in_flight) as sender:
            self._sender = sender
            flusher = asyncio.create_task(self._flush_loop())
            wakeups = wakeup.listener(s.database_url, self._wakeup.set)
            listener = asyncio.create_task(wakeups)
            try:
                await self._claim_loop()
            finally:
                if listener is not None:
                    listener.cancel()
                await self._drain()
                flusher.cancel()
                await self._flush()

    async def _claim_loop(self) -> None:
        assert self._wakeup is not None
        s = self.settings
        while not self._stopping:
            # cleared before claiming: a wake-up that arrives during the claim is kept
            self._wakeup.clear()
            free = s.max_in_flight - self._held
            got = 0
            if free >= min(s.claim_batch, s.max_in_flight) // 4 or self._held == 0:
                limit = min(free, s.claim_batch)
                try:
                    claimed = await asyncio.to_thread(
                        queue.claim, self.db, self.name, limit, datetime.now(UTC),
                        s.lease_seconds, self._room(), 2 * s.endpoint_concurrency, s.sealer)
                except Exception:
                    log.exception("claim failed; retrying in 1 s")
                    await asyncio.sleep(1)
                    continue
                got = len(claimed.jobs)
                if claimed.wake_in is not None:  # rate-limited work comes due soon
                    self._loop_call_later(max(0.05, claimed.wake_in))
                await self._dispatch(claimed.jobs)
                if got == limit:
                    continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), s.poll_interval)

    def _loop_call_later(self, delay: float) -> None:
        assert self._loop is not None and self._wakeup is not None
        self._loop.call_later(delay, self._wakeup.set)

    def _room(self) -> dict[int, int]:
        """Free places per endpoint this worker holds work for."""
        cap = 2 * self.settings.endpoint_concurrency
        return {k: cap - ep.held for k, ep in self._endpoints.items() if k is not None}

    async def _dispatch(self, jobs: list[queue.Job]) -> None:
        cap = self.settings.endpoint_concurrency
        surplus: list[int] = []
        for job in jobs:
            ep = self._endpoints.setdefault(job.setting_id, _Endpoint())
            if ep.held >= 2 * cap:
                surplus.append(job.id)
                continue
            self._held += 1
            if ep.active < cap:
                self._start(ep, job)
            else:
                ep.waiting.append(job)
        if surplus:
            try:
                await asyncio.to_thread(queue.release, self.db, self.name, surplus,
                                        datetime.now(UTC))
            except Exception:  # they come back when their lease runs out
                log.exception("release failed")

    def _start(self, ep: _Endpoint, job: queue.Job) -> None:
        ep.active += 1
        task = asyncio.create_task(self._send(ep, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, ep: _Endpoint, job: queue.Job) -> None:
        headers = outgoing_headers(self.settings.user_agent, job.event_id, job.headers,
                                   job.signing_keys, job.signed_content)
        started = datetime.now(UTC)
        try:
            response = await self._sender.send(job.method, job.url, headers, job.body)
            self._results.append(self._result(job, started, headers, response))
        except Exception:  # a bug, not a partner's failure: the lease brings it back
            log.exception("delivery %s: unexpected error; it is retried when its lease ends",
                          job.id)
        finally:
            low = self.settings.endpoint_concurrency  # half of what an endpoint may hold
            ep.active -= 1
            self._held -= 1
            if ep.waiting and not self._stopping:
                self._start(ep, ep.waiting.popleft())
            if ep.held == 0:
                self._endpoints.pop(job.setting_id, None)
            if len(self._results) >= FLUSH_SIZE and self._flush_now is not None:
                self._flush_now.set()
            # claim again when that brings a worthwhile batch: this endpoint has drained to
            # half of what it may hold, or the worker as a whole to half its capacity
            # (waking on every completion would claim one delivery at a time, and spin on
            # empty claims while a single busy endpoint is left out of them)
            if self._wakeup is not None and (
                    ep.held == low - 1 or self._held == self.settings.max_in_flight // 2):
                self._wakeup.set()

    def _result(self, job: queue.Job, started: datetime, headers: dict[str, str],
                response: Response) -> queue.Result:
        outcome, error = classify(response.status, response.error, response.text,
                                  job.success_response, job.error_response)
        message = response.message
        if error is ErrorClass.UNEXPECTED_RESPONSE:
            message = diagnose(outcome, error, response.status, job.success_response,
                               job.error_response)
        next_at = None
        if outcome is Outcome.RETRY:
            retry_after = parse_retry_after((response.headers or {}).get("Retry-After"),
                                            started)
            delay = self.settings.retry.next_delay(job.failures + 1, response.status, error,
                                                   retry_after, random.random())
            if delay is None:
                outcome = Outcome.PERMANENT
                message = f"retries exhausted after {job.attempt} attempts" + (
                    f"; last: {message}" if message else "")
            else:
                next_at = datetime.now(UTC) + timedelta(seconds=delay)
        return queue.Result(
            job=job, started_at=started,
            request_headers={k: (MASK if k in job.secret_headers else v)
                             for k, v in headers.items()},
            status_code=response.status, response_headers=response.headers,
            response_body=response.body, latency_ms=response.latency_ms,
            error_class=error.value if error else None, error_message=message,
            outcome=outcome.value, next_attempt_at=next_at,
        )

    # -- recording --------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        assert self._flush_now is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), FLUSH_INTERVAL)
            self._flush_now.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._results:
            batch, self._results = self._results, []
            try:
                await asyncio.to_thread(queue.record, self.db, self.name, batch,
                                        datetime.now(UTC), self._disable)
                return
            except Exception:
                log.exception("recording %d attempts failed; retrying in 1 s", len(batch))
                self._results = batch + self._results
                await asyncio.sleep(1)

    async def _drain(self) -> None:
        """On stop: hand back what waits, let what is on the wire finish."""
        waiting = [job.id for ep in self._endpoints.values() for job in ep.waiting]
        for ep in self._endpoints.values():
            self._held -= len(ep.waiting)
            ep.waiting.clear()
        if waiting:
            try:
                await asyncio.to_thread(queue.release, self.db, self.name, waiting,
                                        datetime.now(UTC))
            except Exception:
                log.exception("release on stop failed; leases will run out")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.total_timeout + 1)
