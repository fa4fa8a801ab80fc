"""Process composition: ``serve`` runs API + scheduler + delivery engine in one event loop;
``worker`` runs the engine alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from sqlalchemy import Engine as DbEngine
from sqlalchemy import inspect

from postback.api.app import create_app
from postback.config import Settings
from postback.db import migrate
from postback.db.engine import make_engine
from postback.delivery.engine import Engine
from postback.sealing import load_or_create_key
from postback.services.accounts import ensure_operator_token
from postback.services.scheduler import run_due

log = logging.getLogger("postback")


def open_database(settings: Settings, run_migrations: bool) -> DbEngine:
    if run_migrations:
        migrate.upgrade(settings.database_url)
    db = make_engine(settings.database_url)
    if not inspect(db).has_table("delivery"):
        sys.exit("the database has no postback tables yet: run `postback migrate` first")
    return db


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would kill the process
    before the delivery engine hands back its claims; here the signal only stops serving."""

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


async def _lifecycle_loop(db: DbEngine, interval: float) -> None:
    while True:
        try:
            done = await asyncio.to_thread(run_due, db, datetime.now(UTC))
            if any(done.values()):
                log.info("lifecycle: locked %(locked)d, cleared %(cleared)d", done)
        except Exception:
            log.exception("lifecycle run failed")
        await asyncio.sleep(interval)


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


async def serve(settings: Settings, host: str, port: int) -> None:
    settings = with_secret_key(settings, create=True)
    db = open_database(settings, run_migrations=True)
    token = ensure_operator_token(db, settings.admin_token)
    if token is not None:
        print(f"\nOperator token (shown once, store it now):\n\n    {token}\n", flush=True)
    _warn_open_targets(settings)
    engine = Engine(settings, db)
    app = create_app(settings, db, wake=engine.wake)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                           access_log=False, lifespan="off"))
    engine_task = asyncio.create_task(engine.run())
    lifecycle = asyncio.create_task(_lifecycle_loop(db, settings.lifecycle_interval))
    try:
        await server.serve()
    finally:
        lifecycle.cancel()
        engine.stop()
        await engine_task
        db.dispose()


def _warn_open_targets(settings: Settings) -> None:
    if settings.allow_targets.allow:
        log.warning("POSTBACK_ALLOW_TARGETS opens %s: postbacks may be sent to these "
                    "non-public addresses. Use this for development and tests only.",
                    ", ".join(map(str, settings.allow_targets.allow)))


async def work(settings: Settings) -> None:
    settings = with_secret_key(settings, create=False)
    _warn_open_targets(settings)
    db = open_database(settings, run_migrations=False)
    engine = Engine(settings, db)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, engine.stop)
    log.info("worker %s started", engine.name)
    await engine.run()
    db.dispose()
