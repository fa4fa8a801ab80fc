"""Catalog fan-out: a bulk upsert of ``--items`` items to a program with ``--partners``
contracted partners, each with a Product Data Change setting, sent to `postback serve` as a
user runs it (its default processes). Measured: how long the brand's request takes to
answer; how fast its items-by-partners postbacks arrive, beside the same service's drain
rate for a burst of actions; and, all the while, the latency of lifecycle postbacks of
actions reported at ``--rate`` a second, beside the same rate with no catalog change.

    .venv/bin/python bench/catalog.py [--items 10000] [--partners 100] [--rate 20]
                                      [--db sqlite,postgresql] [--drain 50000]

Everything runs on loopback and stops by itself (bounded count, bounded time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from e2e import Service, database, get, percentile, receiver_process, setup
from load import wait_for

LIMIT = 900.0  # seconds the fan-out's postbacks may take to arrive
TICK = 0.1


class Lifecycle(threading.Thread):
    """Actions at ``rate`` a second, round the partners, until stopped."""

    def __init__(self, service: Service, bkey: str, targets: list[dict[str, int]],
                 rate: int) -> None:
        super().__init__(daemon=True)
        self.service, self.bkey, self.targets = service, bkey, targets
        self.per_tick = max(1, round(rate * TICK))
        self.sent = 0
        self.errors = 0  # batches the API refused (before: the write lock held for minutes)
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self.halt.is_set():
            now = f"{time.time():.6f}"
            try:
                self.service.call("POST", "/v1/actions/batch", self.bkey, {"actions": [{
                    **self.targets[(self.sent + i) % len(self.targets)],
                    "oid": uuid.uuid4().hex, "amount": "100.00", "payout": "8.00",
                    "sub_id1": now, "event_date": "2026-11-02T18:04:05+00:00"}
                    for i in range(self.per_tick)]})
                self.sent += self.per_tick
            except OSError:  # urllib's HTTPError and timeouts
                self.errors += 1
            n += 1
            pause = start + n * TICK - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def latency(stats: dict[str, Any]) -> tuple[float, float]:
    lat = [x * 1000 for x in stats["latencies"]]
    return (statistics.median(lat), percentile(lat, 99)) if lat else (float("nan"),) * 2


def split(db_url: str, since: float) -> tuple[float, float]:
    """p99 of the lifecycle postbacks' time in the API (sent → committed) and queued
    (committed → first attempt started), in ms, from the database."""
    from sqlalchemy import select

    from postback.db.engine import make_engine
    from postback.db.schema import action, delivery, delivery_attempt

    db = make_engine(db_url)
    try:
        with db.connect() as conn:
            rows = conn.execute(
                select(action.c.sub_id1, delivery.c.created_at, delivery_attempt.c.started_at)
                .join(delivery, delivery.c.action_id == action.c.id)
                .join(delivery_attempt, (delivery_attempt.c.delivery_id == delivery.c.id)
                      & (delivery_attempt.c.number == 1))
                .where(action.c.sub_id1.is_not(None))).all()
    finally:
        db.dispose()
    rows = [r for r in rows if float(r.sub_id1) >= since - 1]
    if not rows:
        return float("nan"), float("nan")
    ingest = [(r.created_at.timestamp() - float(r.sub_id1)) * 1000 for r in rows]
    queued = [(r.started_at - r.created_at).total_seconds() * 1000 for r in rows]
    return percentile(ingest, 99), percentile(queued, 99)


def long_call(service: Service, path: str, key: str, body: Any) -> Any:
    """A call that may take minutes (the bulk upsert, before its fan-out left the
    request)."""
    req = urllib.request.Request(f"{service.api}{path}", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=LIMIT) as r:
        return json.loads(r.read())


def run(db_url: str, tmp: Path, receiver: str, items: int, partners: int, rate: int,
        drain: int, answer_only: bool = False) -> dict[str, float]:
    service = Service(db_url, tmp, workers=os.cpu_count() or 1)
    try:
        bkey, targets = setup(service, partners, receiver, catalog=True)
        program_id = targets[0]["program_id"]
        # the service's drain rate: a burst of actions, one postback each
        get(f"{receiver}/__reset")
        started = time.time()
        for sent in range(0, drain, 1000):
            service.call("POST", "/v1/actions/batch", bkey, {"actions": [{
                **targets[(sent + i) % len(targets)], "oid": uuid.uuid4().hex,
                "amount": "1.00", "payout": "0.10", "event_date": "2026-11-02T18:04:05+00:00"}
                for i in range(min(1000, drain - sent))]})
        stats = wait_for(receiver, drain, LIMIT)
        drain_rate = stats["count"] / (stats["last"] - started)
        # lifecycle latency with no catalog change
        get(f"{receiver}/__reset")
        quiet = Lifecycle(service, bkey, targets, rate)
        quiet.start()
        time.sleep(10)
        quiet.halt.set()
        quiet.join()
        alone = latency(wait_for(receiver, quiet.sent, 30))
        # the catalog change, lifecycle postbacks meanwhile
        get(f"{receiver}/__reset")
        busy = Lifecycle(service, bkey, targets, rate)
        busy.start()
        time.sleep(1)
        body = {"items": [{"item_id": f"SKU-{n}", "name": f"Item {n}", "current_price": "19.99",
                           "currency": "USD", "url": f"https://shop.example/p/{n}",
                           "category": "Bench"} for n in range(items)]}
        sent_at = time.time()
        t = time.perf_counter()
        try:
            answer = long_call(service, f"/v1/programs/{program_id}/catalog/items/bulk", bkey,
                               body)
        except TimeoutError:
            raise SystemExit(f"the bulk upsert did not answer within {LIMIT:g} s") from None
        answered = time.perf_counter() - t
        if answer_only:
            busy.halt.set()
            busy.join()
            return {"answer_s": answered, "lifecycle_errors": busy.errors}
        assert answer["added"] == items, answer
        expected = items * partners
        deadline = time.monotonic() + LIMIT
        while (stats := get(f"{receiver}/__stats"))["count"] - busy.sent < expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        busy.halt.set()
        busy.join()
        stats = wait_for(receiver, expected + busy.sent, 30)
        during = latency(stats)
        ingest, queued = split(db_url, sent_at)
        return {"answer_s": answered, "expected": expected,
                "catalog_received": stats["count"] - len(stats["latencies"]),
                "catalog_rate": (stats["count"] - len(stats["latencies"]))
                / (stats["last"] - sent_at),
                "drain_rate": drain_rate, "alone_p50": alone[0], "alone_p99": alone[1],
                "during_p50": during[0], "during_p99": during[1],
                "ingest_p99": ingest, "queued_p99": queued,
                "lifecycle": len(stats["latencies"]), "lifecycle_sent": busy.sent}
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--partners", type=int, default=100)
    parser.add_argument("--rate", type=int, default=20, help="lifecycle actions a second")
    parser.add_argument("--drain", type=int, default=50_000,
                        help="actions of the drain-rate burst")
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--answer-only", action="store_true",
                        help="stop once the bulk upsert has answered (for the code before)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, receiver_process() as receiver:
        for kind in args.db.split(","):
            with database(kind, Path(tmp)) as url:
                rows.append((kind, run(url, Path(tmp), receiver, args.items, args.partners,
                                       args.rate, args.drain, args.answer_only)))
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · "
          f"{os.cpu_count()} cores · {args.items:,} items, {args.partners} partners, "
          f"lifecycle at {args.rate}/s\n")
    if args.answer_only:
        for kind, r in rows:
            print(f"| {kind} | bulk answered in {r['answer_s']:.2f} s | lifecycle batches "
                  f"refused meanwhile: {r['lifecycle_errors']} |")
        return
    print("| database | bulk answered in | catalog postbacks | catalog /s | drain /s "
          "| ratio | lifecycle p50 / p99 alone | during | p99 in the API / queued |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, r in rows:
        print(f"| {kind} | {r['answer_s']:.2f} s | {r['catalog_received']:,} of "
              f"{r['expected']:,} | {r['catalog_rate']:,.0f} | {r['drain_rate']:,.0f} "
              f"| {r['catalog_rate'] / r['drain_rate']:.2f} "
              f"| {r['alone_p50']:.1f} / {r['alone_p99']:.1f} ms "
              f"| {r['during_p50']:.1f} / {r['during_p99']:.1f} ms "
              f"({r['lifecycle']} of {r['lifecycle_sent']}) "
              f"| {r['ingest_p99']:.1f} / {r['queued_p99']:.1f} ms |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
