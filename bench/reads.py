"""Reads that must not grow with the delivery table: a partner's delivery list, its
filters and the web Deliveries page (with its 7-day chart), over N deliveries.

    .venv/bin/python bench/reads.py --count 10000000 --db sqlite,postgresql

The deliveries are made in SQL (``INSERT … SELECT`` over a generated series), all for one
partner, spread evenly over the last 30 days (so the 7-day chart covers 23 % of them): 97 %
succeeded, 1 % failed, 1 % retrying, 1 % due; triggers 60 % TRACKED, 20 % MODIFIED, 10 %
REVERSED, 10 % LOCKED, none PAID (a filter that finds nothing is the worst case for a scan).
Each read goes through the real app (``TestClient``: routing, auth, rendering) and the
median of 7 runs after one warm-up is printed, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from costs import world
from e2e import database
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from postback.asgi import create_app
from postback.config import Settings
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from postback.models import ApiKeyIn
from postback.sealing import new_key
from postback.services import accounts

DAYS = 30
READS: tuple[tuple[str, str], ...] = (
    ("list, newest 100", "/v1/deliveries?limit=100"),
    ("status=failed (1 %)", "/v1/deliveries?status=failed&limit=100"),
    ("status=pending (2 %)", "/v1/deliveries?status=pending&limit=100"),
    ("trigger=REVERSED (10 %)", "/v1/deliveries?trigger=REVERSED&limit=100"),
    ("trigger=PAID (none)", "/v1/deliveries?trigger=PAID&limit=100"),
    ("web Deliveries page", "/partner/deliveries"),
)


def fill(db: Engine, partner_id: int, setting_id: int, count: int) -> None:
    """``count`` deliveries for one partner, oldest first, in one statement."""
    start = datetime.now(UTC) - timedelta(days=DAYS)
    step = DAYS * 86400 / count
    status = ("CASE WHEN i % 100 = 0 THEN 'failed' WHEN i % 100 IN (1, 2) THEN 'pending' "
              "ELSE 'succeeded' END")
    trigger = ("CASE WHEN i % 10 < 6 THEN 'TRACKED' WHEN i % 10 < 8 THEN 'MODIFIED' "
               "WHEN i % 10 = 8 THEN 'REVERSED' ELSE 'LOCKED' END")
    columns = ("event_id, partner_id, setting_id, notification_type, trigger, status, method, "
               "url, headers, attempt_count, failures, next_attempt_at, open_claims, "
               "created_at")
    if db.dialect.name == "sqlite":
        at = (f"strftime('%Y-%m-%d %H:%M:%f', '{start:%Y-%m-%d %H:%M:%S}', "
              f"'+' || (i * {step}) || ' seconds')")
        sql = (f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
               f"WHERE i < {count}) INSERT INTO delivery ({columns}) SELECT "
               f"printf('%036d', i), {partner_id}, {setting_id}, 'action-lifecycle', "
               f"{trigger}, {status}, 'GET', 'http://127.0.0.1:9/pb?n=' || i, '{{}}', 1, "
               f"CASE WHEN i % 100 IN (0, 1) THEN 1 ELSE 0 END, {at}, 0, {at} FROM n")
    else:
        at = f"timestamptz '{start.isoformat()}' + i * interval '{step} seconds'"
        sql = (f"INSERT INTO delivery ({columns}) SELECT lpad(i::text, 36, '0'), "
               f"{partner_id}, {setting_id}, 'action-lifecycle', {trigger}, {status}, 'GET', "
               f"'http://127.0.0.1:9/pb?n=' || i, '{{}}', 1, "
               f"CASE WHEN i % 100 IN (0, 1) THEN 1 ELSE 0 END, {at}, 0, {at} "
               f"FROM generate_series(1, {count}) AS i")
    with db.begin() as conn:
        conn.execute(text(sql))
    settle(db)
    with db.connect() as conn:  # fresh statistics, as autovacuum / ANALYZE would keep them
        conn.execute(text("ANALYZE"))
        conn.commit()


def settle(db: Engine) -> None:
    """Whatever the service does in the background to keep reads cheap (none before
    issue #14's rollup; then, its compaction), done once, as the scheduler would."""
    try:
        from postback.services import rollup  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return
    while rollup.compact(db):
        pass
    rollup.vacuum(db)


def timed(call: Callable[[], Any], runs: int = 7) -> float:
    call()
    spent = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        spent.append(time.perf_counter() - t)
    return statistics.median(spent) * 1000


def measure(url: str, count: int) -> dict[str, float]:
    upgrade(url)
    db = make_engine(url)
    ids = world(db)
    with db.connect() as conn:
        setting = conn.execute(text("SELECT id FROM notification_setting")).scalar_one()
    t = time.perf_counter()
    fill(db, ids["partner_id"], setting, count)
    print(f"  {count:,} deliveries made in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    with db.begin() as conn:
        key = accounts.issue_key(conn, ApiKeyIn(account_type="partner",
                                                account_id=ids["partner_id"]))["key"]
    app = create_app(Settings(database_url=url, secret_key=new_key(), admin_token="x" * 32),
                     db)
    out: dict[str, float] = {}
    with TestClient(app, base_url="http://testserver") as client:
        signin = client.get("/signin").text
        token = signin.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        assert client.post("/signin", data={"api_key": key, "csrf_token": token,
                                            "next": "/"}).status_code == 200
        for name, path in READS:
            def call(path: str = path) -> None:
                headers = {} if path.startswith("/partner") else {
                    "Authorization": f"Bearer {key}"}
                response = client.get(path, headers=headers)
                assert response.status_code == 200, response.text[:300]
            out[name] = timed(call)
    db.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    results = {}
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory(dir=os.environ.get("POSTBACK_BENCH_TMP")) as tmp, \
                database(kind, Path(tmp)) as url:
            results[kind] = measure(url, args.count)
    kinds = list(results)
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} cores · "
          f"{args.count:,} deliveries for one partner · median ms of 7\n")
    print("| read | " + " | ".join(kinds) + " |")
    print("|---|" + "---:|" * len(kinds))
    for name, _path in READS:
        print(f"| {name} | " + " | ".join(f"{results[k][name]:.1f}" for k in kinds) + " |")


if __name__ == "__main__":
    main()
