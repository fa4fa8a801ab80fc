"""The Deliveries chart's rollup equals the deliveries themselves, whatever happened to
them and whenever it is read; folding it is exactly-once; old attempt bodies go."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, case, func, insert, select, text, update

from postback.config import Settings
from postback.core.retry import RetryPolicy
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from postback.db.schema import delivery, delivery_attempt, delivery_hourly, delivery_hourly_delta
from postback.services import rollup
from tests.conftest import World, build_world, fresh_pg_database
from tests.receiver import Answer, Received, Receiver


def direct(conn: Connection, partner_id: int, since: datetime) -> dict[datetime, dict[str, int]]:
    """The chart counted from every delivery row (the query the rollup replaced)."""
    if conn.dialect.name == "postgresql":
        hour: Any = func.to_char(func.timezone("UTC", delivery.c.created_at),
                                 "YYYY-MM-DD HH24")
    else:
        hour = func.substr(delivery.c.created_at, 1, 13)
    state = case((delivery.c.status == "succeeded", "delivered"),
                 (delivery.c.status == "failed", "failed"),
                 ((delivery.c.status == "pending") & (delivery.c.failures > 0), "retrying"),
                 else_="due")
    out: dict[datetime, dict[str, int]] = {}
    for row in conn.execute(select(hour.label("hour"), state.label("state"),
                                   func.count().label("n"))
                            .where(delivery.c.partner_id == partner_id)
                            .group_by(hour, state)):
        at = datetime.strptime(row.hour, "%Y-%m-%d %H").replace(tzinfo=UTC)
        if at >= since.replace(minute=0, second=0, microsecond=0):
            out.setdefault(at, dict.fromkeys(rollup.STATES, 0))[row.state] = row.n
    return out


def chart(world: World) -> dict[datetime, dict[str, int]]:
    with world.service.db.connect() as conn:
        return rollup.hourly_outcomes(conn, world.partner_id, datetime.now(UTC) - timedelta(days=7))


def truth(world: World) -> dict[datetime, dict[str, int]]:
    with world.service.db.connect() as conn:
        return direct(conn, world.partner_id, datetime.now(UTC) - timedelta(days=7))


def deltas(world: World) -> int:
    with world.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(delivery_hourly_delta))
                   .scalar_one())


def settled(world: World, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while world.partner("GET", "/v1/deliveries?status=pending", 200)["items"]:
        assert time.monotonic() < deadline, "deliveries still pending"
        time.sleep(0.05)


def test_the_chart_counts_every_state_a_delivery_went_through(make_service: Any) -> None:
    """Succeeded at once, succeeded after retries, failed for good, held by an off
    setting, resent: at each step the rollup (folded or not) equals the rows."""
    service = make_service(retry=RetryPolicy(schedule=(0.05, 0.05), jitter=0.0,
                                             throttle_floor=0.0))
    world = build_world(service)
    tries: dict[str, int] = {}
    fixed = threading.Event()  # the partner mends its server

    def answer(req: Received) -> Answer:
        kind = req.query["s"]
        tries[req.query["e"]] = tries.get(req.query["e"], 0) + 1
        if kind == "ok" or fixed.is_set() or (kind == "late" and tries[req.query["e"]] > 1):
            return Answer(200)
        return Answer(500)

    receiver = Receiver(answer)
    try:
        url = f"{receiver.url}/pb?s={{SubId1}}&e={{EventId}}"
        world.subscribe(url)
        for kind in ("ok", "ok", "ok", "late", "late", "bad"):
            world.report(sub_id1=kind)
        settled(world)
        got = chart(world)
        assert got == truth(world)
        (hour,) = got
        assert got[hour] == {"delivered": 5, "retrying": 0, "failed": 1, "due": 0}
        assert deltas(world) > 0  # not folded yet: the read added the deltas

        while rollup.compact(world.service.db):
            pass
        assert deltas(world) == 0 and chart(world) == got

        # the failed one resent, to a receiver that now takes it
        failed = world.partner("GET", "/v1/deliveries?status=failed", 200)["items"][0]
        fixed.set()
        world.partner("POST", f"/v1/deliveries/{failed['id']}/resend", 200)
        settled(world)
        assert chart(world) == truth(world)
        assert chart(world)[hour] == {"delivered": 6, "retrying": 0, "failed": 0, "due": 0}
    finally:
        receiver.close()


def test_held_resumed_and_discarded_deliveries_are_counted(make_service: Any) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    url = "http://127.0.0.1:9/pb?e={EventId}"
    world.subscribe(url)
    for _ in range(3):
        world.report()
    (hour,) = chart(world)
    assert chart(world)[hour] == {"delivered": 0, "retrying": 0, "failed": 0, "due": 3}
    world.partner("PUT", "/v1/event-notifications/action-lifecycle", 200,
                  json={"url": url, "enabled": False})
    assert world.partner("GET", "/v1/deliveries?status=held", 200)["items"]
    assert chart(world) == truth(world)  # held is "due" on the chart
    rollup.compact(service.db)
    world.partner("POST", "/v1/event-notifications/action-lifecycle/held/discard", 200)
    assert chart(world) == truth(world)
    assert chart(world)[hour] == {"delivered": 0, "retrying": 0, "failed": 3, "due": 0}


def _rows(world: World, count: int, hours_ago: int = 0) -> None:
    at = datetime.now(UTC) - timedelta(hours=hours_ago)
    with world.service.db.begin() as conn:
        conn.execute(insert(delivery), [{
            "event_id": f"e{hours_ago}-{i}", "partner_id": world.partner_id,
            "notification_type": "action-lifecycle", "trigger": "TRACKED",
            "status": "pending", "method": "GET", "url": "http://127.0.0.1:9/",
            "headers": {}, "attempt_count": 0, "failures": 0, "next_attempt_at": at,
            "created_at": at} for i in range(count)])


def test_a_pg_insert_statement_writes_a_delta_per_hour_and_state(make_service: Any) -> None:
    """A bulk INSERT (one statement of many rows) on PostgreSQL: one delta per hour and
    state, not one per row (SQLite's triggers are per row only)."""
    service = make_service(start_engine=False)
    world = build_world(service)
    at = datetime.now(UTC)
    with service.db.begin() as conn:
        conn.execute(insert(delivery).values([{
            "event_id": f"e{i}", "partner_id": world.partner_id, "setting_id": None,
            "action_id": None, "inquiry_id": None, "item_id": None, "change_id": None,
            "replay_id": None, "body": None, "notification_type": "action-lifecycle",
            "trigger": "TRACKED", "status": "pending", "method": "GET",
            "url": "http://127.0.0.1:9/", "headers": {}, "attempt_count": 0, "failures": 0,
            "next_attempt_at": at, "created_at": at} for i in range(500)]))
    expected = 1 if service.db.dialect.name == "postgresql" else 500
    assert deltas(world) == expected
    assert chart(world) == truth(world)


def test_concurrent_folds_count_each_change_once(make_service: Any) -> None:
    """Four folders at once (small batches, so they overlap) while rows are written and
    changed: every delta is folded by exactly one of them."""
    service = make_service(start_engine=False)
    world = build_world(service)
    stop = threading.Event()
    errors: list[BaseException] = []

    def fold() -> None:
        try:
            while not stop.is_set():
                rollup.compact(service.db)
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    folders = [threading.Thread(target=fold) for _ in range(4)]
    old = rollup.FOLD_BATCH
    rollup.FOLD_BATCH = 7
    try:
        for t in folders:
            t.start()
        for round_ in range(20):
            _rows(world, 25, hours_ago=round_ % 3)
            with service.db.begin() as conn:
                conn.execute(update(delivery).where(delivery.c.id % 3 == round_ % 3)
                             .values(status="succeeded", attempt_count=1))
    finally:
        stop.set()
        for t in folders:
            t.join(30)
        rollup.FOLD_BATCH = old
    assert not errors
    while rollup.compact(service.db):
        pass
    assert deltas(world) == 0
    assert chart(world) == truth(world)
    assert sum(sum(c.values()) for c in chart(world).values()) == 500


def test_hours_are_utc_whatever_the_session_time_zone(make_service: Any) -> None:
    """A delivery made at 23:59:59.999999 UTC (05:29 the next day in Kolkata, the session's
    zone on PostgreSQL) counts in the 23:00 UTC hour, on both databases."""
    service = make_service(start_engine=False)
    world = build_world(service)
    at = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
    with service.db.begin() as conn:
        if service.db.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL TIME ZONE 'Asia/Kolkata'"))
        conn.execute(insert(delivery).values(
            event_id="e", partner_id=world.partner_id, notification_type="action-lifecycle",
            trigger="TRACKED", status="failed", method="GET", url="http://127.0.0.1:9/",
            headers={}, attempt_count=1, failures=1, next_attempt_at=at, created_at=at))
    for fold in (False, True):
        if fold:
            rollup.compact(service.db)
        with service.db.connect() as conn:
            got = rollup.hourly_outcomes(conn, world.partner_id, at - timedelta(hours=1))
        assert got == {datetime(2026, 11, 30, 23, tzinfo=UTC):
                       {"delivered": 0, "retrying": 0, "failed": 1, "due": 0}}


def test_a_read_while_folds_commit_sees_each_delivery_once(make_service: Any,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The rollup and the unfolded deltas are read in one snapshot: a fold that commits
    during a read neither hides its batch nor counts it twice."""
    service = make_service(start_engine=False)
    if service.db.dialect.name == "sqlite":
        pytest.skip("SQLite's transactions here take the write lock at BEGIN: a read never "
                    "overlaps a fold")
    world = build_world(service)
    for hours_ago in range(5):
        _rows(world, 300, hours_ago=hours_ago)
    monkeypatch.setattr(rollup, "FOLD_BATCH", 1)
    seen: list[int] = []
    stop = threading.Event()

    def fold() -> None:
        while rollup.compact(service.db) and not stop.is_set():
            pass

    folders = [threading.Thread(target=fold) for _ in range(2)]
    for t in folders:
        t.start()
    try:
        while any(t.is_alive() for t in folders) and len(seen) < 2000:
            seen.append(sum(sum(c.values()) for c in chart(world).values()))
    finally:
        stop.set()
        for t in folders:
            t.join(30)
    assert len(seen) > 5 and deltas(world) == 0
    assert set(seen) == {1500}


def test_the_triggers_are_there(db_url: str) -> None:
    """A later migration that rebuilds ``delivery`` (SQLite's copy-and-rename) would drop
    them silently; this says so."""
    db = make_engine(db_url)
    try:
        with db.connect() as conn:
            if db.dialect.name == "sqlite":
                names = set(conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name = 'delivery'")).scalars())
            else:
                names = set(conn.execute(text(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'delivery'::regclass "
                    "AND NOT tgisinternal")).scalars())
    finally:
        db.dispose()
    assert names == {"tr_delivery_hourly_insert", "tr_delivery_hourly_update"}


def test_the_upgrade_counts_the_deliveries_already_there(db_url: str, tmp_path: Any) -> None:
    """From 0011 with deliveries in it: after the upgrade the chart shows them."""
    if db_url.startswith("sqlite"):
        _upgrade_with_rows(f"sqlite:///{tmp_path}/old.db")
    else:  # a database of its own, at 0011
        with fresh_pg_database() as url:
            _upgrade_with_rows(url)


def _upgrade_with_rows(url: str) -> None:
    upgrade(url, "0011")
    db = make_engine(url)
    now = datetime.now(UTC)
    with db.begin() as conn:
        conn.execute(text("INSERT INTO partner (name, partner_type, created_at) "
                          "VALUES ('p', 'cashback', :at)"), {"at": now.replace(tzinfo=None)})
        conn.execute(insert(delivery), [{
            "event_id": f"e{i}", "partner_id": 1, "notification_type": "action-lifecycle",
            "trigger": "TRACKED", "status": ("succeeded", "failed", "pending")[i % 3],
            "method": "GET", "url": "http://127.0.0.1:9/", "headers": {},
            "attempt_count": 1, "failures": i % 2, "next_attempt_at": now,
            "created_at": now - timedelta(hours=i % 2)} for i in range(12)])
    db.dispose()
    upgrade(url)
    db = make_engine(url)
    try:
        with db.connect() as conn:
            since = now - timedelta(days=1)
            assert rollup.hourly_outcomes(conn, 1, since) == direct(conn, 1, since)
            assert sum(sum(c.values()) for c in direct(conn, 1, since).values()) == 12
    finally:
        db.dispose()


def _attempts(world: World, ages_days: list[float], bodies: list[int] | None = None
              ) -> list[int]:
    _rows(world, 1)
    now = datetime.now(UTC)
    with world.service.db.begin() as conn:
        (delivery_id,) = conn.execute(select(delivery.c.id)).scalars()
        return list(conn.execute(insert(delivery_attempt).returning(delivery_attempt.c.id), [{
            "delivery_id": delivery_id, "number": i + 1,
            "started_at": now - timedelta(days=age), "method": "GET",
            "url": "http://127.0.0.1:9/", "request_headers": {}, "status_code": 200,
            "response_headers": {},
            "response_body": f"body {i}" if bodies is None or bodies[i] else None,
            "response_body_raw": b"\x00raw" if i % 2 and bodies is None else None,
            "latency_ms": 1.0,
            "outcome": "success"} for i, age in enumerate(ages_days)]).scalars())


def _bodies(world: World) -> list[tuple[str | None, bytes | None, int | None]]:
    with world.service.db.connect() as conn:
        return [(r.response_body, r.response_body_raw, r.status_code) for r in conn.execute(
            select(delivery_attempt).order_by(delivery_attempt.c.id))]


def test_retention_empties_old_bodies_only_and_keeps_the_attempts(
        make_service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    # in id order: old, old, one still inside the horizon, then old again (a late record)
    _attempts(world, [40, 35, 10, 31, 2])
    monkeypatch.setattr(rollup, "PRUNE_BATCH", 2)
    now = datetime.now(UTC)
    assert rollup.prune(service.db, now, 0)["attempt_bodies_emptied"] == 0  # 0: keep all
    assert rollup.prune(service.db, now, 30)["attempt_bodies_emptied"] == 2
    # the walk stops at the attempt inside the horizon, and waits there
    assert rollup.prune(service.db, now, 30)["attempt_bodies_emptied"] == 0
    got = _bodies(world)
    assert got[:2] == [(None, None, 200), (None, None, 200)]
    assert got[2:] == [("body 2", None, 200), ("body 3", b"\x00raw", 200), ("body 4", None, 200)]
    # twenty days later the one at 10 days is past it too, and the walk goes on
    later = now + timedelta(days=21)
    assert rollup.prune(service.db, later, 30)["attempt_bodies_emptied"] == 2
    assert [b[0] for b in _bodies(world)] == [None, None, None, None, "body 4"]
    # the attempts themselves stay, readable through the API
    page = world.partner("GET", "/v1/deliveries", 200)["items"]
    detail = world.partner("GET", f"/v1/deliveries/{page[0]['id']}", 200)
    assert [a["response"]["status"] for a in detail["attempts"]] == [200] * 5
    assert detail["attempts"][0]["response"]["body"] is None


def test_the_retention_setting_is_checked_at_start() -> None:
    assert Settings.from_env({"POSTBACK_ATTEMPT_BODY_RETENTION_DAYS": "7"}
                             ).attempt_body_retention_days == 7
    assert Settings.from_env({}).attempt_body_retention_days == 90
    for bad in ("-1", "seven", "1.5", "40000"):
        with pytest.raises(ValueError, match="POSTBACK_ATTEMPT_BODY_RETENTION_DAYS must be"):
            Settings.from_env({"POSTBACK_ATTEMPT_BODY_RETENTION_DAYS": bad})


def test_the_scheduler_folds_and_prunes(make_service: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler's housekeeping loop, run as ``postback scheduler`` runs it."""
    import asyncio

    from postback import runner

    service = make_service(start_engine=False)
    world = build_world(service)
    # five old attempts that had no body (no answer), then an old one with a body: the
    # walk must not stop at a batch that emptied nothing
    _attempts(world, [100, 100, 100, 100, 100, 100, 1], bodies=[0, 0, 0, 0, 0, 1, 1])
    _rows(world, 30)
    assert deltas(world) == 31
    settings = replace(service.settings, attempt_body_retention_days=30)
    monkeypatch.setattr(rollup, "PRUNE_BATCH", 2)

    async def run_a_while() -> None:
        task = asyncio.create_task(runner._housekeeping_loop(service.db, settings))
        deadline = time.monotonic() + 10
        while (deltas(world) or _bodies(world)[5][0] is not None) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(run_a_while())
    assert deltas(world) == 0
    assert [b[0] for b in _bodies(world)] == [None] * 6 + ["body 6"]
    assert sum(sum(c.values()) for c in chart(world).values()) == 31


def test_a_rollup_row_of_another_shape_is_left_out(make_service: Any) -> None:
    """A row the triggers would never write (a hand-edited database) is left out: the
    chart shows the rest instead of failing."""
    service = make_service(start_engine=False)
    world = build_world(service)
    _rows(world, 2)
    with service.db.begin() as conn:
        conn.execute(insert(delivery_hourly), [
            {"partner_id": world.partner_id, "hour": "not an hour", "state": "due", "n": 5},
            {"partner_id": world.partner_id, "hour": "2999-01-01 00", "state": "odd", "n": 5}])
    assert sum(sum(c.values()) for c in chart(world).values()) == 2
