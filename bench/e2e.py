"""End to end: actions reported through the API → postbacks received, per second (at
saturation), and event-to-receipt latency (at a steady offered load), on SQLite and
PostgreSQL, beside a bare aiohttp loop sending the same requests to the same receiver
(the ceiling). Latency runs from the moment the batch is sent to the API to the moment
the receiver has the postback.

    .venv/bin/python bench/e2e.py [--actions 20000] [--batch 1000] [--partners 10]

Everything runs on loopback and stops by itself (bounded count, bounded time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "bench-admin-token"
PG = os.environ.get("POSTBACK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
DEADLINE = 300.0  # seconds any one phase may take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body.startswith(b"{") else body


def wait_http(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def receiver_process() -> Iterator[str]:
    """``bench/receiver.py`` in a process of its own, ready; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "receiver.py"), str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/__reset")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh database: a SQLite file under ``tmp``, or a PostgreSQL database on ``PG``
    dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db"
        return
    name = f"postback_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def ceiling(urls: list[str], concurrency: int = 512) -> float:
    """Bare aiohttp: the same GETs, as fast as one process can send them."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(urls)

        async def run() -> None:
            for url in queue:
                async with session.get(url) as resp:
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(run() for _ in range(concurrency)))
        return len(urls) / (time.perf_counter() - started)


class Service:
    def __init__(self, db_url: str, workdir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "POSTBACK_DATABASE_URL": db_url, "POSTBACK_ADMIN_TOKEN": ADMIN,
               "POSTBACK_ALLOW_TARGETS": "127.0.0.0/8"}
        # serve supervises the API, the scheduler and ``workers`` engine processes
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "postback", "serve", "--port", str(self.port),
             "--workers", str(workers)],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        wait_http(f"{self.api}/healthz")

    def call(self, method: str, path: str, key: str, body: Any) -> Any:
        req = urllib.request.Request(f"{self.api}{path}", method=method,
                                     data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def setup(service: Service, partners: int, receiver: str, hole: str | None = None,
          catalog: bool = False) -> tuple[str, list[dict[str, int]]]:
    """A brand, a program and ``partners`` partners with a GET postback each to
    ``receiver`` (the first partner's to ``hole`` instead, when given); with ``catalog``,
    each also with a Product Data Change postback to ``receiver``."""
    brand = service.call("POST", "/v1/brands", ADMIN, {"name": "Bench Brand"})
    bkey = service.call("POST", "/v1/api-keys", ADMIN,
                        {"account_type": "brand", "account_id": brand["id"]})["key"]
    program = service.call("POST", "/v1/programs", bkey, {"name": "Bench", "currency": "USD"})
    etype = service.call("POST", f"/v1/programs/{program['id']}/event-types", bkey,
                         {"name": "Sale", "action_type": "SALE"})
    targets = []
    for i in range(partners):
        partner = service.call("POST", "/v1/partners", ADMIN,
                               {"name": f"P{i}", "partner_type": "cashback"})
        pkey = service.call("POST", "/v1/api-keys", ADMIN,
                            {"account_type": "partner", "account_id": partner["id"]})["key"]
        service.call("PUT", f"/v1/programs/{program['id']}/contracts/{partner['id']}", bkey,
                     {"event_type_ids": [etype["id"]], "locking": {"rule": "open_ended"},
                      "clearing": {"rule": "days_after_locking", "days": 0}})
        base = hole if hole and i == 0 else receiver
        service.call("PUT", "/v1/event-notifications/action-lifecycle", pkey,
                     {"url": f"{base}/pb/{i}?t={{SubId1}}&a={{ActionId}}&p={{Payout}}"
                             "&s={Status}&e={EventId}", "method": "GET"})
        if catalog:
            service.call("PUT", "/v1/event-notifications/product-data-change", pkey,
                         {"url": f"{receiver}/cat/{i}?i={{CatalogItemId}}&c={{ChangeType}}"
                                 "&p={CurrentPrice}&e={EventId}", "method": "GET"})
        targets.append({"program_id": program["id"], "event_type_id": etype["id"],
                        "partner_id": partner["id"]})
    return bkey, targets


def report(service: Service, bkey: str, targets: list[dict[str, int]], count: int,
           offset: int) -> None:
    """One batch; each action's SubId1 carries its send time, echoed back as ``t=``."""
    now = f"{time.time():.6f}"
    service.call("POST", "/v1/actions/batch", bkey, {"actions": [{
        **targets[(offset + i) % len(targets)], "oid": uuid.uuid4().hex,
        "amount": "100.00", "payout": "8.00", "sub_id1": now,
        "event_date": "2026-11-02T18:04:05+00:00"} for i in range(count)]})


def wait_received(receiver: str, count: int) -> Any:
    deadline = time.monotonic() + DEADLINE
    while (stats := get(f"{receiver}/__stats"))["count"] < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {stats['count']} of {count} postbacks arrived")
        time.sleep(0.05)
    return stats


def run_engine(db_url: str, workdir: Path, receiver: str, actions: int, batch: int,
               partners: int, rate: int, seconds: float, workers: int = 1) -> dict[str, float]:
    """Saturation (as fast as the API takes batches), then a steady offered load."""
    service = Service(db_url, workdir, workers)
    try:
        bkey, targets = setup(service, partners, receiver)
        get(f"{receiver}/__reset")
        started = time.time()
        for sent in range(0, actions, batch):
            report(service, bkey, targets, batch, sent)
        reported = time.time()
        stats = wait_received(receiver, actions)
        saturated = {"per_s": actions / (stats["last"] - started),
                     "ingest_per_s": actions / (reported - started)}

        get(f"{receiver}/__reset")
        tick = 0.05
        per_tick = max(1, round(rate * tick))
        ticks = int(seconds / tick)
        start = time.monotonic()
        for n in range(ticks):
            report(service, bkey, targets, per_tick, n * per_tick)
            time.sleep(max(0.0, start + (n + 1) * tick - time.monotonic()))
        stats = wait_received(receiver, ticks * per_tick)
        lat = [x * 1000 for x in stats["latencies"]]
        return {**saturated, "p50": statistics.median(lat), "p99": percentile(lat, 99)}
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actions", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--partners", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1000, help="steady load, actions/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady load duration")
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, float]]] = []
    with receiver_process() as receiver:
        urls = [f"{receiver}/pb/{i % args.partners}?a={i}&p=8.00&s=PENDING"
                f"&e={uuid.uuid4()}" for i in range(args.actions)]
        get(f"{receiver}/__reset")
        rows.append(("bare aiohttp loop (ceiling)", {"per_s": asyncio.run(ceiling(urls))}))
        with tempfile.TemporaryDirectory() as tmp:
            for workers in (1, 2):
                label = f" --workers {workers}"
                rows.append((f"postback serve{label}, SQLite", run_engine(
                    f"sqlite:///{tmp}/bench{workers}.db", Path(tmp), receiver, args.actions,
                    args.batch, args.partners, args.rate, args.seconds, workers)))
                if args.skip_pg:
                    continue
                with database("postgresql", Path(tmp)) as url:
                    rows.append((f"postback serve{label}, PostgreSQL", run_engine(
                        url, Path(tmp), receiver, args.actions, args.batch, args.partners,
                        args.rate, args.seconds, workers)))

    ceiling_rate = rows[0][1]["per_s"]
    print(f"\n{datetime.now(UTC):%Y-%m-%d} · {platform.node()} · {os.cpu_count()} cores · "
          f"Python {platform.python_version()} · {args.actions} actions in batches of "
          f"{args.batch} to {args.partners} partners; latency at a steady {args.rate} "
          f"actions/s for {args.seconds:.0f} s (batches every 50 ms)\n")
    print(f"| {'run':<37} | {'postbacks/s':>11} | {'vs ceiling':>10} | {'ingest/s':>9} "
          f"| {'p50 ms':>8} | {'p99 ms':>8} |")
    print(f"|{'-' * 39}|{'-' * 13}|{'-' * 12}|{'-' * 11}|{'-' * 10}|{'-' * 10}|")
    for name, r in rows:
        def cell(key: str, width: int, r: dict[str, float] = r) -> str:
            return f"{r[key]:>{width}.0f}" if key in r else f"{'—':>{width}}"
        print(f"| {name:<37} | {cell('per_s', 11)} | {r['per_s'] / ceiling_rate:>10.2f} "
              f"| {cell('ingest_per_s', 9)} | {cell('p50', 8)} | {cell('p99', 8)} |")


if __name__ == "__main__":
    main()
