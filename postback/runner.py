"""Process composition: each part of the service is a process of its own.

* ``api``: the API and the web app (uvicorn); the only process that listens on a port.
* ``worker``: a delivery engine (run several: on one SQLite file, or on PostgreSQL from any
  number of machines).
* ``scheduler``: locking, clearing and inquiry auto-approval when their dates come; data
  feeds; large catalog changes' postbacks; the Deliveries chart's rollup and attempt-body
  retention.
* ``serve``: the one-command default: migrations, the sealing key and the operator token
  once, then a supervisor (``supervisor.py``) runs ``api``, N ``worker`` and
  ``scheduler`` as child processes and keeps them running.

Heavy imports (uvicorn and the web app, the delivery engine) are made where they are used,
so each child loads only what it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from sqlalchemy import Engine as DbEngine
from sqlalchemy import inspect

from postback.config import Settings
from postback.db import migrate
from postback.db.engine import make_engine
from postback.sealing import load_or_create_key
from postback.supervisor import SUPERVISOR_ENV, ChildSpec, Supervisor

log = logging.getLogger("postback")
#: how long the API waits for requests under way when it is told to stop
API_GRACE_SECONDS = 10


def open_database(settings: Settings, run_migrations: bool) -> DbEngine:
    if run_migrations:
        migrate.upgrade(settings.database_url)
    db = make_engine(settings.database_url)
    if not inspect(db).has_table("delivery"):
        sys.exit("the database has no postback tables yet: run `postback migrate` first")
    return db


def _supervised() -> bool:
    return SUPERVISOR_ENV in os.environ


def with_secret_key(settings: Settings, create: bool) -> Settings:
    """The settings with a sealing key: configured, or ./postback.key (created by ``serve``
    on first start, so the embedded default needs no set-up)."""
    if settings.secret_key is not None:
        return settings
    path = Path("postback.key")
    if not create and not path.exists():
        sys.exit("no POSTBACK_SECRET_KEY: give every worker the key `serve` uses "
                 "(POSTBACK_SECRET_KEY or POSTBACK_SECRET_KEY_FILE)")
    existed = path.exists()
    key = load_or_create_key(path)
    if not existed:
        log.warning("created %s to seal secrets at rest; back it up, and give it to every "
                    "worker (POSTBACK_SECRET_KEY_FILE)", path.resolve())
    return replace(settings, secret_key=key)


def _warn_open_targets(settings: Settings) -> None:
    if settings.allow_targets.allow and not _supervised():  # serve has said it once
        log.warning("POSTBACK_ALLOW_TARGETS opens %s: postbacks may be sent to these "
                    "non-public addresses. Use this for development and tests only.",
                    ", ".join(map(str, settings.allow_targets.allow)))


def _print_operator_token(db: DbEngine, settings: Settings) -> None:
    from postback.services.accounts import ensure_operator_token

    token = ensure_operator_token(db, settings.admin_token)
    if token is not None:
        print(f"\nOperator token (shown once, store it now):\n\n    {token}\n", flush=True)


# -- serve: the supervisor ------------------------------------------------------------------

def _check_port(host: str, port: int) -> None:
    """Fail now, with the reason, if the API could not listen (rather than restart it in a
    loop); the API process binds the port itself."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as exc:
        sys.exit(f"postback: cannot listen on {host}:{port}: {exc.strerror or exc}")


def serve(settings: Settings, host: str, port: int, workers: int) -> int:
    """Migrate, make the key and the operator token, then run the API, ``workers`` delivery
    engines and the scheduler as supervised processes until SIGTERM or SIGINT."""
    _check_port(host, port)
    settings = with_secret_key(settings, create=True)
    db = open_database(settings, run_migrations=True)
    try:
        _print_operator_token(db, settings)
    finally:
        db.dispose()
    _warn_open_targets(settings)
    children = [ChildSpec("api", ("api", "--host", host, "--port", str(port))),
                *(ChildSpec(f"engine-{i}", ("worker",)) for i in range(1, workers + 1)),
                ChildSpec("scheduler", ("scheduler",))]
    log.info("serving on http://%s:%d: the API, %d delivery engine%s and the scheduler, "
             "each a process of its own", host, port, workers, "" if workers == 1 else "s")
    return Supervisor(children).run()


# -- api ----------------------------------------------------------------------------------

class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would end the process
    with the signal rather than status 0; here the signal only stops serving."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def api(settings: Settings, host: str, port: int) -> None:
    """The API and the web app. New deliveries wake the engines of every process
    (``db.wakeup``); ``/readyz`` reports on the whole deployment."""
    from postback.asgi import create_app
    from postback.db.wakeup import waker
    from postback.services.health import Readiness

    settings = with_secret_key(settings, create=False)
    db = open_database(settings, run_migrations=False)
    _print_operator_token(db, settings)
    readiness = Readiness(db, settings.heartbeat_seconds)
    app = create_app(settings, db, wake=waker(settings.database_url), readiness=readiness)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                    access_log=False, lifespan="off",
                                    timeout_graceful_shutdown=API_GRACE_SECONDS))
    try:
        await server.serve()
    finally:
        readiness.close()
        db.dispose()


# -- worker -------------------------------------------------------------------------------

async def work(settings: Settings) -> None:
    """One delivery engine, until SIGTERM or SIGINT (then it drains)."""
    from postback.delivery.engine import Engine

    settings = with_secret_key(settings, create=False)
    _warn_open_targets(settings)
    db = open_database(settings, run_migrations=False)
    engine = Engine(settings, db)
    loop = asyncio.get_running_loop()
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        if signals:  # a second signal: at once (what is unrecorded is sent again)
            log.warning("second signal: exiting now")
            _exit(128 + sig)
        signals.append(sig)
        engine.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    log.info("worker %s started", engine.name)
    await engine.run()
    db.dispose()
    # drained, recorded and signed off: nothing is left to wait for, not even a DNS
    # lookup still running on a thread (asyncio.run would wait for it)
    _exit(0)


def _exit(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- scheduler ----------------------------------------------------------------------------

async def _lifecycle_loop(db: DbEngine, interval: float) -> None:
    from postback.services.scheduler import run_due

    while True:
        try:
            done = await asyncio.to_thread(run_due, db, datetime.now(UTC))
            if any(done.values()):
                log.info("lifecycle: locked %(locked)d, cleared %(cleared)d, "
                         "auto-approved %(auto_approved)d", done)
        except Exception:
            log.exception("lifecycle run failed")
        await asyncio.sleep(interval)


#: how often the scheduler looks for due data feed runs
FEEDS_INTERVAL = 5.0


async def _feeds_loop(db: DbEngine, settings: Settings, interval: float = FEEDS_INTERVAL
                      ) -> None:
    """Data feeds: ``POSTBACK_FEED_WORKERS`` threads of their own each claim a due run and
    work it (a file of a million rows takes a while, a slow destination longer: it holds
    one worker, the others go on; the loop keeps heartbeating meanwhile), and every
    ``interval`` seconds due runs are made and expired files deleted. Cancelled, the
    workers hand their runs back at their next step, and the loop waits for them."""
    from postback.services.feed_runs import Tally, feed_worker, housekeep

    if settings.secret_key is None and Path("postback.key").exists():
        settings = with_secret_key(settings, create=False)
    if settings.secret_key is None:
        log.warning("data feeds are not run by this scheduler: it has no POSTBACK_SECRET_KEY "
                    "(their secrets and download links need it)")
        return
    stop = threading.Event()
    worked = Tally()
    # not the default executor: workers held by slow destinations never delay the heartbeat
    pool = ThreadPoolExecutor(settings.feed_workers, thread_name_prefix="feeds")
    loop = asyncio.get_running_loop()
    workers = [loop.run_in_executor(pool, functools.partial(
        feed_worker, db, settings, stop, interval=interval, worked=worked))
        for _ in range(settings.feed_workers)]
    try:
        while True:
            try:
                done = {**await asyncio.to_thread(housekeep, db), "worked": worked.take()}
                if any(done.values()):
                    log.info("feeds: %(scheduled)d runs made, %(worked)d worked, "
                             "%(files_deleted)d expired files deleted", done)
            except Exception:
                log.exception("feeds run failed")
            await asyncio.sleep(interval)
    finally:  # cancelled: each worker hands its run back at its next step
        stop.set()
        pool.shutdown(wait=False)
        await asyncio.shield(asyncio.gather(*workers, return_exceptions=True))


#: how often the scheduler looks for catalog changes whose postbacks wait to be written
FANOUT_INTERVAL = 0.2


async def _fanout_loop(db: DbEngine, interval: float = FANOUT_INTERVAL) -> None:
    """Large catalog changes' postbacks written a chunk per transaction
    (``services/fanout.py``), without a pause while there are more and the engines keep
    up, every ``interval`` seconds otherwise."""
    from postback.services import fanout

    while True:
        done = 0
        try:
            done = await asyncio.to_thread(fanout.expand_due, db)
        except Exception:
            log.exception("catalog fan-out failed; trying again in %g s", interval)
        await asyncio.sleep(0 if done else interval)


#: how often the scheduler folds the Deliveries chart's deltas, and runs retention
FOLD_INTERVAL = 2.0
PRUNE_INTERVAL = 60.0
FOLD_ROUNDS = 50  # batches folded before the loop looks at retention again


async def _housekeeping_loop(db: DbEngine, settings: Settings) -> None:
    """Keeps reads cheap: the chart's deltas folded into its rollup every
    ``FOLD_INTERVAL`` seconds, and attempt bodies past
    ``POSTBACK_ATTEMPT_BODY_RETENTION_DAYS`` emptied every ``PRUNE_INTERVAL``; each a
    bounded batch per transaction, so neither holds a write lock for long."""
    from postback.services import rollup

    pruned_at = 0.0
    unvacuumed = 0
    while True:
        try:
            for _ in range(FOLD_ROUNDS):  # then retention gets its turn, however busy
                folded = await asyncio.to_thread(rollup.compact, db)
                unvacuumed += folded
                if folded < rollup.FOLD_BATCH:
                    break
            if unvacuumed >= rollup.VACUUM_AFTER:
                unvacuumed = 0
                await asyncio.to_thread(rollup.vacuum, db)
            if time.monotonic() - pruned_at >= PRUNE_INTERVAL:
                pruned_at = time.monotonic()
                while True:
                    done = await asyncio.to_thread(rollup.prune, db, datetime.now(UTC),
                                                   settings.attempt_body_retention_days)
                    if done["attempt_bodies_emptied"]:
                        log.info("retention: %(attempt_bodies_emptied)d attempt bodies "
                                 "emptied", done)
                    if done["attempts_walked"] < rollup.PRUNE_BATCH:
                        break
        except Exception:
            log.exception("housekeeping failed; trying again in %g s", FOLD_INTERVAL)
        await asyncio.sleep(FOLD_INTERVAL)


async def _heartbeat_loop(db: DbEngine, name: str, seconds: float) -> None:
    from postback.services.scheduler import heartbeat

    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(heartbeat, db, name, seconds)
        except Exception as exc:  # the database is busy or away: /readyz will say so
            log.warning("scheduler heartbeat failed (%s)", exc)


async def schedule(settings: Settings) -> None:
    """The scheduler: a lifecycle run every ``POSTBACK_LIFECYCLE_INTERVAL`` seconds, and a
    heartbeat every ``POSTBACK_HEARTBEAT_SECONDS``, until SIGTERM or SIGINT."""
    from postback.services.scheduler import heartbeat, leave, scheduler_name

    db = open_database(settings, run_migrations=False)
    name = scheduler_name()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(heartbeat, db, name, settings.heartbeat_seconds)
    tasks = [asyncio.create_task(_heartbeat_loop(db, name, settings.heartbeat_seconds)),
             asyncio.create_task(_lifecycle_loop(db, settings.lifecycle_interval)),
             asyncio.create_task(_feeds_loop(db, settings)),
             asyncio.create_task(_housekeeping_loop(db, settings)),
             asyncio.create_task(_fanout_loop(db))]
    log.info("scheduler %s started", name)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.to_thread(leave, db, name)
        except Exception as exc:
            log.warning("scheduler %s could not remove its heartbeat (%s)", name, exc)
        db.dispose()
