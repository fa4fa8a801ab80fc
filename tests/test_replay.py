"""Replay (#13 item 4): a window's notifications sent again, succeeded ones too, as new
deliveries with their original event id and sequence, from each setting as it is now, or to
a one-off URL; idempotent for the same request; on the API, the CLI and the web page."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, func, select, text, update

from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from postback.db.schema import change_log, delivery, replay
from postback.services import replay as replays
from tests.conftest import PG_SERVER, Service, World, _pg_reachable, build_world
from tests.receiver import Receiver
from tests.test_delivery import wait_status
from tests.test_signing import verify
from tests.test_web import csrf, sign_in
from tests.test_web_errors import error_beside

SINCE = "2000-01-01T00:00:00Z"
BODY = '{"event": "{EventId}", "seq": {Sequence}, "change": "{ChangeId}", "amount": {Amount}}'


def delivered(world: World, count: int) -> list[dict[str, Any]]:
    """The partner's ``count`` deliveries once each has succeeded, oldest first."""
    items = world.partner("GET", "/v1/deliveries", 200)["items"]
    assert len(items) == count
    return [wait_status(world, d["id"], "succeeded") for d in reversed(items)]


def rows(world: World) -> int:
    with world.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(delivery)).scalar_one())


def wait_replayed(world: World, replay_id: int, timeout: float = 10) -> dict[str, Any]:
    """The replay once none of its deliveries waits any more."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got: dict[str, Any] = world.partner("GET", f"/v1/deliveries/replays/{replay_id}", 200)
        if got["queued"] and got["pending"] == 0:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"replay still under way: {got}")
        time.sleep(0.05)


def test_a_succeeded_delivery_is_replayed_with_its_event_id_and_sequence_signed(
        world: World, receiver: Receiver) -> None:
    secret = world.subscribe(f"{receiver.url}/pb", method="POST", body=BODY,
                             signed=True)["signing_secret"]
    act = world.report()
    world.brand("PATCH", f"/v1/actions/{act['id']}", 200,
                json={"amount": "80.00", "payout": "6.00", "reason": "ORDER_UPDATE"})
    first = delivered(world, 2)
    before = [json.loads(r.body) for r in receiver.wait_for(2)]
    assert [b["seq"] for b in before] == [1, 2]

    out = world.partner("POST", "/v1/deliveries/replay", 200, json={"since": SINCE})
    assert out["replayed"] == 2 and out["total"] == 2 and out["skipped"] == 0
    assert out["queued"] is True and out["warnings"] == []
    done = wait_replayed(world, out["id"])
    assert done["succeeded"] == 2 and done["failed"] == 0

    again = {json.loads(r.body)["event"]: r for r in receiver.wait_for(4)[2:]}
    for original, body in zip(first, before, strict=True):
        req = again[original["event_id"]]
        replayed = json.loads(req.body)
        assert replayed == body  # the same event id, sequence, change id and values
        assert replayed["event"] == original["event_id"] == req.header("webhook-id")
        assert len(replayed["change"]) == 36
        verify(secret, req, req.body)  # signed at send time, with the same webhook-id
    # new deliveries (the originals are untouched), listed beside them
    items = world.partner("GET", "/v1/deliveries", 200)["items"]
    assert len(items) == 4 and {d["status"] for d in items} == {"succeeded"}
    assert sorted(d["event_id"] for d in items[:2]) == sorted(d["event_id"] for d in first)
    # replays of replays are not replayed: a second, different request finds the 2 again
    later = world.partner("POST", "/v1/deliveries/replay", 200,
                          json={"since": SINCE, "type": "action-lifecycle"})
    assert later["id"] != out["id"] and later["replayed"] == 2


def test_the_settings_new_url_method_and_body_are_used(world: World) -> None:
    old, new = Receiver(), Receiver()
    try:
        world.subscribe(f"{old.url}/in?e={{EventId}}&s={{Sequence}}")
        world.report(amount="100.00")
        original = delivered(world, 1)[0]
        # the partner rebuilt its receiver: a new address, POST with a JSON body
        world.subscribe(f"{new.url}/v2/hook", method="POST", body=BODY)
        out = world.partner("POST", "/v1/deliveries/replay", 200, json={"since": SINCE})
        assert out["replayed"] == 1
        req = new.wait_for(1)[0]
        assert req.method == "POST" and req.path == "/v2/hook"
        assert (req.header("content-type") or "").startswith("application/json")
        assert json.loads(req.body) == {"event": original["event_id"], "seq": 1,
                                        "change": json.loads(req.body)["change"],
                                        "amount": 100.0}
        assert len(old.requests) == 1  # the old receiver got the original only
    finally:
        old.close()
        new.close()


def test_a_delivery_without_a_change_log_row_is_sent_as_stored(world: World) -> None:
    """Deliveries made before the change log: their stored request, to the setting's
    current URL when it has no tokens, else to the stored URL."""
    old, new = Receiver(), Receiver()
    try:
        world.subscribe(f"{old.url}/in?e={{EventId}}")
        world.report()
        world.report()
        first = delivered(world, 2)
        with world.service.db.begin() as conn:
            conn.execute(update(delivery).values(change_id=None))
            conn.execute(delete(change_log))
        world.subscribe(f"{new.url}/moved?e={{EventId}}")  # tokens: the stored URL is kept
        a = world.partner("POST", "/v1/deliveries/replay", 200,
                          json={"since": SINCE, "until": "2999-01-01T00:00:00Z"})
        assert a["replayed"] == 2
        got = old.wait_for(4)[2:]
        assert sorted(r.query["e"] for r in got) == sorted(d["event_id"] for d in first)
        world.subscribe(f"{new.url}/moved")  # no tokens: the current URL, the stored query
        b = world.partner("POST", "/v1/deliveries/replay", 200,
                          json={"since": SINCE, "until": "2998-01-01T00:00:00Z"})
        assert b["replayed"] == 2
        moved = new.wait_for(2)
        assert {r.path for r in moved} == {"/moved"}
        assert sorted(r.header("webhook-id") or "" for r in moved) == sorted(
            d["event_id"] for d in first)
    finally:
        old.close()
        new.close()


def test_a_one_off_url_gets_the_requests_unsigned_without_custom_headers(
        world: World, receiver: Receiver) -> None:
    other = Receiver()
    try:
        world.subscribe(f"{receiver.url}/pb?e={{EventId}}&s={{Sequence}}", signed=True,
                        headers={"X-Receiver-Secret": "s3cret-value"})
        world.report()
        original = delivered(world, 1)[0]
        out = world.partner("POST", "/v1/deliveries/replay", 200,
                            json={"since": SINCE, "url": f"{other.url}/debug?from=replay"})
        assert out["replayed"] == 1 and out["url"] == f"{other.url}/debug?from=replay"
        req = other.wait_for(1)[0]
        # as written, and a GET keeps the query string its values travel in
        assert req.path.startswith("/debug?from=replay&")
        assert req.query["e"] == original["event_id"] == req.header("webhook-id")
        assert req.query["s"] == "1"
        assert req.header("X-Receiver-Secret") is None
        assert req.header("webhook-signature") is None
        assert len(receiver.requests) == 1  # the setting's own URL got nothing more
        wait_replayed(world, out["id"])
    finally:
        other.close()


@pytest.mark.parametrize("url, says", [
    ("http://10.0.0.7/pb", "private address"),
    ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("http://[::ffff:10.0.0.1]/pb", "address"),
    ("ftp://example.com/x", "http:// or https://"),
    ("http://127.0.0.1:9/pb?e={EventId}", "cannot hold tokens"),
])
def test_a_refused_one_off_url_is_a_422_naming_url(world: World, url: str, says: str) -> None:
    world.subscribe("http://127.0.0.1:9/pb")
    err = world.partner("POST", "/v1/deliveries/replay", 422,
                        json={"since": SINCE, "url": url})
    assert err["field"] == "url" and says in err["message"]
    with world.service.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(replay)).scalar_one() == 0
    err = world.partner("POST", "/v1/deliveries/replay", 422,
                        json={"since": SINCE, "until": "1999-01-01T00:00:00Z"})
    assert err["field"] == "until"


def test_another_partners_deliveries_and_replays_are_out_of_reach(
        service: Service, receiver: Receiver) -> None:
    a, b = build_world(service), build_world(service)
    a.subscribe(f"{receiver.url}/pb?e={{EventId}}")
    a.report()
    delivered(a, 1)
    mine = a.partner("POST", "/v1/deliveries/replay", 200, json={"since": SINCE})
    assert mine["replayed"] == 1
    theirs = b.partner("POST", "/v1/deliveries/replay", 200, json={"since": SINCE})
    assert theirs["replayed"] == 0 and theirs["total"] == 0
    missing = b.partner("GET", f"/v1/deliveries/replays/{mine['id']}", 404)
    assert missing == b.partner("GET", "/v1/deliveries/replays/999999", 404)
    assert [r["id"] for r in b.partner("GET", "/v1/deliveries/replays", 200)["items"]] == [
        theirs["id"]]
    assert a.brand("GET", "/v1/deliveries/replays", 403)["error"]
    receiver.wait_for(2)
    assert len(b.partner("GET", "/v1/deliveries", 200)["items"]) == 0


def test_the_same_request_twice_is_one_replay(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
    for _ in range(3):
        world.report()
    delivered(world, 3)
    body = {"since": SINCE, "until": "2999-01-01T00:00:00Z"}
    first = world.partner("POST", "/v1/deliveries/replay", 200, json=body)
    count = rows(world)
    second = world.partner("POST", "/v1/deliveries/replay", 200,
                           json={**body, "since": "2000-01-01T01:00:00+01:00"})  # the same
    assert second["id"] == first["id"] and second["replayed"] == first["replayed"] == 3
    assert rows(world) == count == 6
    listed = world.partner("GET", "/v1/deliveries/replays", 200)["items"]
    assert [r["id"] for r in listed] == [first["id"]]
    # more than 24 hours later the same request is a new replay
    with world.service.db.begin() as conn:
        conn.execute(update(replay).values(created_at=datetime.now(UTC) - timedelta(hours=25)))
    third = world.partner("POST", "/v1/deliveries/replay", 200, json=body)
    assert third["id"] != first["id"] and third["replayed"] == 3 and rows(world) == 9
    receiver.wait_for(9)


def test_two_identical_requests_at_once_make_one_replay(make_service: Any,
                                                        db_url: str) -> None:
    """On PostgreSQL two transactions race for the replay's unique key; the loser reads the
    winner's replay and both end with the same answer."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's writers never overlap")
    service = make_service(start_engine=False)
    world = build_world(service)
    world.subscribe("http://127.0.0.1:9/pb?e={EventId}")
    world.brand("POST", "/v1/actions/batch", 201,
                json={"actions": [world.action() for _ in range(40)]})
    req = replays.ReplayRequest(datetime(2000, 1, 1, tzinfo=UTC))
    barrier = threading.Barrier(4)
    answers: list[dict[str, Any]] = []

    def one() -> None:
        barrier.wait()
        out, _ = replays.replay_deliveries(service.db, world.partner_id, req,
                                           datetime.now(UTC), chunk=7)
        answers.append(out)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 4 and len({a["id"] for a in answers}) == 1
    assert {a["replayed"] for a in answers} == {40}
    with service.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(replay)).scalar_one() == 1
        made = conn.execute(select(delivery.c.event_id).where(
            delivery.c.replay_id.is_not(None))).scalars().all()
    assert len(made) == 40 and len(set(made)) == 40


def test_a_replay_stopped_part_way_is_taken_up_where_it_stopped(make_service: Any) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    world.subscribe("http://127.0.0.1:9/pb?e={EventId}")
    world.brand("POST", "/v1/actions/batch", 201,
                json={"actions": [world.action() for _ in range(9)]})
    req = replays.ReplayRequest(datetime(2000, 1, 1, tzinfo=UTC))

    def die(done: int, total: int) -> None:
        raise KeyboardInterrupt  # the process stops after its first chunk

    with pytest.raises(KeyboardInterrupt):
        replays.replay_deliveries(service.db, world.partner_id, req, datetime.now(UTC),
                                  chunk=4, progress=die)
    stopped = world.partner("GET", "/v1/deliveries/replays", 200)["items"][0]
    assert stopped["queued"] is False and stopped["replayed"] == 4 and stopped["total"] == 9
    world.report()  # a delivery made after the replay began is not in its window
    out = world.partner("POST", "/v1/deliveries/replay", 200, json={"since": SINCE})
    assert out["id"] == stopped["id"] and out["queued"] is True and out["replayed"] == 9
    with service.db.connect() as conn:
        made = conn.execute(select(delivery.c.event_id).where(
            delivery.c.replay_id == out["id"])).scalars().all()
    assert len(made) == len(set(made)) == 9


def test_a_deleted_setting_is_skipped_and_an_off_one_holds(world: World,
                                                            receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
    world.report()
    delivered(world, 1)
    world.partner("DELETE", "/v1/event-notifications/action-lifecycle", 204)
    gone = world.partner("POST", "/v1/deliveries/replay", 200, json={"since": SINCE})
    assert gone["replayed"] == 0 and gone["skipped"] == 1 and gone["total"] == 1
    world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
    world.report()
    delivered(world, 2)
    world.subscribe(f"{receiver.url}/pb?e={{EventId}}", enabled=False)  # turned off
    out = world.partner("POST", "/v1/deliveries/replay", 200,
                        json={"since": SINCE, "type": "action-lifecycle"})
    assert out["replayed"] == 1 and out["skipped"] == 1 and out["held"] == 1
    assert len(receiver.requests) == 2  # held: not sent
    world.subscribe(f"{receiver.url}/pb?e={{EventId}}")  # on again: held ones go
    assert wait_replayed(world, out["id"])["succeeded"] == 1
    receiver.wait_for(3)


def test_cli_replay_end_to_end(make_service: Any) -> None:
    service = make_service()
    world = build_world(service)
    receiver = Receiver()
    try:
        world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
        world.brand("POST", "/v1/actions/batch", 201,
                    json={"actions": [world.action() for _ in range(5)]})
        originals = delivered(world, 5)
        env = {**os.environ, "POSTBACK_DATABASE_URL": service.settings.database_url,
               "POSTBACK_ALLOW_TARGETS": "127.0.0.0/8"}
        command = [sys.executable, "-m", "postback", "deliveries", "replay",
                   "--partner", str(world.partner_id), "--since", SINCE]

        def run(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*command, *extra], env=env, capture_output=True,
                                  text=True, timeout=60)

        done = run()
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["replayed"] == 5 and out["skipped"] == 0
        assert "5/5" in done.stderr  # the progress bar
        got = receiver.wait_for(10)[5:]
        assert sorted(r.query["e"] for r in got) == sorted(d["event_id"] for d in originals)
        again = run()
        assert again.returncode == 0 and json.loads(again.stdout) == out
        assert "nothing new was sent" in again.stderr
        refused = run("--url", "http://10.1.2.3/pb")
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.startswith("postback: url:") and "private" in refused.stderr
        nobody = subprocess.run([*command[:5], "--partner", "99999", "--since", SINCE],
                                env=env, capture_output=True, text=True, timeout=60)
        assert nobody.returncode == 2 and "no partner 99999" in nobody.stderr
        assert rows(world) == 10
    finally:
        receiver.close()


def _pg_database(name: str) -> str:
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_SERVER.rsplit("/", 1)[0] + "/" + name


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migration_keeps_rows_and_lets_event_ids_repeat(kind: str, tmp_path: Path) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'postback.db'}"
    else:
        if not _pg_reachable():
            pytest.skip("PostgreSQL is not reachable")
        name = f"postback_replay_{uuid.uuid4().hex[:8]}"
        url = _pg_database(name)
    try:
        upgrade(url, "0009")
        engine = make_engine(url, pool_size=1)
        t = datetime(2026, 11, 1, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO brand (id, name, created_at) VALUES (1, 'B', :t)"),
                         {"t": t})
            conn.execute(text("INSERT INTO partner (id, name, partner_type, created_at) "
                              "VALUES (1, 'P', 'cashback', :t)"), {"t": t})
            for i in (1, 2):
                conn.execute(text(
                    "INSERT INTO delivery (id, event_id, partner_id, notification_type, "
                    "trigger, status, method, url, headers, attempt_count, failures, "
                    "next_attempt_at, created_at, open_claims) VALUES (:i, :e, 1, "
                    "'action-lifecycle', 'TRACKED', :s, 'GET', 'https://example.com/pb', "
                    "'{}', 1, 0, :t, :t, 0)"),
                    {"i": i, "e": f"e{i}", "s": "held" if i == 2 else "succeeded", "t": t})
        engine.dispose()
        upgrade(url)
        engine = make_engine(url, pool_size=1)
        with engine.begin() as conn:
            kept = conn.execute(select(delivery.c.id, delivery.c.event_id, delivery.c.status,
                                       delivery.c.replay_id).order_by(delivery.c.id)).all()
            assert [tuple(r) for r in kept] == [(1, "e1", "succeeded", None),
                                                (2, "e2", "held", None)]
            rid = conn.execute(replay.insert().values(
                partner_id=1, request_key="k", since=t, total=1, last_id=1,
                created_at=t).returning(replay.c.id)).scalar_one()
            conn.execute(text(
                "INSERT INTO delivery (id, event_id, partner_id, notification_type, trigger, "
                "status, method, url, headers, attempt_count, failures, next_attempt_at, "
                "created_at, open_claims, replay_id) VALUES (3, 'e1', 1, 'action-lifecycle', "
                "'TRACKED', 'pending', 'GET', 'https://example.com/pb', '{}', 0, 0, :t, :t, "
                "0, :r)"), {"t": t, "r": rid})
            assert conn.execute(select(func.count()).where(
                delivery.c.event_id == "e1")).scalar_one() == 2
        engine.dispose()
        if kind == "sqlite":
            path = tmp_path / "postback.db"
            plain = sqlite3.connect(path)
            try:  # the partial index came through the rebuild as partial
                sql = plain.execute("SELECT sql FROM sqlite_master WHERE name = "
                                    "'ix_delivery_held'").fetchone()[0]
                assert "WHERE status = 'held'" in sql
                assert plain.execute("PRAGMA foreign_key_check").fetchall() == []
            finally:
                plain.close()
            shutil.rmtree(tmp_path, ignore_errors=True)
    finally:
        if kind == "postgresql":
            with psycopg.connect(PG_SERVER, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_web_replay_beside_recover(world: World, receiver: Receiver) -> None:
    from fastapi.testclient import TestClient

    world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
    world.report()
    delivered(world, 1)
    client = TestClient(world.service.client.app, base_url="http://testserver")
    token = sign_in(client, world.partner_key)
    page = client.get("/partner/deliveries")
    assert 'id="replay-form"' in page.text and 'id="recover-form"' in page.text
    refused = client.post("/partner/deliveries/replay", data={
        "csrf_token": token, "since": "2000-01-01T00:00", "url": "http://10.9.9.9/x"})
    assert refused.status_code == 422
    assert "private address" in error_beside(refused.text, "p-url")
    assert 'value="http://10.9.9.9/x"' in refused.text  # shown again as sent
    missing = client.post("/partner/deliveries/replay", data={"csrf_token": token})
    assert missing.status_code == 422 and error_beside(missing.text, "p-since")
    sent = client.post("/partner/deliveries/replay", follow_redirects=False, data={
        "csrf_token": csrf(missing.text), "since": "2000-01-01T00:00", "type": ""})
    assert sent.status_code == 303 and sent.headers["location"] == "/partner/deliveries"
    shown = client.get("/partner/deliveries")
    assert "1 notifications are sent again with their event ids" in shown.text
    assert 'id="replays"' in shown.text and 'role="img"' in shown.text
    assert "notifications are sent again" not in client.get("/partner/deliveries").text
    receiver.wait_for(2)
    twice = client.post("/partner/deliveries/replay", data={
        "csrf_token": csrf(shown.text), "since": "2000-01-01T00:00"})
    assert "nothing was sent again" in twice.text
    assert rows(world) == 2


