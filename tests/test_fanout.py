"""A large catalog change answers at once and its postbacks are written afterwards, a
chunk per transaction, by the scheduler (``services/fanout.py``): each (item, setting)
exactly once, rendered as the request would have rendered it, in the order the changes
were made, paced by what the engines have left to send, and whatever kills the writer."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select, text, update

from postback.db.schema import catalog_fanout, change_log, delivery
from postback.delivery import queue
from postback.services import fanout
from postback.services.outbox import INLINE_FANOUT
from tests.conftest import ADMIN, World, build_world
from tests.receiver import Answer, Receiver
from tests.test_catalog import SHOE
from tests.test_supervisor import serve, setup_partner  # noqa: F401  (serve: the fixture)

BOUND = 30.0  # seconds: a bound on a broken run, not a timing claim
ITEMS = INLINE_FANOUT // 2 + 1  # to two partners: just past what a request writes itself
URL = ("http://127.0.0.1:9/{path}?i={{CatalogItemId}}&c={{ChangeType}}&p={{CurrentPrice}}"
       "&e={{EventId}}&g={{ChangeId}}")


def _second_partner(world: World, name: str = "Loyalty Club") -> str:
    """Another partner contracted on the world's program: its key."""
    call = world.service.call
    partner = call("POST", "/v1/partners", ADMIN, 201,
                   json={"name": name, "partner_type": "loyalty"})
    key: str = call("POST", "/v1/api-keys", ADMIN, 201,
                    json={"account_type": "partner", "account_id": partner["id"]})["key"]
    world.brand("PUT", f"/v1/programs/{world.program_id}/contracts/{partner['id']}", 200,
                json={"event_type_ids": [world.event_type_id],
                      "locking": {"rule": "days_after_event", "days": 30},
                      "clearing": {"rule": "days_after_locking", "days": 20}})
    return key


@pytest.fixture
def shop(make_service: Any) -> World:
    """A program with two contracted partners, each with a Product Data Change setting,
    and no engine: what is written stays countable."""
    world = build_world(make_service(start_engine=False))
    world.partner("PUT", "/v1/event-notifications/product-data-change", 200,
                  json={"url": URL.format(path="first")})
    second = _second_partner(world)
    world.service.call("PUT", "/v1/event-notifications/product-data-change", second, 200,
                       json={"url": URL.format(path="second")})
    return world


def _items(n: int, price: str = "89.00") -> list[dict[str, Any]]:
    return [{"item_id": f"I-{i}", **SHOE, "current_price": price} for i in range(n)]


def _bulk(world: World, items: list[dict[str, Any]]) -> Any:
    return world.brand("POST", f"/v1/programs/{world.program_id}/catalog/items/bulk", 200,
                       json={"items": items})


def _deliveries(world: World) -> list[Any]:
    with world.service.db.connect() as conn:
        return list(conn.execute(select(delivery.c.id, delivery.c.url, delivery.c.item_id,
                                        delivery.c.event_id, delivery.c.change_id,
                                        delivery.c.setting_id, delivery.c.trigger)
                                 .order_by(delivery.c.id)))


def _written(world: World) -> int:
    with world.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(delivery)).scalar_one())


def _waiting(world: World) -> int:
    with world.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(catalog_fanout)).scalar_one())


def _expand_all(world: World) -> None:
    deadline = time.monotonic() + BOUND
    while fanout.expand(world.service.db):
        assert time.monotonic() < deadline, "the fan-out never ran out of work"


def test_a_large_bulk_change_answers_before_its_postbacks_are_written_then_each_once(
        shop: World) -> None:
    assert _bulk(shop, _items(ITEMS)) == {"added": ITEMS, "updated": 0, "removed": 0,
                                          "unchanged": 0}
    assert _deliveries(shop) == [] and _waiting(shop) == ITEMS
    assert fanout.expand(shop.service.db, chunk=400) == 200  # 400 postbacks: 200 changes
    assert len(_deliveries(shop)) == 400
    _expand_all(shop)
    assert _waiting(shop) == 0
    rows = _deliveries(shop)
    assert len(rows) == 2 * ITEMS
    assert Counter((r.setting_id, r.item_id) for r in rows).most_common(1)[0][1] == 1
    with shop.service.db.connect() as conn:
        change_of = {r.subject: r.change_id for r in conn.execute(
            select(change_log.c.subject, change_log.c.change_id)
            .where(change_log.c.kind == "catalog"))}
    for r in rows:  # the exact request, with its own event id and its change's id
        parts = urlsplit(r.url)
        assert parts.path in ("/first", "/second")
        assert parse_qs(parts.query) == {"i": [r.item_id], "c": ["ADDED"], "p": ["89.00"],
                                         "e": [r.event_id], "g": [change_of[r.item_id]]}
        assert (r.trigger, r.change_id) == ("ADDED", change_of[r.item_id])
    assert len({r.event_id for r in rows}) == len(rows)


def test_a_small_change_is_written_by_its_request_unless_earlier_ones_wait(
        shop: World) -> None:
    items = f"/v1/programs/{shop.program_id}/catalog/items"
    shop.brand("PUT", f"{items}/ALONE", 200, json=SHOE)
    assert [r.item_id for r in _deliveries(shop)] == ["ALONE", "ALONE"]  # at once
    _bulk(shop, _items(ITEMS))
    shop.brand("PUT", f"{items}/I-0", 200, json={**SHOE, "current_price": "1.00"})
    assert len(_deliveries(shop)) == 2 and _waiting(shop) == ITEMS + 1  # behind the bulk
    _expand_all(shop)
    rows = _deliveries(shop)
    assert len(rows) == 2 + 2 * ITEMS + 2
    # in the order of the changes: to each partner, the update of I-0 after every
    # postback of the bulk
    for setting_id in {r.setting_id for r in rows}:
        mine = [(r.item_id, r.trigger) for r in rows if r.setting_id == setting_id]
        assert mine[0] == ("ALONE", "ADDED") and mine[-1] == ("I-0", "UPDATED")
        assert {trigger for _, trigger in mine[1:-1]} == {"ADDED"}


def test_postbacks_are_written_only_while_the_engines_have_few_left_to_send(
        shop: World) -> None:
    _bulk(shop, _items(ITEMS))
    db = shop.service.db
    assert fanout.expand_due(db, watermark=600, chunk=400) == 400  # 400, 800: then waits
    assert len(_deliveries(shop)) == 800
    assert fanout.expand_due(db, watermark=600, chunk=400) == 0
    with db.begin() as conn:  # the engines sent them
        conn.execute(update(delivery).values(status="succeeded"))
    assert fanout.expand_due(db, watermark=600, chunk=400) == ITEMS - 400  # the rest
    assert len(_deliveries(shop)) == 2 * ITEMS


def test_a_damaged_change_is_passed_over_and_the_others_written(
        shop: World, caplog: pytest.LogCaptureFixture) -> None:
    _bulk(shop, _items(ITEMS))
    db = shop.service.db
    damaged = {"I-7": "not a mapping", "I-8": {"CatalogItemId": 5}}
    with db.begin() as conn:
        for item_id, values in damaged.items():
            conn.execute(update(change_log).where(change_log.c.subject == item_id)
                         .values({"values": values}))
        if db.dialect.name == "sqlite":  # no JSON check there: text that does not parse
            damaged["I-9"] = "{"
            conn.execute(text("UPDATE change_log SET \"values\" = '{' "
                              "WHERE subject = 'I-9'"))
    with caplog.at_level(logging.WARNING, logger="postback.services.fanout"):
        _expand_all(shop)
    rows = _deliveries(shop)
    assert len(rows) == 2 * (ITEMS - len(damaged))
    assert not set(damaged) & {r.item_id for r in rows}
    assert _waiting(shop) == 0
    assert caplog.text.count("gets no postbacks") == len(damaged)
    assert "its token values are not text (str)" in caplog.text


def test_catalog_postbacks_held_back_by_a_minimum_delay_do_not_stop_the_fan_out(
        shop: World) -> None:
    """Only what the engines could send now counts against the watermark: a partner with
    a day's Minimum Delay does not hold up every program's catalog postbacks for a day."""
    _bulk(shop, _items(ITEMS))
    db = shop.service.db
    assert fanout.expand_due(db, watermark=600, chunk=400) == 400
    with db.begin() as conn:
        conn.execute(update(delivery).values(
            next_attempt_at=datetime.now(UTC) + timedelta(days=1)))
    assert fanout.expand_due(db, watermark=600, chunk=400) == ITEMS - 400


def test_catalog_postbacks_fill_a_claim_that_other_due_work_cannot(shop: World) -> None:
    """Actions due for an endpoint this worker has no room for leave the claim to the
    catalog's postbacks, which are not starved by work nobody takes now."""
    shop.subscribe("http://127.0.0.1:9/action?a={ActionId}")
    for _ in range(16):  # enough to fill a claim's candidates (4 per place)
        shop.report()
    _bulk(shop, _items(ITEMS))
    _expand_all(shop)
    db = shop.service.db
    with db.connect() as conn:
        action_setting = conn.execute(select(delivery.c.setting_id).where(
            delivery.c.notification_type == "action-lifecycle").limit(1)).scalar_one()
    claimed = queue.claim(db, "w1", 4, datetime.now(UTC), 60,
                          room={action_setting: 1}).jobs  # one place left there
    assert len(claimed) == 4
    assert sum("/action?" in j.url for j in claimed) == 1


def test_engines_take_an_actions_postback_before_older_catalog_ones(shop: World) -> None:
    """A bulk change's postbacks wait behind those of actions reported after them: a
    member's cashback is not late because the brand uploaded its catalog."""
    shop.subscribe("http://127.0.0.1:9/action?a={ActionId}")
    _bulk(shop, _items(ITEMS))
    _expand_all(shop)
    db = shop.service.db
    with db.begin() as conn:  # the catalog's are an hour overdue
        conn.execute(update(delivery).values(
            next_attempt_at=datetime.now(UTC) - timedelta(hours=1)))
    action = shop.report()
    claimed = queue.claim(db, "w1", 10, datetime.now(UTC), 60).jobs
    urls = [job.url for job in claimed]
    assert f"http://127.0.0.1:9/action?a={action['id']}" in urls
    assert len(urls) == 10  # and catalog ones fill the rest
    assert sum("/first?" in url or "/second?" in url for url in urls) == 9


_EXPAND_FOREVER = """
import sys
from postback.db.engine import make_engine
from postback.services import fanout
db = make_engine(sys.argv[1])
print("started", flush=True)
while True:
    fanout.expand(db, chunk=2)  # a change a transaction: thousands of them
"""


def test_a_writer_killed_mid_chunk_loses_nothing_and_writes_nothing_twice(
        shop: World, db_url: str) -> None:
    count = 6000
    _bulk(shop, _items(count))
    proc = subprocess.Popen([sys.executable, "-c", _EXPAND_FOREVER, db_url],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        deadline = time.monotonic() + BOUND
        while _written(shop) < 100:  # a count: reading every row would let it finish
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # wherever it is: most of its time is a chunk
        proc.wait(BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 0 < _waiting(shop) < count
    _expand_all(shop)
    rows = _deliveries(shop)
    assert len(rows) == 2 * count
    assert set(Counter((r.setting_id, r.item_id) for r in rows).values()) == {1}


def test_the_scheduler_of_serve_writes_and_sends_a_large_changes_postbacks(
        serve: Any) -> None:
    receiver = Receiver()
    try:
        server = serve("--workers", "1")
        server.wait_ready()
        brand_key, action = setup_partner(server, f"{receiver.url}/pb")
        program = action["program_id"]
        server.call("PUT", "/v1/event-notifications/product-data-change",
                    action["_partner_key"], {"url": f"{receiver.url}/pb?i={{CatalogItemId}}"})
        count = INLINE_FANOUT + 1
        server.call("POST", f"/v1/programs/{program}/catalog/items/bulk", brand_key,
                    {"items": _items(count)})
        got = receiver.wait_for(count, timeout=BOUND)
        time.sleep(0.3)
        assert len(receiver.requests) == count
        assert sorted(r.query["i"] for r in got) == sorted(f"I-{i}" for i in range(count))
    finally:
        receiver.close()


def test_the_migration_refuses_to_drop_changes_whose_postbacks_wait(shop: World,
                                                                   db_url: str) -> None:
    """A downgrade past 0013 would lose them: it says so instead."""
    from alembic import command

    from postback.db.migrate import alembic_config

    _bulk(shop, _items(ITEMS))
    with pytest.raises(RuntimeError, match=f"{ITEMS} catalog changes still wait"):
        command.downgrade(alembic_config(db_url), "0012")
    with shop.service.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(catalog_fanout)).scalar_one() \
            == ITEMS
        assert conn.execute(text("SELECT count(*) FROM change_log")).scalar_one() >= ITEMS


def test_actions_are_sent_while_catalog_postbacks_fill_what_they_may_of_the_engine(
        make_service: Any) -> None:
    """The engine keeps a quarter of its places from catalog postbacks: with all the
    catalog may take on the wire to a partner that does not answer, and one action's
    postback stalled too, the next action's still goes at once, into the last free place
    (before, each waited for a catalog postback to end)."""
    release = threading.Event()
    stalled: list[str] = []

    def stall(_request: Any) -> Answer:
        release.wait(BOUND)
        return Answer()

    def stall_the_first(request: Any) -> Answer:
        if not stalled:
            stalled.append(request.path)
            release.wait(BOUND)
        return Answer()

    hanging, answering = Receiver(stall), Receiver(stall_the_first)
    try:
        world = build_world(make_service(max_in_flight=8, claim_batch=8, total_timeout=60.0))
        world.partner("PUT", "/v1/event-notifications/product-data-change", 200, json={
            "url": f"http://127.0.0.1:{hanging.port}/item?i={{CatalogItemId}}"})
        world.subscribe(f"http://127.0.0.1:{answering.port}/action?a={{ActionId}}")
        _bulk(world, _items(INLINE_FANOUT + 1))  # past what the request writes itself
        _expand_all(world)
        hanging.wait_for(6)  # three quarters of 8: all the catalog may hold
        first = world.report()
        answering.wait_for(1, timeout=BOUND / 3)
        second = world.report()
        got = answering.wait_for(2, timeout=BOUND / 3)
        assert [r.query for r in got] == [{"a": str(first["id"])}, {"a": str(second["id"])}]
        assert hanging.max_active == 6
    finally:
        release.set()
        hanging.close()
        answering.close()
