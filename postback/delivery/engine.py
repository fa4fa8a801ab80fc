"""The delivery engine: one asyncio loop per worker process.

    claim (batch) ─▶ per-endpoint queues ─▶ Sender (pycurl | aiohttp) ─▶ results ─▶ record

* Claims are batched and leased (``queue.claim``); a worker holds at most ``max_in_flight``
  deliveries, and at most ``2 * endpoint_concurrency`` for any one endpoint (setting), of
  which ``endpoint_concurrency`` are on the wire. Each claim takes only what every endpoint
  has room for (anything over, should it happen, is handed back at once), so a slow or dead
  partner holds a bounded share of the worker and never delays the others.
* Two claim lanes, each a loop of its own: catalog changes' postbacks, claimed
  ``claim_batch // 4`` at a time into at most three quarters of ``max_in_flight``, and
  everything else. While a bulk change's million drains, an action reported meanwhile is
  claimed at the next wake-up, into places the catalog may not take, without waiting
  behind a claim of catalog postbacks.
* Results are written in batches (``queue.record``): one transaction per batch of attempts.
* Liveness (``liveness``): a heartbeat every ``heartbeat_seconds`` proves the worker alive,
  takes up the work of workers that stopped, renews the leases of what this worker still
  holds, and reads the database's clock, which every time here is taken from. A worker
  that cannot heartbeat sends nothing more (others are about to take its work).
* Wake-ups (``db.wakeup.listener``): LISTEN/NOTIFY on PostgreSQL for commits anywhere; on
  SQLite a datagram socket beside the database file, which the API process writes to after
  each commit; ``wake()`` (thread-safe) in the same process; otherwise a poll every
  ``poll_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine as DbEngine

from postback.config import Settings
from postback.core.diagnosis import diagnose
from postback.core.retry import ErrorClass, Outcome, classify, parse_retry_after
from postback.db import wakeup
from postback.db.clock import STALE_HEARTBEATS
from postback.delivery import liveness, queue
from postback.delivery.drivers import sender_for
from postback.delivery.http import Response, outgoing_headers
from postback.sealing import MASK

log = logging.getLogger("postback.engine")
FLUSH_SIZE = 256
FLUSH_INTERVAL = 0.02
#: how long a stop waits for the last results to be written, then to sign off (with the
#: drain, at most the total timeout + 3 s: inside serve's 18 s with the default 15 s)
STOP_FLUSH_SECONDS = 1.5
STOP_LEAVE_SECONDS = 1.0
T = TypeVar("T")


@dataclass
class _Lane:
    """One of the engine's claim loops: catalog changes' postbacks, or everything else.
    Apart, an action's postback is claimed while hundreds of catalog ones are (a claim of
    those took 100-300 ms on a loaded machine)."""

    catalog: bool
    due: asyncio.Event = field(default_factory=asyncio.Event)
    deferred: bool = False  # kept out only by the other lane's claim under way


@dataclass
class _Endpoint:
    active: int = 0
    waiting: deque[queue.Job] = field(default_factory=deque)

    @property
    def held(self) -> int:
        return self.active + len(self.waiting)


def worker_id() -> str:
    return liveness.worker_name("engine")


class Engine:
    def __init__(self, settings: Settings, db: DbEngine, name: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self.name = name or worker_id()
        self._endpoints: dict[int | None, _Endpoint] = {}
        self._held = 0
        self._catalog = 0  # of _held, catalog changes' postbacks
        self._results: list[queue.Result] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: claims for everything but catalog postbacks, and for those, each in turn
        self._lanes: tuple[_Lane, ...] = ()
        self._claiming = 0  # places the claims under way may fill
        self._flush_now: asyncio.Event | None = None
        self._stopping = False
        self._on_wire = 0  # requests started and not yet answered
        self._quiet: asyncio.Event | None = None  # set when _on_wire falls to 0 on a stop
        self._disable = queue.DisablePolicy(settings.disable_after_hours,
                                            settings.disable_after_failures)
        #: the database's clock minus ours, measured at each heartbeat
        self._offset = timedelta(0)
        self._started_at = datetime.now(UTC)
        #: when the last heartbeat succeeded (monotonic), and each held job's lease end
        self._last_beat = time.monotonic()
        self._leases: dict[int, datetime] = {}
        self._dropped: set[int] = set()
        self._unsent: list[int] = []  # dropped while no heartbeat got through
        self._beaten = False
        self._write_failures = 0  # flushes in a row that wrote nothing
        # the database's work on threads of its own: a pile of slow DNS lookups on the
        # default executor must not hold up a claim, a record or, above all, a heartbeat
        self._db_threads = ThreadPoolExecutor(4, thread_name_prefix="postback-db")
        self._beat_thread = ThreadPoolExecutor(1, thread_name_prefix="postback-heartbeat")

    async def _db_call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._db_threads, functools.partial(fn, *args))

    async def _beating(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._beat_thread, functools.partial(fn, *args))

    def _still_held(self) -> list[int]:
        """What this worker holds at the end: unrecorded results, unsent drops."""
        return [*(r.job.id for r in self._results), *self._unsent, *self._leases]

    def now(self) -> datetime:
        """The database's time, as of the last heartbeat's reading."""
        return datetime.now(UTC) + self._offset

    # -- control ----------------------------------------------------------------------

    def wake(self) -> None:
        """Tell the engine new deliveries are due (safe from any thread)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the engine has already stopped
                self._loop.call_soon_threadsafe(self._wake_all)

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    # -- main loop --------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lanes = (_Lane(False), _Lane(True))
        self._flush_now = asyncio.Event()
        s = self.settings
        async with sender_for(s, s.max_in_flight) as sender:
            self._sender = sender
            while not await self._beat() and not self._stopping:
                await asyncio.sleep(min(1.0, s.heartbeat_seconds))  # alive before claiming
            beater = asyncio.create_task(self._heartbeat_loop())
            flusher = asyncio.create_task(self._flush_loop())
            wakeups = wakeup.listener(s.database_url, self._wake_all)
            listener = asyncio.create_task(wakeups)
            try:
                async with asyncio.TaskGroup() as lanes:
                    for lane in self._lanes:
                        lanes.create_task(self._claim_loop(lane))
            finally:
                if listener is not None:
                    listener.cancel()
                await self._drain()
                flusher.cancel()
                try:  # a database that does not answer must not keep a stop waiting
                    await asyncio.wait_for(self._flush(), STOP_FLUSH_SECONDS)
                except TimeoutError:
                    log.warning("stopping with %d attempts unrecorded: the database did not "
                                "answer (those deliveries will be sent again)",
                                len(self._results))
                beater.cancel()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._leave(), STOP_LEAVE_SECONDS)
                for pool in (self._db_threads, self._beat_thread):
                    pool.shutdown(wait=False, cancel_futures=True)

    async def _claim_loop(self, lane: _Lane) -> None:
        s = self.settings
        while not self._stopping:
            # cleared before claiming: a wake-up that arrives during the claim is kept
            lane.due.clear()
            if not self._alive():  # the others are about to take up what it holds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.due.wait(), s.heartbeat_seconds)
                continue
            limit = self._claim_limit(lane)
            got = 0
            if limit > 0:
                self._claiming += limit
                now = self.now()
                claimed: queue.Claim | None = None
                try:
                    claimed = await self._db_call(
                        queue.claim, self.db, self.name, limit, now,
                        s.lease_seconds, self._room(), 2 * s.endpoint_concurrency, s.sealer,
                        limit if lane.catalog else 0, not lane.catalog)
                except Exception:
                    log.exception("claim failed; retrying in 1 s")
                finally:
                    self._claiming -= limit
                    self._wake_deferred()
                if claimed is None:
                    await asyncio.sleep(1)
                    continue
                got = len(claimed.jobs) + len(claimed.broken)
                for broken in claimed.broken:
                    self._results.append(self._broken(broken))
                lease_end = now + timedelta(seconds=s.lease_seconds)
                for job in claimed.jobs:
                    self._leases[job.id] = lease_end
                if claimed.wake_in is not None:  # rate-limited work comes due soon
                    self._loop_call_later(lane, max(0.05, claimed.wake_in))
                await self._dispatch(claimed.jobs)
                if got == limit:
                    continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.due.wait(), s.poll_interval)

    def _claim_limit(self, lane: _Lane) -> int:
        """How many the lane's next claim may take; 0 for none now. The places a claim
        under way in the other lane may fill are not counted free: a lane kept out by them
        alone is woken when that claim ends (``_wake_deferred``)."""
        s = self.settings
        room = s.max_in_flight - self._held
        if lane.catalog:
            least = self._catalog_batch()
            room = min(room, self._catalog_cap() - self._catalog, least)
            empty = self._catalog == 0
        else:  # beside catalog postbacks any free place is worth it: they may not take it
            least = 1 if self._catalog else max(1, self._worthwhile())
            room = min(room, s.claim_batch)
            empty = self._held == 0
        free = min(room, s.max_in_flight - self._held - self._claiming)
        if free >= least or (empty and free > 0):
            lane.deferred = False
            return free
        lane.deferred = room >= least or (empty and room > 0)
        return 0

    def _wake_deferred(self) -> None:
        for lane in self._lanes:
            if lane.deferred:
                lane.deferred = False
                lane.due.set()

    def _wake_all(self) -> None:
        for lane in self._lanes:
            lane.due.set()

    def _loop_call_later(self, lane: _Lane, delay: float) -> None:
        assert self._loop is not None
        self._loop.call_later(delay, lane.due.set)

    def _worthwhile(self) -> int:
        """The smallest claim worth a transaction (but for an empty worker)."""
        return min(self.settings.claim_batch, self.settings.max_in_flight) // 4

    def _catalog_cap(self) -> int:
        """Three quarters of the places, and never all of them but for a worker of one."""
        most = self.settings.max_in_flight
        return most - max(1, most // 4) if most > 1 else most

    def _catalog_batch(self) -> int:
        """Catalog postbacks are claimed this many at a time: a claim of hundreds held
        SQLite's write lock, and the loop while it started them, long enough to show in
        the latency of everything else (p99 600 against 370 ms, docs/performance.md)."""
        return max(1, self._worthwhile())

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
            self._catalog += job.catalog
            if ep.active < cap:
                self._start(ep, job)
            else:
                ep.waiting.append(job)
        if surplus:
            for job_id in surplus:
                self._leases.pop(job_id, None)
            try:
                await self._db_call(queue.release, self.db, self.name, surplus, self.now())
            except Exception:  # they come back when their lease runs out
                log.exception("release failed")

    def _start(self, ep: _Endpoint, job: queue.Job) -> None:
        """Put one job on the wire; its answer comes back to ``_answered`` (no task per
        postback: the driver calls back on the loop)."""
        ep.active += 1
        self._on_wire += 1
        started = self.now()
        headers: dict[str, str] = {}
        try:
            headers = outgoing_headers(
                self.settings.user_agent, job.event_id, job.headers, job.signing_keys,
                job.signed_content if job.signing_keys else b"")
            self._sender.start(job.method, job.url, headers, job.body,
                               functools.partial(self._answered, ep, job, started, headers))
        except Exception as exc:
            self._crashed(ep, job, started, headers, exc)

    def _answered(self, ep: _Endpoint, job: queue.Job, started: datetime,
                  headers: dict[str, str], response: Response) -> None:
        try:
            result = self._result(job, started, headers, response)
        except Exception as exc:
            self._crashed(ep, job, started, headers, exc)
            return
        self._finished(ep, job, result)

    def _crashed(self, ep: _Endpoint, job: queue.Job, started: datetime,
                 headers: dict[str, str], exc: Exception) -> None:
        """A bug, not a partner's failure: an attempt all the same (so it is retried on the
        schedule, and cannot go on for ever)."""
        log.error("delivery %s: unexpected error while sending", job.id, exc_info=exc)
        result: queue.Result | None = None
        try:
            result = self._failure(
                job, started, ErrorClass.INTERNAL,
                f"internal error while sending ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                "this is a bug in postback, not the partner's fault", headers)
        except Exception:  # nothing to record: its lease runs out, its claims are counted
            log.exception("delivery %s: not even the failure could be made", job.id)
        assert self._loop is not None  # finished on the next turn: never inside _start
        self._loop.call_soon(self._finished, ep, job, result)

    def _finished(self, ep: _Endpoint, job: queue.Job, result: queue.Result | None) -> None:
        """A job is off the wire: its place goes to the next one (always, whatever the
        result, so that no slot of an endpoint is ever lost)."""
        if result is not None:
            self._results.append(result)
        low = self.settings.endpoint_concurrency  # half of what an endpoint may hold
        ep.active -= 1
        self._held -= 1
        self._catalog -= job.catalog
        self._on_wire -= 1
        self._leases.pop(job.id, None)
        self._start_next(ep)
        if ep.held == 0:
            self._endpoints.pop(job.setting_id, None)
        if len(self._results) >= FLUSH_SIZE and self._flush_now is not None:
            self._flush_now.set()
        if self._on_wire == 0 and self._quiet is not None:
            self._quiet.set()
        # claim again when that brings a worthwhile batch: this endpoint has drained to
        # half of what it may hold, the worker as a whole to half its capacity, or its
        # catalog postbacks to a batch below their cap (waking on every completion would
        # claim one delivery at a time, and spin on empty claims while a single busy
        # endpoint is left out of them)
        if self._held == self.settings.max_in_flight // 2:
            self._wake_all()
        elif ep.held == low - 1 or (
                job.catalog and self._catalog == self._catalog_cap() - self._catalog_batch()):
            self._lanes[job.catalog].due.set()

    def _start_next(self, ep: _Endpoint) -> None:
        """Start the endpoint's next waiting job, skipping any whose setting was turned
        off meanwhile; none while this worker cannot heartbeat (the others are about to
        take up what it holds) or is stopping."""
        while ep.waiting and not self._stopping:
            job = ep.waiting.popleft()
            if job.id in self._dropped or not self._alive():
                if job.id not in self._dropped:  # handed back once a heartbeat gets through
                    self._unsent.append(job.id)
                self._dropped.discard(job.id)
                self._leases.pop(job.id, None)
                self._held -= 1
                self._catalog -= job.catalog
                continue
            self._start(ep, job)
            return

    def _alive(self) -> bool:
        silent = time.monotonic() - self._last_beat
        return silent < (STALE_HEARTBEATS - 1) * self.settings.heartbeat_seconds

    def _failure(self, job: queue.Job, started: datetime, error: ErrorClass, message: str,
                 headers: dict[str, str] | None = None, permanent: bool = False
                 ) -> queue.Result:
        """An attempt that got no answer because of us (not the partner): recorded and
        retried on the schedule like any failure, so it can never go on forever."""
        response = Response(None, None, None, 0.0, error, message)
        if permanent:
            return queue.Result(
                job=job, started_at=started, request_headers={}, status_code=None,
                response_headers=None, response_body=None, latency_ms=0.0,
                error_class=error.value, error_message=message,
                outcome=Outcome.PERMANENT.value, next_attempt_at=None)
        return self._result(job, started, headers or {}, response)

    def _broken(self, broken: queue.Broken) -> queue.Result:
        log.error("delivery %s (setting %s) cannot be sent: %s", broken.job.id,
                  broken.job.setting_id, broken.reason)
        return self._failure(broken.job, self.now(), ErrorClass.INTERNAL, broken.reason,
                             permanent=broken.permanent)

    def _result(self, job: queue.Job, started: datetime, headers: dict[str, str],
                response: Response) -> queue.Result:
        # the body is read as text only where a Success or Error Response asks for it
        # (record stores the bytes; decoding every answer twice is wasted on the hot path)
        matched = response.text if job.success_response or job.error_response else None
        outcome, error = classify(response.status, response.error, matched,
                                  job.success_response, job.error_response)
        message = response.message
        if error is ErrorClass.UNEXPECTED_RESPONSE:
            message = diagnose(outcome, error, response.status, job.success_response,
                               job.error_response)
        next_at = None
        if outcome is Outcome.RETRY:
            retry_after = parse_retry_after(response.header("Retry-After"),
                                            started)
            delay = self.settings.retry.next_delay(job.failures + 1, response.status, error,
                                                   retry_after, random.random())
            if delay is None:
                outcome = Outcome.PERMANENT
                message = f"retries exhausted after {job.attempt} attempts" + (
                    f"; last: {message}" if message else "")
            else:
                next_at = self.now() + timedelta(seconds=delay)
        return queue.Result(
            job=job, started_at=started,
            request_headers={k: (MASK if k in job.secret_headers else v)
                             for k, v in headers.items()} if job.secret_headers else headers,
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
                unwritten = await self._db_call(
                    queue.record_isolating, self.db, self.name, batch, self.now(),
                    self._disable, self._write_failures >= 2)
            except Exception:
                log.exception("recording %d attempts failed", len(batch))
                unwritten = batch
            if not unwritten:
                self._write_failures = 0
                return
            self._write_failures += 1
            log.warning("the database did not answer; %d attempts wait to be recorded "
                        "(trying again in 1 s)", len(unwritten))
            self._results = unwritten + self._results
            await asyncio.sleep(1)

    # -- liveness ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            await self._beat()

    async def _beat(self) -> bool:
        s = self.settings
        soon = self.now() + timedelta(seconds=2 * s.heartbeat_seconds + 1)
        renew = [job_id for job_id, end in self._leases.items() if end <= soon]
        watch = [job.id for ep in self._endpoints.values() for job in ep.waiting]
        asked = time.monotonic()
        try:
            beat = await self._beating(
                liveness.heartbeat, self.db, self.name, "engine", self._started_at,
                s.heartbeat_seconds, s.lease_seconds, renew, watch)
        except Exception:
            log.exception("heartbeat failed; retrying in %g s", s.heartbeat_seconds)
            return False
        answered = time.monotonic()
        self._last_beat = answered
        first, self._beaten = not self._beaten, True
        # the database's time was read about halfway through the round trip
        self._offset = beat.now - (datetime.now(UTC) - timedelta(
            seconds=(answered - asked) / 2))
        lease_end = beat.now + timedelta(seconds=s.lease_seconds)
        for job_id in renew:
            if job_id in self._leases:
                self._leases[job_id] = lease_end
        # only what still waits: one started meanwhile is on the wire and will be recorded
        waiting = {job.id for ep in self._endpoints.values() for job in ep.waiting}
        if not beat.known and not first:
            log.warning("this worker had been presumed dead (no heartbeat for %g s): what "
                        "it held was handed to others", STALE_HEARTBEATS * s.heartbeat_seconds)
            self._dropped.update(waiting)
            self._unsent = []  # handed out already: not ours to hand back
        gone = [job_id for job_id in beat.gone if job_id in waiting]
        self._dropped.update(gone)
        unsent, self._unsent = [*gone, *self._unsent], []
        if unsent:
            try:
                await self._db_call(queue.release, self.db, self.name, unsent, self.now())
            except Exception:
                log.exception("release of %d unsent deliveries failed", len(unsent))
        if beat.reclaimed:
            log.warning("took up %d deliveries from workers that stopped heartbeating",
                        beat.reclaimed)
            self._wake_all()
        return True

    async def _leave(self) -> None:
        try:
            await self._db_call(liveness.leave, self.db, self.name, self._still_held())
        except Exception:
            log.exception("could not remove this worker's heartbeat row")

    async def _drain(self) -> None:
        """On stop: hand back what waits, let what is on the wire finish."""
        waiting = [job.id for ep in self._endpoints.values() for job in ep.waiting]
        for ep in self._endpoints.values():
            self._held -= len(ep.waiting)
            self._catalog -= sum(job.catalog for job in ep.waiting)
            ep.waiting.clear()
        if waiting:
            try:
                await asyncio.wait_for(self._db_call(
                    queue.release, self.db, self.name, waiting, self.now()), STOP_LEAVE_SECONDS)
            except Exception:
                log.exception("release on stop failed; leases will run out")
        if self._on_wire:  # each ends by its own time limit at the latest
            self._quiet = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.settings.total_timeout + 0.5)
