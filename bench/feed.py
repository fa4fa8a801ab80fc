"""Produce one data feed of N actions (default 1,000,000) and measure what it costs: rows
per second and the producing process's peak RSS (the target: at most 200 MB).

    .venv/bin/python bench/feed.py [--rows 1000000] [--db sqlite,postgresql]
                                   [--format csv] [--gzip] [--pg postgresql://...]

Each database is fresh (a temporary SQLite file; a new PostgreSQL database on the server,
dropped at the end), migrated, and given N changes in the change log with one bulk SQL
statement (every action token, as a TRACKED change's postbacks compute them). A hosted
``since_last_run`` feed of 15 columns is then run once by ``run_feeds`` in a child process
(``--child``), so the peak RSS measured is the producing process's own: the file is read
from the database a page at a time, written through the format writer into a temporary
file, and stored in 1 MiB chunks. Bounded: one run, and the child is killed after
``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
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
from sqlalchemy import insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postback.config import Settings
from postback.core.tokens import ACTION_TOKENS, Kind
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from postback.db.schema import brand, feed, feed_run, partner, program
from postback.sealing import new_key

COLUMNS = ["ActionId", "Oid", "CampaignId", "MediaPartnerId", "Status", "StatusDetail",
           "Amount", "Payout", "Currency", "EventDate", "LockingDate", "SubId1", "Sequence",
           "Trigger", "Items"]
PG = os.environ.get("POSTBACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def template() -> str:
    values = {t.name: json.loads(t.example) if t.kind is Kind.ITEMS else t.example
              for t in ACTION_TOKENS if t.name != "EventId"}
    return json.dumps(values, separators=(",", ":"))


def fill(url: str, rows: int, fmt: str, gzip: bool) -> float:
    """Accounts, ``rows`` change-log rows in one statement, a feed and its queued run."""
    engine = make_engine(url)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(insert(brand).values(id=1, name="Acme", created_at=now))
        conn.execute(insert(partner).values(id=1, name="Cashback World",
                                            partner_type="cashback", created_at=now))
        conn.execute(insert(program).values(id=1, brand_id=1, name="Acme US",
                                            currency="USD", created_at=now))
        if engine.dialect.name == "sqlite":
            conn.execute(text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                "WHERE i < :rows) "
                "INSERT INTO change_log (txid, kind, change_id, brand_id, program_id, "
                "partner_id, subject, \"trigger\", sequence, \"values\", created_at) "
                "SELECT 0, 'action', printf('%08d-0000-7000-8000-000000000000', i), 1, 1, 1, "
                "CAST(i AS TEXT), 'TRACKED', 1, json_set(:tpl, '$.ActionId', CAST(i AS TEXT), "
                "'$.Oid', 'ORD-' || i), '2026-12-01 00:00:00.000000' FROM n"),
                {"rows": rows, "tpl": template()})
        else:
            conn.execute(text(
                "INSERT INTO change_log (txid, kind, change_id, brand_id, program_id, "
                "partner_id, subject, \"trigger\", sequence, \"values\", created_at) "
                "SELECT 1, 'action', lpad(i::text, 8, '0') || "
                "'-0000-7000-8000-000000000000', 1, 1, 1, i::text, 'TRACKED', 1, "
                "(CAST(:tpl AS jsonb) || jsonb_build_object('ActionId', i::text, "
                "'Oid', 'ORD-' || i))::json, now() FROM generate_series(1, :rows) i"),
                {"rows": rows, "tpl": template()})
        conn.execute(insert(feed).values(
            id=1, partner_id=1, name="bench", content="actions", program_id=None,
            schedule={"every": "daily", "at": "06:00", "day": None, "time_zone": "UTC"},
            window_days=None, format=fmt, gzip=gzip, header=True, columns=COLUMNS,
            destination={"kind": "hosted"}, destination_rev=0, enabled=False,
            created_at=now, updated_at=now))
        conn.execute(insert(feed_run).values(
            feed_id=1, trigger="manual", status="queued", phase="queued",
            next_attempt_at=now, created_at=now))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE change_log"))
    engine.dispose()
    return time.monotonic() - started


def child(url: str) -> None:
    """Run the feed once; print what the run recorded and this process's peak RSS."""
    from postback.services.feed_runs import run_feeds

    settings = Settings(database_url=url, secret_key=new_key())
    engine = make_engine(url)
    started = time.monotonic()
    done = run_feeds(engine, settings, lease_seconds=120.0)
    elapsed = time.monotonic() - started
    with engine.connect() as conn:
        run = conn.execute(select(feed_run)).mappings().one()
    print(json.dumps({"done": done, "status": run["status"], "error": run["error"],
                      "rows": run["rows"], "bytes": run["bytes"],
                      "duration_ms": run["duration_ms"], "seconds": round(elapsed, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF)
                                           .ru_maxrss / 1024, 1)}))


def bench(kind: str, rows: int, fmt: str, gzip: bool, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="postback-feed-bench-") as tmp:
        if kind == "sqlite":
            url, cleanup = f"sqlite:///{tmp}/bench.db", None
        else:
            name = f"postback_feed_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url, cleanup = PG.rsplit("/", 1)[0] + "/" + name, name
        try:
            upgrade(url)
            fill_seconds = fill(url, rows, fmt, gzip)
            out = subprocess.run([sys.executable, __file__, "--child", url],
                                 capture_output=True, text=True, timeout=timeout, check=True)
            result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            result.update(db=kind, fill_seconds=round(fill_seconds, 1),
                          rows_per_second=round(result["rows"] / (result["duration_ms"] / 1000))
                          if result["rows"] else 0)
            return result
        finally:
            if cleanup:
                with psycopg.connect(PG, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{cleanup}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--format", default="csv",
                        choices=["csv", "tab", "pipe", "xml", "jsonl"])
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--child", metavar="URL")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
          f"{args.rows:,} actions, {args.format}{' gzip' if args.gzip else ''}")
    for kind in args.db.split(","):
        r = bench(kind, args.rows, args.format, args.gzip, args.timeout)
        print(f"{kind:10} {r['status']:9} {r['rows']:>9,} rows  {r['bytes'] / 1e6:8.1f} MB  "
              f"produced in {r['duration_ms'] / 1000:6.1f} s = {r['rows_per_second']:>7,} "
              f"rows/s  peak RSS {r['peak_rss_mb']:6.1f} MB  (filled in {r['fill_seconds']} s)"
              + (f"  error: {r['error']}" if r["error"] else ""), flush=True)


if __name__ == "__main__":
    main()
