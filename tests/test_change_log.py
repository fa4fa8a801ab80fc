"""The change log: every ledger change recorded once with its values, whether or not a
partner takes postbacks, and each postback of a change carrying that change's {ChangeId}."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select, text

from postback.db.schema import change_log, delivery
from postback.models import CatalogBulkIn, CatalogItemIn
from postback.services import catalog, updates
from postback.services.change_log import decode_cursor, encode_cursor, read_changes
from tests.conftest import PG_SERVER, World, build_world
from tests.receiver import Receiver
from tests.test_settings_options import lifecycle_run
from tests.test_updates_feed import read_all


def _log(world: World) -> list[tuple[str, str, str, int | None]]:
    with world.service.db.connect() as conn:
        return [(r.kind, r.subject, r.trigger, r.sequence) for r in conn.execute(
            select(change_log).order_by(change_log.c.txid, change_log.c.id))]


def test_every_change_is_logged_without_any_setting(world: World) -> None:
    a = world.report(payout="12.00")  # yesterday's: still open to a modification
    world.brand("PATCH", f"/v1/actions/{a['id']}", 200,
                json={"amount": "80.00", "payout": "9.00", "reason": "ITEM_RETURNED"})
    b = world.report()
    world.brand("POST", f"/v1/actions/{b['id']}/approve", 200)
    later = datetime.now(UTC) + timedelta(days=60)
    lifecycle_run(world, f"{later:%Y-%m-%dT%H:%M:%SZ}")  # both lock, then clear 20 days later
    log = _log(world)
    assert log[:4] == [
        ("action", str(a["id"]), "TRACKED", 1), ("action", str(a["id"]), "MODIFIED", 2),
        ("action", str(b["id"]), "TRACKED", 1), ("action", str(b["id"]), "LOCKED", 2)]
    assert sorted(log[4:]) == sorted([
        ("action", str(a["id"]), "LOCKED", 3), ("action", str(a["id"]), "CLEARED", 4),
        ("action", str(b["id"]), "CLEARED", 3)])
    assert log.index(("action", str(a["id"]), "LOCKED", 3)) < log.index(
        ("action", str(a["id"]), "CLEARED", 4))
    with world.service.db.connect() as conn:
        rows, cursor = read_changes(conn, "action", partner_id=world.partner_id, limit=2)
        modified = rows[1].values
        assert modified["Trigger"] == "MODIFIED" and modified["Payout"] == "9.00"
        assert modified["DeltaPayout"] == "-3.00" and modified["ChangeId"] == rows[1].change_id
        assert "EventId" not in modified
        rest, end = read_changes(conn, "action", partner_id=world.partner_id,
                                 after=decode_cursor(encode_cursor(cursor)))
        assert [(r.kind, r.subject, r.trigger, r.sequence) for r in rest] == log[2:]
        assert read_changes(conn, "action", partner_id=world.partner_id, after=end) == ([], end)
        assert read_changes(conn, "action", partner_id=world.partner_id + 1)[0] == []


def test_the_postbacks_of_one_change_share_its_change_id(world: World,
                                                         receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/life?t={{Trigger}}&c={{ChangeId}}&e={{EventId}}",
                    extra_triggers=["PAID"])
    world.partner("PUT", "/v1/event-notifications/action-clearing", 200, json={
        "url": f"{receiver.url}/clear?t={{Trigger}}&c={{ChangeId}}&e={{EventId}}"})
    world.report(event_date="2026-11-02T18:04:05+00:00")
    lifecycle_run(world, "2026-12-31T00:00:00Z")
    receiver.wait_for(3)
    time.sleep(0.3)
    got = {r.query["t"]: r.query for r in receiver.requests}
    assert sorted(got) == ["CLEARED", "PAID", "TRACKED"]
    assert got["CLEARED"]["c"] == got["PAID"]["c"] != got["TRACKED"]["c"]
    assert got["CLEARED"]["e"] != got["PAID"]["e"]  # one change, two notifications
    with world.service.db.connect() as conn:
        logged = {r.trigger: r.change_id for r in conn.execute(select(change_log))}
        sent = {r.trigger: r.change_id for r in conn.execute(select(delivery))}
    assert logged.keys() == {"TRACKED", "LOCKED", "CLEARED"}  # locking sends nothing here
    assert (logged["TRACKED"], logged["CLEARED"]) == (got["TRACKED"]["c"], got["CLEARED"]["c"])
    assert sent == {"TRACKED": logged["TRACKED"], "CLEARED": logged["CLEARED"],
                    "PAID": logged["CLEARED"]}


def test_a_malformed_cursor_is_refused_in_words() -> None:
    for raw in ("", "abc", "1.", "-1.2", "1.2.3", "99999999999999999999.1"):
        try:
            decode_cursor(raw)
        except ValueError as exc:
            assert "next_cursor" in str(exc)
        else:
            raise AssertionError(raw)


def test_an_open_transaction_elsewhere_on_the_server_does_not_hold_the_feed_back(
        world: World) -> None:
    """Only a transaction of this database can still write a change: one open in another
    database of the same server leaves the feed current; one open here holds it back
    (never past it) until it ends."""
    url = world.service.settings.database_url
    if not url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time and no snapshot bound")
    with psycopg.connect(PG_SERVER) as elsewhere, psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://")) as here:
        elsewhere.execute("SELECT pg_current_xact_id()")  # open, with a transaction id
        first = world.report()
        with world.service.db.connect() as conn:
            rows, _ = read_changes(conn, "action", partner_id=world.partner_id)
        assert [r.subject for r in rows] == [str(first["id"])]
        here.execute("SELECT pg_current_xact_id()")
        second = world.report()
        with world.service.db.connect() as conn:
            rows, _ = read_changes(conn, "action", partner_id=world.partner_id)
        assert [r.subject for r in rows] == [str(first["id"])]  # held back, not skipped
        here.rollback()
        with world.service.db.connect() as conn:
            rows, _ = read_changes(conn, "action", partner_id=world.partner_id)
        assert [r.subject for r in rows] == [str(first["id"]), str(second["id"])]
        elsewhere.rollback()


def _pg_world(make_service: Any) -> World:
    service = make_service(start_engine=False)
    if service.db.dialect.name != "postgresql":
        pytest.skip("SQLite's writers never overlap")
    return build_world(service)


def _put(world: World, price: str) -> None:
    with world.service.db.begin() as conn:
        catalog.put_item(conn, world.brand_id, world.program_id, "X",
                         CatalogItemIn(name="X", current_price=price), datetime.now(UTC))


def _copy_then_changes(world: World, first: dict[str, Any]) -> tuple[dict[str, Any],
                                                                      dict[str, Any]]:
    """The partner's copy (the first page, then every change after its changes_cursor, in
    the feed's order) and the brand's catalog."""
    items = f"/v1/programs/{world.program_id}/catalog/items"
    copy = {i["item_id"]: i.get("current_price") for i in first["items"]}
    changes, _ = read_all(world, f"/v1/programs/{world.program_id}/catalog/changes",
                          world.partner_key, after=first["changes_cursor"])
    for change in changes:
        copy[change["item_id"]] = change["values"]["CurrentPrice"] or None
    return copy, {i["item_id"]: i.get("current_price")
                  for i in world.brand("GET", items, 200)["items"]}


def test_a_catalog_change_committed_during_the_first_page_is_not_lost(
        make_service: Any) -> None:
    """The first page's changes_cursor is found before its items are read: a change
    committed in between is in the page and comes again after the cursor, never in
    neither (each statement sees a newer snapshot at READ COMMITTED)."""
    world = _pg_world(make_service)
    items = f"/v1/programs/{world.program_id}/catalog/items"
    world.brand("PUT", f"{items}/X", 200, json={"name": "X", "current_price": "10.00"})
    armed = [True]

    def between(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if armed[0] and "pg_snapshot_xip" in statement:  # the first page's bound
            armed[0] = False
            writer = threading.Thread(target=_put, args=(world, "20.00"))
            writer.start()
            writer.join()

    event.listen(world.service.db, "before_cursor_execute", between)
    try:
        first = world.partner("GET", items, 200)
    finally:
        event.remove(world.service.db, "before_cursor_execute", between)
    assert not armed[0]
    copy, brands = _copy_then_changes(world, first)
    assert copy == brands == {"X": "20.00"}


def test_catalog_writes_of_one_program_are_listed_in_commit_order(make_service: Any) -> None:
    """A bulk upsert that started writing first and a single PUT of the same item: the PUT
    waits for the upsert (one writer per program's catalog), so the feed's order is the
    order they committed in and a copy applying the changes in order ends as the brand's."""
    world = _pg_world(make_service)
    items = f"/v1/programs/{world.program_id}/catalog/items"
    world.brand("PUT", f"{items}/X", 200, json={"name": "X", "current_price": "10.00"})
    first = world.partner("GET", items, 200)
    writers: list[threading.Thread] = []
    with world.service.db.connect() as conn:
        def during(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.startswith("UPDATE catalog_item") and not writers:
                writers.append(threading.Thread(target=_put, args=(world, "20.00")))
                writers[0].start()
                time.sleep(0.5)  # without one writer per program, the PUT commits now

        event.listen(conn, "before_cursor_execute", during)
        with conn.begin():
            catalog.bulk_upsert(conn, world.brand_id, world.program_id,
                                CatalogBulkIn.model_validate({"items": [
                                    {"item_id": "A", "name": "A"},
                                    {"item_id": "X", "name": "X", "current_price": "30.00"}]}),
                                datetime.now(UTC))
    writers[0].join(30)
    copy, brands = _copy_then_changes(world, first)
    assert brands["X"] == "20.00"  # the PUT came last
    assert copy == brands


def test_a_long_poll_is_not_woken_by_transactions_that_add_no_change(
        make_service: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats, deliveries and other writes move PostgreSQL's bound but add no change:
    a waiting request reads its page again only when a change becomes readable."""
    world = _pg_world(make_service)
    reads: list[int] = []
    real = updates.read_updates
    monkeypatch.setattr(updates, "read_updates",
                        lambda *a, **k: (reads.append(1), real(*a, **k))[1])
    stop = threading.Event()

    def unrelated_writes() -> None:
        while not stop.is_set():
            with world.service.db.begin() as conn:
                conn.execute(text("SELECT pg_current_xact_id()"))
            time.sleep(0.02)

    writer = threading.Thread(target=unrelated_writes)
    writer.start()
    try:
        page = world.partner("GET", "/v1/action-updates?wait=2", 200)
    finally:
        stop.set()
        writer.join()
    assert page["items"] == [] and len(reads) == 1
