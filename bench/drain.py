"""Drain a backlog: N due postbacks already in the database, one engine process sends them
all and records every attempt. Printed beside the baselines measured in the same run: a
bare pycurl multi loop and a bare aiohttp loop sending the same GETs to the same receiver,
and (with ``--celery``) the usual Python build, Celery + Redis + requests, and (with
``--arq``) the modern async one, arq + aiohttp.

    .venv/bin/python bench/drain.py [--count 200000] [--partners 10] [--db sqlite,postgresql]
                                    [--celery 3000] [--arq 50000] [--workers 1,2,4]
                                    [--profile PREFIX]

``--db memory`` runs the same engine with the queue in memory (no database at all): the
difference to a database's row is what the database costs. ``--workers`` runs several
engine processes on one database at once and checks that no delivery was sent twice.

The engine runs as ``bench/drain.py --child`` in its own process, so its peak RSS and its
SQL statements are its own; statements are counted with a SQLAlchemy cursor event (an
``executemany`` counts once: one round trip, pipelined on PostgreSQL). The baselines need
the ``bench`` extra (``pip install -e '.[bench]'``); a missing one is reported, not faked.
Everything runs on loopback and stops by itself (bounded count, bounded time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from e2e import PG, ceiling, free_port, get, wait_http
from sqlalchemy import Engine as DbEngine
from sqlalchemy import event, func, select

from postback.config import Settings
from postback.core.addresses import AddressPolicy
from postback.core.retry import RetryPolicy
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from postback.db.schema import delivery, delivery_attempt
from postback.delivery import liveness, queue
from postback.delivery.engine import Engine
from postback.delivery.queue import Claim, Job
from postback.models import (
    ActionIn,
    BrandIn,
    ContractIn,
    EventTypeIn,
    NotificationSettingIn,
    PartnerIn,
    ProgramIn,
)
from postback.sealing import new_key
from postback.services import accounts, ledger, programs
from postback.services import notification_settings as ns

HERE = Path(__file__).resolve().parent
DEADLINE = 600.0  # seconds any one phase may take
REDIS = os.environ.get("POSTBACK_BENCH_REDIS", "redis://127.0.0.1:6379/9")


def settings(db_url: str, key: str, client: str = "curl") -> Settings:
    per_endpoint = int(os.environ.get("POSTBACK_ENDPOINT_CONCURRENCY") or 32)
    return Settings(database_url=db_url, allow_targets=AddressPolicy.parse("127.0.0.0/8"),
                    secret_key=key, poll_interval=0.05, http_client=client,
                    endpoint_concurrency=per_endpoint,
                    retry=RetryPolicy(schedule=(1.0,), jitter=0.0))


def fill(db: DbEngine, config: Settings, count: int, partners: int, port: int) -> list[str]:
    """Partners with a GET postback each and ``count`` due deliveries, reported through the
    ledger (rendered as in production). Returns one rendered URL per delivery."""
    with db.begin() as c:
        brand = accounts.create_brand(c, BrandIn(name="Bench Brand"))
        program = programs.create_program(c, brand["id"], ProgramIn(name="B", currency="USD"))
        etype = programs.add_event_type(c, brand["id"], program["id"],
                                        EventTypeIn(name="Sale", action_type="SALE"))
        ids = []
        for i in range(partners):
            partner = accounts.create_partner(c, PartnerIn.model_validate(
                {"name": f"p{i}", "partner_type": "cashback"}))
            programs.put_contract(c, brand["id"], program["id"], partner["id"],
                                  ContractIn.model_validate({
                                      "event_type_ids": [etype["id"]],
                                      "locking": {"rule": "open_ended"},
                                      "clearing": {"rule": "days_after_locking"}}))
            ns.put_setting(c, partner["id"], "action-lifecycle", NotificationSettingIn(
                url=f"http://127.0.0.1:{port}/pb/{i}?a={{ActionId}}&p={{Payout}}"
                    "&s={SubId1}&e={EventId}"), config)
            ids.append(partner["id"])
    made = 0
    while made < count:
        n = min(1000, count - made)
        actions = [ActionIn.model_validate({
            "program_id": program["id"], "event_type_id": etype["id"],
            "partner_id": ids[(made + k) % partners], "oid": f"o{made + k}",
            "amount": "100.00", "payout": "8.00", "sub_id1": f"member-{made + k}",
            "event_date": "2026-11-02T18:04:05+00:00"}) for k in range(n)]
        with db.begin() as c:
            ledger.report_actions(c, brand["id"], actions, datetime.now(UTC), batch=True)
        made += n
    with db.connect() as c:
        return list(c.execute(select(delivery.c.url).order_by(delivery.c.id)).scalars())


# -- the engine, in its own process -------------------------------------------------------

def urls_for(count: int, partners: int, port: int) -> list[str]:
    """The URLs ``fill`` renders, without a database (for ``--db memory``)."""
    return [f"http://127.0.0.1:{port}/pb/{i % partners}?a={i + 1}&p=8.00&s=member-{i}"
            f"&e={uuid.uuid4()}" for i in range(count)]


class MemoryQueue:
    """``queue.claim``/``release``/``record`` over a list in memory: the engine with no
    database at all, to show what the database costs (``--db memory``)."""

    def __init__(self, urls: list[str], partners: int) -> None:
        from collections import deque

        self.waiting = {p + 1: deque[Job]() for p in range(partners)}
        for i, url in enumerate(urls):
            self.waiting[i % partners + 1].append(Job(
                id=i + 1, event_id=str(uuid.uuid4()), setting_id=i % partners + 1,
                method="GET", url=url, headers={}, secret_headers=frozenset(),
                success_response=None, body=None, attempt=1, failures=0))
        self.left = len(urls)
        self.succeeded = 0

    def claim(self, _db: Any, _worker: str, limit: int, _now: Any, _lease: float,
              room: dict[int, int] | None = None, default_room: int = 1 << 30,
              _sealer: Any = None) -> Claim:
        jobs: list[Job] = []
        for sid, waiting in self.waiting.items():
            take = min(len(waiting), (room or {}).get(sid, default_room), limit - len(jobs))
            jobs.extend(waiting.popleft() for _ in range(max(0, take)))
        return Claim(jobs)

    def release(self, _db: Any, _worker: str, ids: list[int], _now: Any) -> None:
        raise AssertionError("the memory queue never over-claims")

    def record(self, _db: Any, _worker: str, results: list[Any], _now: Any,
               _policy: Any = None, _isolate: bool = False) -> list[Any]:
        self.left -= len(results)
        self.succeeded += sum(1 for r in results if r.outcome == "success")
        return []

    @staticmethod
    def heartbeat(*_: Any) -> liveness.Beat:
        return liveness.Beat(datetime.now(UTC), True, 0, [])


def child(db_url: str, key: str, client: str) -> None:
    """Run one engine until no delivery is left pending; print its figures as JSON (its
    own successes are the attempts it recorded under its name)."""
    if db_url.startswith("memory:"):
        memory_child(db_url, key, client)
        return
    db = make_engine(db_url)
    statements = 0

    def count_statement(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(db, "before_cursor_execute", count_statement)
    engine = Engine(settings(db_url, key, client), db)
    done_at = 0.0

    async def watch() -> None:
        nonlocal done_at, statements
        probe = make_engine(db_url)  # not counted: the benchmark's own polling
        while True:  # a cheap indexed probe, a few times a second: the engine has the GIL
            await asyncio.sleep(0.25)
            with probe.connect() as c:
                left = c.execute(select(delivery.c.id).where(delivery.c.status == "pending")
                                 .limit(1)).first()
            if left is None or time.perf_counter() - started > DEADLINE:
                done_at = time.perf_counter()
                engine.stop()
                probe.dispose()
                return

    async def main() -> None:
        watcher = asyncio.create_task(watch())
        await engine.run()
        await watcher

    started = time.perf_counter()
    asyncio.run(main())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with db.connect() as c:
        succeeded = c.execute(select(func.count()).select_from(delivery_attempt).where(
            delivery_attempt.c.worker == engine.name,
            delivery_attempt.c.outcome == "success")).scalar_one()
    print(json.dumps({"seconds": done_at - started, "succeeded": succeeded,
                      "cpu": usage.ru_utime + usage.ru_stime,
                      "statements": statements, "rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own peak RSS. Linux's ``ru_maxrss`` is not that: it keeps the high
    water mark across ``exec``, so a child inherits the RSS its parent had when it forked
    (here, the benchmark holding every URL); ``VmHWM`` counts only this program."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(spec: str, key: str, client: str) -> None:
    _, count, partners, port = spec.split(":")
    memory = MemoryQueue(urls_for(int(count), int(partners), int(port)), int(partners))
    queue.claim, queue.release, queue.record_isolating = (  # type: ignore[assignment]
        memory.claim, memory.release, memory.record)
    liveness.heartbeat = memory.heartbeat  # type: ignore[assignment]
    liveness.leave = lambda *_: None
    unused = f"sqlite:///{tempfile.gettempdir()}/drain-memory-unused.db"  # never opened
    engine = Engine(settings(unused, key, client), make_engine(unused))

    async def main() -> float:
        run = asyncio.create_task(engine.run())
        while memory.left > 0:
            await asyncio.sleep(0.01)
        done = time.perf_counter()
        engine.stop()
        await run
        return done

    started = time.perf_counter()
    done_at = asyncio.run(main())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": done_at - started, "succeeded": memory.succeeded,
                      "cpu": usage.ru_utime + usage.ru_stime, "statements": 0,
                      "rss_mb": peak_rss_mb()}))


def drain(db_url: str, key: str, client: str, profile: str | None = None,
          workers: int = 1) -> list[dict[str, Any]]:
    """``workers`` engine processes at once on the one database; each one's figures."""
    command = [sys.executable, __file__, "--child", db_url, key, client]
    if profile:  # py-spy's raw (collapsed) stacks: where the time goes
        command = [str(Path(sys.executable).parent / "py-spy"), "record",
                   "-r", "250", "--format", "raw", "-o", profile, "--", *command]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=DEADLINE + 60)
        if proc.returncode:
            raise RuntimeError(f"engine process failed ({proc.returncode})")
        last = [line for line in out.splitlines() if line.startswith("{")][-1]
        results.append(json.loads(last))
    return results


def sent_once(db_url: str) -> tuple[int, int]:
    """(deliveries, attempts): equal when no delivery was sent twice."""
    db = make_engine(db_url)
    try:
        with db.connect() as c:
            return (c.execute(select(func.count()).select_from(delivery)).scalar_one(),
                    c.execute(select(func.count()).select_from(delivery_attempt))
                    .scalar_one())
    finally:
        db.dispose()


# -- baselines ------------------------------------------------------------------------------

def bare_pycurl(urls: list[str], concurrency: int = 512) -> float | None:
    """A bare pycurl multi loop: reused handles (keep-alive), nothing recorded."""
    try:
        import pycurl
    except ImportError:
        return None
    multi = pycurl.CurlMulti()
    free = []
    for _ in range(concurrency):
        handle = pycurl.Curl()
        handle.setopt(pycurl.WRITEFUNCTION, len)
        free.append(handle)
    pending = iter(urls)
    active = 0
    started = time.perf_counter()
    while True:
        while free:
            url = next(pending, None)
            if url is None:
                break
            handle = free.pop()
            handle.setopt(pycurl.URL, url)
            multi.add_handle(handle)
            active += 1
        if active == 0:
            break
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, failed = multi.info_read()
            for handle in ok + [f[0] for f in failed]:
                multi.remove_handle(handle)
                free.append(handle)
                active -= 1
            if failed:
                raise RuntimeError(f"pycurl: {failed[0][2]}")
            if not queued:
                break
        multi.select(0.1)
    return len(urls) / (time.perf_counter() - started)


def received_rate(receiver: str, count: int, started: float, name: str) -> float:
    """Postbacks a second from ``started`` until the receiver has all ``count``."""
    while get(f"{receiver}/__stats")["count"] < count:
        if time.perf_counter() - started > DEADLINE:
            raise RuntimeError(f"{name} did not finish in time")
        time.sleep(0.05)
    return count / (time.perf_counter() - started)


def celery_build(urls: list[str], receiver: str) -> float | None:
    """Celery + Redis + requests, as a Python team would build it: one task per postback,
    a prefork worker with one process per core."""
    try:
        import celery  # noqa: F401
        import redis
        import requests  # noqa: F401
    except ImportError:
        return None
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_BROKER": REDIS, "BENCH_QUEUE": queue}
    from celery_app import app, send  # type: ignore[import-not-found]

    get(f"{receiver}/__reset")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-Q", queue,
         "--concurrency", str(os.cpu_count() or 2), "--loglevel", "WARNING"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        app.conf.task_default_queue = queue
        time.sleep(3)  # let the worker connect before the clock starts
        started = time.perf_counter()
        for url in urls:
            send.apply_async((url,), queue=queue)
        return received_rate(receiver, len(urls), started, "celery")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        redis.Redis.from_url(REDIS).delete(queue)


def arq_build(urls: list[str], receiver: str) -> float | None:
    """arq + aiohttp, the modern async way: asyncio jobs in Redis, one worker process per
    core, each with 512 jobs at once. The backlog is written first, then the workers start:
    the clock runs from their start until the receiver has every postback."""
    try:
        import arq  # noqa: F401
        import redis
    except ImportError:
        return None
    from arq import create_pool
    from arq.connections import RedisSettings

    queue = f"bench-arq-{uuid.uuid4().hex[:8]}"

    async def enqueue() -> None:
        pool = await create_pool(RedisSettings.from_dsn(REDIS), default_queue_name=queue)
        try:
            for start in range(0, len(urls), 1000):
                await asyncio.gather(*(pool.enqueue_job("send", url)
                                       for url in urls[start:start + 1000]))
        finally:
            await pool.aclose()

    get(f"{receiver}/__reset")
    asyncio.run(enqueue())
    env = {**os.environ, "BENCH_BROKER": REDIS, "BENCH_QUEUE": queue}
    started = time.perf_counter()
    workers = [subprocess.Popen([sys.executable, "-m", "arq", "arq_app.WorkerSettings"],
                                cwd=HERE, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
               for _ in range(os.cpu_count() or 2)]
    try:
        return received_rate(receiver, len(urls), started, "arq")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        client = redis.Redis.from_url(REDIS)
        client.delete(queue, *client.keys("arq:job:*"), *client.keys("arq:retry:*"))


# -- the run ------------------------------------------------------------------------------

def fresh_database(kind: str, tmp: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp}/drain-{uuid.uuid4().hex[:6]}.db", None
    name = f"postback_drain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG.rsplit("/", 1)[0] + "/" + name, name


def drop_database(name: str | None) -> None:
    if name:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--partners", type=int, default=10)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--client", default="curl,aiohttp", help="the engine's HTTP drivers to run")
    p.add_argument("--celery", type=int, default=0, help="postbacks for the Celery baseline")
    p.add_argument("--arq", type=int, default=0, help="postbacks for the arq + aiohttp baseline")
    p.add_argument("--workers", default="1",
                   help="engine processes draining one database at once, e.g. 1,2,4")
    p.add_argument("--profile", metavar="PREFIX",
                   help="run each engine under py-spy, writing PREFIX-<db>-<client>.txt")
    args = p.parse_args()
    port = free_port()
    receiver = subprocess.Popen([sys.executable, str(HERE / "receiver.py"), str(port)])
    rows: list[tuple[str, float | None, str]] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/__stats")
        key = new_key()
        with tempfile.TemporaryDirectory() as tmp:
            urls: list[str] = []
            runs = [(kind, client, int(n)) for kind in args.db.split(",")
                    for client in args.client.split(",") for n in args.workers.split(",")]
            for kind, client, workers in runs:
                if kind == "memory":
                    db_url, pg_name = f"memory:{args.count}:{args.partners}:{port}", None
                else:
                    db_url, pg_name = fresh_database(kind, Path(tmp))
                try:
                    if kind == "memory":
                        urls = urls_for(args.count, args.partners, port)
                    else:
                        upgrade(db_url)
                        db = make_engine(db_url)
                        t = time.perf_counter()
                        urls = fill(db, settings(db_url, key), args.count, args.partners,
                                    port)
                        print(f"{kind}: {len(urls)} due postbacks written in "
                              f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
                        db.dispose()
                    get(f"http://127.0.0.1:{port}/__reset")
                    got = drain(db_url, key, client, args.profile and
                                f"{args.profile}-{kind}-{client}.txt", workers)
                    received = get(f"http://127.0.0.1:{port}/__stats")["count"]
                    deliveries, attempts = ((args.count, received) if kind == "memory"
                                            else sent_once(db_url))
                    seconds = max(g["seconds"] for g in got)
                    total = sum(g["succeeded"] for g in got)
                    label = "" if workers == 1 else f", {workers} processes"
                    each = ", ".join(f"{g['succeeded'] / g['seconds']:,.0f}" for g in got)
                    rows.append((
                        f"postback engine, {kind}, {client}{label}", total / seconds,
                        f"{sum(g['statements'] for g in got) / args.count:.4f} "
                        f"SQL/postback, CPU {sum(g['cpu'] for g in got) / seconds:.0%} "
                        f"of a core, peak RSS {max(g['rss_mb'] for g in got):.0f} MB"
                        + (f" (each), per process {each}/s" if workers > 1 else "")
                        + f"; {received} received, {attempts} attempts for "
                        f"{deliveries} deliveries"))
                finally:
                    drop_database(pg_name)
            get(f"http://127.0.0.1:{port}/__reset")
            rows.insert(0, ("bare pycurl multi loop", bare_pycurl(urls), "512 concurrent"))
            get(f"http://127.0.0.1:{port}/__reset")
            rows.insert(1, ("bare aiohttp loop", asyncio.run(ceiling(urls)), "512 concurrent"))
            if args.arq:
                rate = arq_build(urls[:args.arq], f"http://127.0.0.1:{port}")
                rows.append((f"arq + aiohttp ({args.arq})", rate,
                             f"{os.cpu_count()} worker processes, 512 jobs each"))
            if args.celery:
                rate = celery_build(urls[:args.celery], f"http://127.0.0.1:{port}")
                rows.append((f"Celery + Redis + requests ({args.celery})", rate,
                             f"prefork, {os.cpu_count()} processes"))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    pycurl_rate, aiohttp_rate = rows[0][1], rows[1][1]
    celery_rate = rows[-1][1] if args.celery else None
    arq_rate = next((rate for name, rate, _ in rows if name.startswith("arq")), None)
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.processor() or platform.machine()}"
          f" · {os.cpu_count()} cores · Python {platform.python_version()} · "
          f"{args.count} postbacks, {args.partners} endpoints\n")
    print("| run | postbacks/s | vs pycurl | vs aiohttp | vs Celery | vs arq | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")

    def ratio(rate: float | None, base: float | None) -> str:
        return f"{rate / base:.2f}" if rate and base else "—"

    for name, rate, notes in rows:
        shown = f"{rate:,.0f}" if rate else "not installed"
        print(f"| {name} | {shown} | {ratio(rate, pycurl_rate)} | {ratio(rate, aiohttp_rate)}"
              f" | {ratio(rate, celery_rate)} | {ratio(rate, arq_rate)} | {notes} |")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
