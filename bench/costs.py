"""Where the time goes: CPU-side cost per action and per postback of each database step,
on SQLite and PostgreSQL, measured in-process (no HTTP).

    .venv/bin/python bench/costs.py

Prints microseconds per row for: reporting actions (ledger + outbox, 1000 per transaction),
claiming deliveries (batches of 1000) and recording their attempts (batches of 1000).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Engine

from postback.config import Settings
from postback.core.addresses import AddressPolicy
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from postback.delivery import queue
from postback.models import (
    ActionBatchIn,
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

PG = os.environ.get("POSTBACK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BATCH, ROUNDS = 1000, 5


def world(db: Engine) -> dict[str, int]:
    with db.begin() as c:
        brand = accounts.create_brand(c, BrandIn(name="b"))
        partner = accounts.create_partner(c, PartnerIn.model_validate(
            {"name": "p", "partner_type": "cashback"}))
        program = programs.create_program(c, brand["id"], ProgramIn(name="x", currency="USD"))
        etype = programs.add_event_type(c, brand["id"], program["id"],
                                        EventTypeIn(name="s", action_type="SALE"))
        programs.put_contract(c, brand["id"], program["id"], partner["id"],
                              ContractIn.model_validate({
                                  "event_type_ids": [etype["id"]],
                                  "locking": {"rule": "open_ended"},
                                  "clearing": {"rule": "days_after_locking"}}))
        ns.put_setting(c, partner["id"], "action-lifecycle", NotificationSettingIn(
            url="http://127.0.0.1:9/pb?t={SubId1}&a={ActionId}&p={Payout}&e={EventId}"),
            Settings(allow_targets=AddressPolicy.parse("127.0.0.0/8"), secret_key=new_key()))
    return {"brand": brand["id"], "program_id": program["id"],
            "event_type_id": etype["id"], "partner_id": partner["id"]}


def measure(url: str) -> dict[str, float]:
    upgrade(url)
    db = make_engine(url)
    ids = world(db)
    brand = ids.pop("brand")

    def batch() -> Any:
        return ActionBatchIn.model_validate({"actions": [{
            **ids, "oid": uuid.uuid4().hex, "amount": "100.00", "payout": "8.00",
            "sub_id1": "member-1", "event_date": "2026-11-02T18:04:05+00:00"}
            for _ in range(BATCH)]}).actions

    report = claim = record = 0.0
    for _ in range(ROUNDS):
        actions = batch()
        t = time.perf_counter()
        with db.begin() as conn:
            ledger.report_actions(conn, brand, actions, datetime.now(UTC), batch=True)
        report += time.perf_counter() - t
        t = time.perf_counter()
        jobs = queue.claim(db, "bench", BATCH, datetime.now(UTC), 60).jobs
        claim += time.perf_counter() - t
        now = datetime.now(UTC)
        results = [queue.Result(
            job=j, started_at=now, request_headers={"User-Agent": "postback", "webhook-id":
                                                    j.event_id},
            status_code=200, response_headers={"Content-Length": "2"}, response_body=b"OK",
            latency_ms=0.4, error_class=None, error_message=None, outcome="success",
            next_attempt_at=None) for j in jobs]
        t = time.perf_counter()
        queue.record(db, "bench", results, datetime.now(UTC))
        record += time.perf_counter() - t
    db.dispose()
    n = BATCH * ROUNDS / 1e6
    return {"report": report / n, "claim": claim / n, "record": record / n}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("SQLite", measure(f"sqlite:///{tmp}/costs.db")))
    name = f"postback_costs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        rows.append(("PostgreSQL", measure(PG.rsplit("/", 1)[0] + "/" + name)))
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"\n{datetime.now(UTC):%Y-%m-%d} · {os.cpu_count()} cores · "
          f"{BATCH * ROUNDS} rows per step, batches of {BATCH}\n")
    print("| database   | report µs/action | claim µs/postback | record µs/postback |")
    print("|------------|------------------|-------------------|--------------------|")
    for name, r in rows:
        print(f"| {name:<10} | {r['report']:>16.1f} | {r['claim']:>17.1f} "
              f"| {r['record']:>18.1f} |")


if __name__ == "__main__":
    main()
