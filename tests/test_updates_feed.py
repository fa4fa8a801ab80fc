"""The updates feeds (``/v1/action-updates``, ``/v1/inquiry-updates``,
``/v1/programs/{id}/catalog/changes``) and the partners' catalog read: every change once,
in commit order, with its postbacks' values; long polls; tenants apart; a partner without
postbacks keeping its books from the feed alone."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from postback.api.updates import LongPolls
from postback.core.tokens import ACTION_TOKENS, CATALOG_TOKENS, INQUIRY_TOKENS
from postback.db.schema import change_log
from postback.models import ActionIn, ActionPatchIn
from postback.services import ledger
from postback.services.change_log import decode_cursor, visible_bound
from postback.services.scheduler import run_due
from tests.conftest import RECENT, Service, World, build_world
from tests.receiver import Receiver


def every_token_body(tokens: Any) -> str:
    """A JSON body with every token of a type: text ones as strings, Items bare."""
    parts = [f'"{t.name}": {{{t.name}}}' if t.kind == "items" else f'"{t.name}": "{{{t.name}}}"'
             for t in tokens]
    return "{" + ", ".join(parts) + "}"


def settle(service: Service) -> None:
    """On PostgreSQL, until every committed change is one a read returns: a change shows
    once every transaction of this database older than it has ended (the delivery engine's
    and heartbeats' included); that takes a moment, not forever."""
    if service.db.dialect.name != "postgresql":
        return

    def settled() -> bool:
        with service.db.connect() as conn:
            newest = conn.execute(select(func.max(change_log.c.txid))).scalar_one()
            bound = visible_bound(conn)
            return newest is None or (bound is not None and newest < bound)

    until(settled)


def read_all(world: World, path: str, key: str, after: str | None = None, limit: int = 1000,
             ) -> tuple[list[dict[str, Any]], str]:
    """Every change from ``after`` on, a page of ``limit`` at a time, and the last cursor."""
    settle(world.service)
    items: list[dict[str, Any]] = []
    while True:
        query = f"?limit={limit}" + (f"&after={after}" if after is not None else "")
        page = world.service.call("GET", path + query, key, 200)
        assert page["next_cursor"]  # never null: always where to read on from
        items += page["items"]
        if page["items"]:
            assert page["next_cursor"] == page["items"][-1]["cursor"]
        else:
            assert after is None or page["next_cursor"] == after
            return items, page["next_cursor"]
        after = page["next_cursor"]


def logged(service: Service, kind: str) -> list[str]:
    with service.db.connect() as conn:
        return list(conn.execute(select(change_log.c.change_id).where(
            change_log.c.kind == kind).order_by(change_log.c.id)).scalars())


def state(service: Service) -> Any:
    """The app's ``state`` (where its long polls are counted)."""
    app: FastAPI = service.client.app  # type: ignore[assignment]
    return app.state


def waiting(service: Service) -> int:
    polls: LongPolls | None = getattr(state(service), "long_polls", None)
    return polls.waiting if polls else 0


def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def far_future() -> datetime:
    return datetime.now(UTC) + timedelta(days=120)


# -- every change, once, as its postbacks -------------------------------------------------

def test_every_action_change_once_in_order_with_its_postbacks_values(
        world: World, receiver: Receiver) -> None:
    body = every_token_body(ACTION_TOKENS)
    world.subscribe(f"{receiver.url}/life", method="POST", body=body, extra_triggers=["LOCKED"])
    world.partner("PUT", "/v1/event-notifications/action-clearing", 200, json={
        "url": f"{receiver.url}/clear", "method": "POST", "body": body})
    kept = world.report(items=[{"sku": "SH-1", "name": "Runner", "quantity": 2,
                                "amount": "50.00", "payout": "3.75"}])
    world.brand("PATCH", f"/v1/actions/{kept['id']}", 200,
                json={"amount": "80.00", "payout": "6.00", "reason": "ORDER_UPDATE"})
    gone = world.report()
    world.brand("POST", f"/v1/actions/{gone['id']}/reverse", 200, json={"reason": "CONS_FRAUD"})
    approved = world.report()
    world.brand("POST", f"/v1/actions/{approved['id']}/approve", 200)
    run_due(world.service.db, far_future())  # locks and clears the rest

    expected = {kept["id"]: ["TRACKED", "MODIFIED", "LOCKED", "CLEARED"],
                gone["id"]: ["TRACKED", "REVERSED"],
                approved["id"]: ["TRACKED", "LOCKED", "CLEARED"]}
    for key in (world.partner_key, world.brand_key):
        feed, _ = read_all(world, "/v1/action-updates", key)
        assert {a: [c["trigger"] for c in feed if c["action_id"] == a]
                for a in expected} == expected
        assert [c["change_id"] for c in feed] == logged(world.service, "action")
        for action_id in expected:  # each action's changes in its own order
            sequences = [c["sequence"] for c in feed if c["action_id"] == action_id]
            assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)

    changes = sum(map(len, expected.values()))
    deadline = time.monotonic() + 30  # a bound on a broken run, not a timing claim
    while True:  # an attempt past the tests' 1 s timeout on a loaded machine is sent again
        postbacks = [json.loads(r.body) for r in receiver.wait_for(changes)]
        by_change = {p["ChangeId"]: p for p in postbacks}
        if len(by_change) == changes or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(by_change) == changes  # one postback per change here, each its own id:
    assert all(len({p["EventId"] for p in postbacks if p["ChangeId"] == change}) == 1
               for change in by_change)  # a second one is the same delivery, sent again
    for change in feed:
        sent = dict(by_change[change["change_id"]])
        assert sent.pop("EventId")
        assert change["values"] == sent, change["trigger"]
        assert change["values"]["ChangeId"] == change["change_id"]
        assert change["values"]["Trigger"] == change["trigger"]
    assert by_change[feed[0]["change_id"]]["Items"][0]["sku"] == "SH-1"


def test_inquiry_and_catalog_changes_carry_their_postbacks_values(
        world: World, receiver: Receiver) -> None:
    world.partner("PUT", "/v1/event-notifications/action-inquiry", 200, json={
        "url": f"{receiver.url}/inq", "method": "POST",
        "body": every_token_body(INQUIRY_TOKENS)})
    world.partner("PUT", "/v1/event-notifications/product-data-change", 200, json={
        "url": f"{receiver.url}/cat", "method": "POST",
        "body": every_token_body(CATALOG_TOKENS)})
    inquiry = world.partner("POST", "/v1/inquiries", 201, json={
        "program_id": world.program_id, "inquiry_type": "UNTRACKED", "oid": "LOST-1",
        "transaction_date": RECENT, "transaction_amount": "80.00", "expected_payout": "6.40"})
    world.brand("POST", f"/v1/inquiries/{inquiry['id']}/resolve", 200, json={
        "resolution_status": "DECLINED", "reject_reason": "Transaction cannot be traced"})
    items = f"/v1/programs/{world.program_id}/catalog/items"
    world.brand("PUT", f"{items}/SH-1", 200, json={"name": "Runner", "current_price": "50.00"})
    world.brand("PUT", f"{items}/SH-1", 200, json={"name": "Runner", "current_price": "45.00"})
    world.brand("DELETE", f"{items}/SH-1", 204)

    inquiries, _ = read_all(world, "/v1/inquiry-updates", world.partner_key)
    catalog, _ = read_all(world, f"/v1/programs/{world.program_id}/catalog/changes",
                          world.partner_key)
    assert [c["inquiry_id"] for c in inquiries] == [inquiry["id"]] * 2
    assert [(c["item_id"], c["trigger"]) for c in catalog] == [
        ("SH-1", "ADDED"), ("SH-1", "UPDATED"), ("SH-1", "REMOVED")]
    assert catalog[1]["values"]["CurrentPrice"] == "45.00"
    sent = {json.loads(r.body)["ChangeId"]: json.loads(r.body)
            for r in receiver.wait_for(len(inquiries) + len(catalog))}
    for change in inquiries + catalog:
        postback = dict(sent[change["change_id"]])
        assert postback.pop("EventId")
        assert change["values"] == postback


def test_paging_one_at_a_time_never_skips_or_repeats(world: World) -> None:
    empty = world.partner("GET", "/v1/action-updates", 200)
    assert empty["items"] == [] and empty["next_cursor"]  # "from the start", never null
    again = world.partner("GET", f"/v1/action-updates?after={empty['next_cursor']}", 200)
    assert again == empty
    for _ in range(4):
        act = world.report()
        world.brand("PATCH", f"/v1/actions/{act['id']}", 200,
                    json={"payout": "9.00", "reason": "ORDER_UPDATE"})
    whole, last = read_all(world, "/v1/action-updates", world.partner_key)
    one_by_one, last_too = read_all(world, "/v1/action-updates", world.partner_key,
                                    after=empty["next_cursor"], limit=1)
    assert one_by_one == whole and last_too == last
    assert [c["change_id"] for c in whole] == logged(world.service, "action")
    half, _ = read_all(world, "/v1/action-updates", world.partner_key, limit=3)
    assert half == whole
    # from any change's own cursor, the rest follow
    rest, _ = read_all(world, "/v1/action-updates", world.partner_key, after=whole[2]["cursor"])
    assert rest == whole[3:]
    act = world.report()
    news, _ = read_all(world, "/v1/action-updates", world.partner_key, after=last)
    assert [(c["action_id"], c["trigger"]) for c in news] == [(act["id"], "TRACKED")]


@pytest.mark.parametrize("after", ["nope", "1", "1.2.3", "-1.5", "99999999999999999999.1",
                                   "9223372036854775808.1", " "])
def test_a_bad_cursor_is_a_422_naming_after(world: World, after: str) -> None:
    for path in ("/v1/action-updates", "/v1/inquiry-updates",
                 f"/v1/programs/{world.program_id}/catalog/changes"):
        err = world.partner("GET", path, 422, params={"after": after})
        assert err["field"] == "after" and "next_cursor" in err["message"], err


@pytest.mark.parametrize(("query", "field"), [("wait=31", "wait"), ("wait=-1", "wait"),
                                              ("limit=0", "limit"), ("limit=1001", "limit")])
def test_wait_and_limit_out_of_range_are_422(world: World, query: str, field: str) -> None:
    err = world.partner("GET", f"/v1/action-updates?{query}", 422)
    assert err["field"] == field


# -- PostgreSQL: concurrent writers, some holding their transaction open ---------------------

def test_concurrent_writers_every_change_seen_exactly_once(make_service: Any,
                                                           db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's writers never overlap: its id order is commit order")
    service = make_service(start_engine=False)
    world = build_world(service)
    db = service.db

    def body(i: int, n: int) -> ActionIn:
        return ActionIn.model_validate({
            "program_id": world.program_id, "event_type_id": world.event_type_id,
            "partner_id": world.partner_id, "oid": f"W{i}-{n}", "amount": "10.00",
            "payout": "1.00", "event_date": RECENT})

    errors: list[BaseException] = []
    PATCH = ActionPatchIn.model_validate({"payout": "2.00", "reason": "ORDER_UPDATE"})

    def writer(i: int) -> None:
        try:
            for n in range(6):
                held = (i + n) % 3 == 0
                with db.begin() as conn:
                    now = datetime.now(UTC)
                    row = ledger.report_actions(conn, world.brand_id, [body(i, n)], now)[0]
                    if held:  # this transaction has its id; later ones commit before it
                        time.sleep(0.15)
                    ledger.modify_action(conn, world.brand_id, row["id"], PATCH, now)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(5)]
    for t in writers:
        t.start()
    seen: list[str] = []
    positions: list[int] = []
    after: str | None = None
    deadline = time.monotonic() + 60

    def read_page() -> list[dict[str, Any]]:
        nonlocal after
        query = "?limit=4" + (f"&after={after}" if after else "")
        page = service.call("GET", "/v1/action-updates" + query, world.brand_key, 200)
        after = page["next_cursor"]
        return list(page["items"])

    while any(t.is_alive() for t in writers):
        assert time.monotonic() < deadline
        for change in read_page():
            seen.append(change["change_id"])
            positions.append(decode_cursor(change["cursor"]).id)
    for t in writers:
        t.join(timeout=30)
    assert not errors, errors
    while items := read_page():
        seen += [c["change_id"] for c in items]
        positions += [decode_cursor(c["cursor"]).id for c in items]

    expected = logged(service, "action")
    assert len(expected) == 5 * 6 * 2
    assert len(seen) == len(set(seen)) == len(expected) and set(seen) == set(expected)
    # some change came after one with a higher id: an id cursor would have skipped it
    assert any(p < max(positions[:k]) for k, p in enumerate(positions) if k)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(change_log)).scalar_one() == 60


# -- long polls ------------------------------------------------------------------------------

def poll_in_thread(world: World, path: str, key: str) -> tuple[threading.Thread, list[Any]]:
    answer: list[Any] = []

    def run() -> None:
        response = world.service.client.get(path, headers={"Authorization": f"Bearer {key}"})
        answer.append(response)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answer


def test_long_poll_answers_with_the_change_that_commits(world: World) -> None:
    start = world.partner("GET", "/v1/action-updates", 200)["next_cursor"]
    thread, answer = poll_in_thread(world, f"/v1/action-updates?after={start}&wait=20",
                                    world.partner_key)
    until(lambda: waiting(world.service) == 1)
    act = world.report()
    thread.join(timeout=25)
    assert answer[0].status_code == 200
    page = answer[0].json()
    assert [(c["action_id"], c["trigger"]) for c in page["items"]] == [(act["id"], "TRACKED")]
    assert waiting(world.service) == 0


def test_long_poll_sees_a_change_another_process_commits(world: World) -> None:
    """Written straight to the database (as the scheduler's process does): no in-process
    signal, the database's own state wakes the poll."""
    act = world.report(event_date=(datetime.now(UTC) - timedelta(days=40)).isoformat())
    _, start = read_all(world, "/v1/action-updates", world.partner_key)
    thread, answer = poll_in_thread(world, f"/v1/action-updates?after={start}&wait=20",
                                    world.partner_key)
    until(lambda: waiting(world.service) == 1)
    run_due(world.service.db, datetime.now(UTC))
    thread.join(timeout=25)
    items = answer[0].json()["items"]
    assert [(c["action_id"], c["trigger"]) for c in items] == [(act["id"], "LOCKED")]


def test_long_poll_times_out_empty_and_keeps_the_cursor(world: World) -> None:
    world.report()
    _, last = read_all(world, "/v1/action-updates", world.partner_key)
    page = world.partner("GET", f"/v1/action-updates?after={last}&wait=1", 200)
    assert page == {"items": [], "next_cursor": last}
    # with changes there already, a long poll answers them at once
    act = world.report()
    page = world.partner("GET", f"/v1/action-updates?after={last}&wait=30", 200)
    assert [c["action_id"] for c in page["items"]] == [act["id"]]


def test_long_polls_are_bounded_per_process(world: World) -> None:
    state(world.service).long_polls = LongPolls(limit=1)
    start = world.partner("GET", "/v1/action-updates", 200)["next_cursor"]
    thread, answer = poll_in_thread(world, f"/v1/action-updates?after={start}&wait=20",
                                    world.partner_key)
    until(lambda: waiting(world.service) == 1)
    response = world.service.client.get(f"/v1/action-updates?after={start}&wait=5",
                                        headers={"Authorization": f"Bearer {world.brand_key}"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json()["field"] == "wait"
    # without wait the feed still answers
    assert world.brand("GET", "/v1/action-updates", 200)["items"] == []
    world.report()
    thread.join(timeout=25)
    assert answer[0].status_code == 200 and len(answer[0].json()["items"]) == 1


@pytest.fixture
def live(service: Service) -> Iterator[int]:
    """The app under a real uvicorn on loopback (a client can hang up on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(service.client.app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def test_a_client_that_hangs_up_ends_its_wait(world: World, live: int) -> None:
    state(world.service).long_polls = LongPolls(limit=1)
    with socket.create_connection(("127.0.0.1", live)) as conn:
        conn.sendall(f"GET /v1/action-updates?wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {world.partner_key}\r\n\r\n".encode())
        until(lambda: waiting(world.service) == 1)
    until(lambda: waiting(world.service) == 0)  # long before its 30 s
    assert world.partner("GET", "/v1/action-updates?wait=1", 200)["items"] == []


# -- tenants -----------------------------------------------------------------------------

def test_each_tenant_sees_only_its_own_changes(service: Service) -> None:
    a, b = build_world(service), build_world(service)
    mine = a.report()
    a.partner("POST", "/v1/inquiries", 201, json={
        "program_id": a.program_id, "inquiry_type": "UNTRACKED", "oid": "LOST-A",
        "transaction_date": RECENT, "transaction_amount": "80.00", "expected_payout": "6.40"})
    a.brand("PUT", f"/v1/programs/{a.program_id}/catalog/items/A-1", 200, json={"name": "A"})
    theirs = b.report()
    for world, own in ((a, mine), (b, theirs)):
        for key in (world.partner_key, world.brand_key):
            feed, _ = read_all(world, "/v1/action-updates", key)
            assert [c["action_id"] for c in feed] == [own["id"]]
    assert read_all(b, "/v1/inquiry-updates", b.partner_key)[0] == []
    assert read_all(b, "/v1/inquiry-updates", b.brand_key)[0] == []
    assert len(read_all(a, "/v1/inquiry-updates", a.brand_key)[0]) == 1
    # another's program is exactly a missing one, for changes and items alike
    for path in ("/v1/programs/{}/catalog/changes", "/v1/programs/{}/catalog/items",
                 "/v1/programs/{}/catalog/items/A-1"):
        for key in (b.partner_key, b.brand_key):
            theirs_answer = service.client.get(path.format(a.program_id),
                                               headers={"Authorization": f"Bearer {key}"})
            missing = service.client.get(path.format(2**31 - 1),
                                         headers={"Authorization": f"Bearer {key}"})
            assert theirs_answer.status_code == missing.status_code == 404
            assert theirs_answer.json() == missing.json()
    # a cursor from another tenant's feed shows nothing of theirs either
    for change in read_all(a, "/v1/action-updates", a.partner_key)[0]:
        after = b.partner("GET", "/v1/action-updates", 200, params={"after": change["cursor"]})
        assert [c["action_id"] for c in after["items"]] in ([], [theirs["id"]])


# -- Done when: a partner without postbacks keeps its books from the feed -----------------

def test_a_partner_without_postbacks_rebuilds_the_ledger_from_the_feed(world: World) -> None:
    assert world.partner("GET", "/v1/event-notifications", 200)["items"]  # types listed...
    assert not any(s["setting"] for s in world.partner("GET", "/v1/event-notifications",
                                                       200)["items"])  # ...none configured
    books: dict[int, dict[str, str]] = {}
    cursor: str | None = None

    def sync() -> None:
        nonlocal cursor
        settle(world.service)
        while True:
            page = world.partner("GET", "/v1/action-updates", 200,
                                 params={"limit": 3, **({"after": cursor} if cursor else {})})
            for change in page["items"]:
                v = change["values"]
                books[change["action_id"]] = {
                    "amount": v["Amount"], "payout": v["Payout"], "status": v["Status"],
                    "status_detail": v["StatusDetail"], "locking_date": v["LockingDate"],
                    "cleared_at": v["ClearedDate"]}
            cursor = page["next_cursor"]
            if not page["items"]:
                return

    old = (datetime.now(UTC) - timedelta(days=35)).isoformat()
    acts = [world.report(amount=f"{100 + i}.00", payout=f"{5 + i}.25",
                         **({"event_date": old} if i % 3 == 0 else {})) for i in range(9)]
    sync()
    world.brand("PATCH", f"/v1/actions/{acts[1]['id']}", 200,
                json={"amount": "55.10", "payout": "2.05", "reason": "ITEM_RETURNED"})
    world.brand("PATCH", f"/v1/actions/{acts[2]['id']}", 200,
                json={"payout": "0.99", "reason": "ORDER_UPDATE"})
    world.brand("POST", f"/v1/actions/{acts[4]['id']}/reverse", 200, json={})
    world.brand("POST", f"/v1/actions/{acts[5]['id']}/approve", 200)
    run_due(world.service.db, datetime.now(UTC))  # the 35-day-old ones lock
    sync()
    world.brand("POST", f"/v1/actions/{acts[7]['id']}/reverse", 200,
                json={"reason": "CONS_FRAUD"})
    run_due(world.service.db, datetime.now(UTC) + timedelta(days=25))  # ...and clear
    sync()

    brands: dict[int, dict[str, str]] = {}
    page = world.brand("GET", "/v1/actions?limit=1000", 200)
    for a in page["items"]:
        brands[a["id"]] = {"amount": a["amount"], "payout": a["payout"], "status": a["status"],
                           "status_detail": a["status_detail"],
                           "locking_date": a["locking_date"] or "",
                           "cleared_at": a["cleared_at"] or ""}
    assert books == brands
    statuses = {b["status"] for b in brands.values()}
    assert statuses == {"PENDING", "APPROVED", "REVERSED"}
    assert sum(1 for b in brands.values() if b["cleared_at"]) >= 3


# -- the catalog: initial sync, then changes ---------------------------------------------

def test_a_partner_copies_the_catalog_then_keeps_it_current(world: World) -> None:
    items = f"/v1/programs/{world.program_id}/catalog/items"
    world.brand("POST", f"{items}/bulk", 200, json={"items": [
        {"item_id": f"SKU-{i:02}", "name": f"Shoe {i}", "current_price": f"{20 + i}.00"}
        for i in range(7)]})
    copy: dict[str, dict[str, Any]] = {}
    first = world.partner("GET", f"{items}?limit=3", 200)
    changes_cursor, page = first["changes_cursor"], first
    # changes made while the partner pages through are not lost
    world.brand("PUT", f"{items}/SKU-00", 200, json={"name": "Shoe 0", "current_price": "1.00"})
    world.brand("PUT", f"{items}/AAA-NEW", 200, json={"name": "Sandal"})
    while True:
        copy.update({i["item_id"]: i for i in page["items"]})
        if page["next_cursor"] is None:
            break
        page = world.partner("GET", f"{items}?limit=3&after={page['next_cursor']}", 200)
    world.brand("DELETE", f"{items}/SKU-03", 204)
    world.brand("PUT", f"{items}/SKU-04", 200, json={"name": "Shoe 4", "size": "42"})

    changes, _ = read_all(world, f"/v1/programs/{world.program_id}/catalog/changes",
                          world.partner_key, after=changes_cursor)
    for change in changes:  # each change carries the item as it is after it
        v = change["values"]
        if change["trigger"] == "REMOVED":
            copy.pop(change["item_id"], None)
        else:
            copy[change["item_id"]] = {"item_id": v["CatalogItemId"], "name": v["Name"],
                                       "current_price": v["CurrentPrice"], "size": v["Size"]}
    brand_view = world.brand("GET", f"{items}?limit=1000", 200)["items"]
    assert {i["item_id"]: i["name"] for i in brand_view} == {
        k: v["name"] for k, v in copy.items()}
    assert copy["SKU-00"]["current_price"] == "1.00" and "SKU-03" not in copy
    assert copy["SKU-04"]["size"] == "42" and "AAA-NEW" in copy
    # a contracted partner reads one item too
    assert world.partner("GET", f"{items}/SKU-04", 200)["size"] == "42"


def test_catalog_updated_since_and_the_former_cursor_name(world: World) -> None:
    items = f"/v1/programs/{world.program_id}/catalog/items"
    world.brand("POST", f"{items}/bulk", 200, json={"items": [
        {"item_id": f"SKU-{i}", "name": f"Shoe {i}"} for i in range(5)]})
    legacy = world.brand("GET", f"{items}?limit=2", 200)
    assert legacy["next_cursor"] == "SKU-1"
    assert [i["item_id"] for i in world.brand("GET", f"{items}?limit=2&cursor=SKU-1",
                                              200)["items"]] == ["SKU-2", "SKU-3"]
    since = world.partner("GET", f"{items}/SKU-4", 200)["updated_at"]  # to the second
    time.sleep(0.01)  # the clock moves on: the updates below come after
    later = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    world.brand("PUT", f"{items}/SKU-2", 200, json={"name": "Shoe 2b"})
    world.brand("PUT", f"{items}/SKU-0", 200, json={"name": "Shoe 0b"})
    seen: list[str] = []
    after: str | None = None
    while True:
        page = world.partner("GET", items, 200, params={
            "updated_since": later, "limit": 1, **({"after": after} if after else {})})
        seen += [i["item_id"] for i in page["items"]]
        after = page["next_cursor"]
        if after is None:
            break
    assert seen == ["SKU-2", "SKU-0"]  # oldest change first
    everything = world.partner("GET", items, 200, params={"updated_since": since})["items"]
    assert len(everything) == 5  # at or after: the bulk's own items too
    err = world.partner("GET", items, 422, params={"updated_since": later, "after": "SKU-1"})
    assert err["field"] == "after"
    err = world.partner("GET", items, 422, params={"updated_since": "2026-11-02T18:04:05"})
    assert err["field"] == "updated_since"
