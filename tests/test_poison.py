"""One partner's bad data never holds up another's: a result whose write fails, a secret
that will not open, answers that PostgreSQL text cannot hold. Each time a well-behaved
partner's postbacks must all be delivered *and recorded* within seconds."""

from __future__ import annotations

import base64
import time
from typing import Any

from sqlalchemy import text, update

from postback.db.schema import notification_setting
from tests.conftest import Service, World, build_world
from tests.receiver import Answer, Receiver


def deliveries(world: World) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = world.partner("GET", "/v1/deliveries?limit=200", 200)["items"]
    return items


def wait_all(world: World, count: int, status: str, timeout: float = 20) -> list[Any]:
    """Every one of the partner's ``count`` deliveries reaches ``status`` (recorded)."""
    deadline = time.monotonic() + timeout
    while True:
        got = deliveries(world)
        if len(got) == count and all(d["status"] == status for d in got):
            return got
        assert time.monotonic() < deadline, [(d["id"], d["status"]) for d in got]
        time.sleep(0.1)


def well_behaved(service: Service) -> tuple[World, Receiver]:
    world = build_world(service)
    receiver = Receiver()
    world.subscribe(f"{receiver.url}/good?e={{EventId}}")
    return world, receiver


def poison_trigger(service: Service) -> None:
    """A real database refusing one partner's attempts: a trigger that fails any insert of
    an attempt whose stored response says ``poison`` (as a value PostgreSQL refuses would)."""
    with service.db.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(
                "CREATE TRIGGER poison BEFORE INSERT ON delivery_attempt "
                "WHEN NEW.response_body LIKE '%poison%' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned attempt refused'); END"))
        else:
            conn.execute(text(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.response_body LIKE '%poison%' THEN "
                "RAISE EXCEPTION 'poisoned attempt refused'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"))
            conn.execute(text(
                "CREATE TRIGGER poison BEFORE INSERT ON delivery_attempt "
                "FOR EACH ROW EXECUTE FUNCTION poison()"))


def drop_poison(service: Service) -> None:
    with service.db.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS poison" + (
            "" if conn.dialect.name == "sqlite" else " ON delivery_attempt")))
        if conn.dialect.name != "sqlite":
            conn.execute(text("DROP FUNCTION IF EXISTS poison()"))


def test_a_result_whose_write_fails_fails_alone(make_service: Any) -> None:
    service = make_service()
    good, good_receiver = well_behaved(service)
    bad = build_world(service)
    bad_receiver = Receiver(lambda _req: Answer(200, body=b"poison"))
    poison_trigger(service)
    try:
        bad.subscribe(f"{bad_receiver.url}/bad")
        for _ in range(3):
            bad.report()
        for _ in range(20):
            good.report()
        wait_all(good, 20, "succeeded")
        # every one arrived (libcurl may repeat a request whose reused connection the
        # receiver had just closed: the same event id, which receivers drop)
        assert len({r.query["e"] for r in good_receiver.requests}) == 20
        failed = wait_all(bad, 3, "failed")
        assert len(bad_receiver.requests) == 3  # sent once each, never again
        one = bad.partner("GET", f"/v1/deliveries/{failed[0]['id']}", 200)
        (attempt,) = one["attempts"]
        assert attempt["error_class"] == "internal"
        assert "could not be stored" in attempt["error"]
        assert "answered HTTP 200" in attempt["error"]
        assert "resend it" in attempt["error"]
    finally:
        drop_poison(service)
        good_receiver.close()
        bad_receiver.close()


def test_answers_text_cannot_hold_are_stored_byte_for_byte(make_service: Any) -> None:
    """NUL bytes (PostgreSQL text refuses them), invalid UTF-8 and binary: recorded, shown
    readably, and kept exactly (``body_base64``)."""
    service = make_service()
    good, good_receiver = well_behaved(service)
    bodies = [b"ok\x00done", b"caf\xe9 \xff\xfe", bytes(range(256))]
    hostile = build_world(service)
    hostile_receiver = Receiver(
        lambda req: Answer(200, body=bodies[int(req.query["n"])]))
    try:
        hostile.subscribe(f"{hostile_receiver.url}/h?n={{SubId1}}")
        for n in range(3):
            hostile.report(sub_id1=str(n))
        for _ in range(20):
            good.report()
        wait_all(good, 20, "succeeded")
        got = wait_all(hostile, 3, "succeeded")
        seen = {}
        for d in got:
            (attempt,) = hostile.partner("GET", f"/v1/deliveries/{d['id']}", 200)["attempts"]
            response = attempt["response"]
            seen[base64.b64decode(response["body_base64"])] = response["body"]
        assert set(seen) == set(bodies)
        assert seen[b"ok\x00done"] == "ok\ufffddone"
        assert seen[b"caf\xe9 \xff\xfe"] == "caf\ufffd \ufffd\ufffd"
        plain = good.partner("GET", f"/v1/deliveries/{deliveries(good)[0]['id']}", 200)
        assert plain["attempts"][0]["response"] == {
            "status": 200, "headers": plain["attempts"][0]["response"]["headers"],
            "body": "OK", "body_base64": None}
    finally:
        good_receiver.close()
        hostile_receiver.close()


def test_a_secret_that_will_not_open_fails_alone(make_service: Any) -> None:
    service = make_service()
    good, good_receiver = well_behaved(service)
    locked = build_world(service)
    locked_receiver = Receiver()
    try:
        setting = locked.subscribe(f"{locked_receiver.url}/locked", signed=True)
        with service.db.begin() as conn:  # sealed under a key this server does not have
            conn.execute(update(notification_setting)
                         .where(notification_setting.c.partner_id == locked.partner_id)
                         .values(signing_secret="enc1:gAAAAABnot-a-token-this-key-opens"))
        assert setting["signed"] is True
        for _ in range(2):
            locked.report()
        for _ in range(20):
            good.report()
        wait_all(good, 20, "succeeded")
        deadline = time.monotonic() + 20
        while True:
            got = deliveries(locked)
            attempts = [a for d in got for a in
                        locked.partner("GET", f"/v1/deliveries/{d['id']}", 200)["attempts"]]
            if len(got) == 2 and len(attempts) >= 2:
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        assert locked_receiver.requests == []  # nothing goes out unsigned
        assert {a["error_class"] for a in attempts} == {"internal"}
        assert all("POSTBACK_SECRET_KEY" in a["error"] and "nothing was sent" in a["error"]
                   for a in attempts)
        # the schedule bounds it: retried, then failed, never forever
        wait_all(locked, 2, "failed")
    finally:
        good_receiver.close()
        locked_receiver.close()


def test_non_ascii_url_and_header_values_are_sent_encoded_never_stuck(
        make_service: Any) -> None:
    """Saved as typed; sent percent-encoded (URL) and as UTF-8 bytes (header), by the
    engine and by the test tool alike."""
    service = make_service()
    world = build_world(service)
    receiver = Receiver()
    try:
        world.subscribe(f"{receiver.url}/p2é?x=é&id={{ActionId}}", headers={"X-A": "é"})
        tested = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 200,
                               json={})
        assert tested["outcome"] == "success", tested
        world.report()
        test_request, delivered = receiver.wait_for(2)
        for req in (test_request, delivered):
            assert req.path.startswith("/p2%C3%A9?x=%C3%A9&id=")
            assert (req.header("X-A") or "").encode("latin-1") == "é".encode()
        (item,) = deliveries(world)
        got = wait_all(world, 1, "succeeded")
        assert got[0]["id"] == item["id"]
    finally:
        receiver.close()


def test_a_bug_handling_answers_costs_no_endpoint_its_places(
        make_service: Any, monkeypatch: Any) -> None:
    """An exception in the engine's own reading of an answer, even one that breaks the
    failure it would record instead, still frees the request's place at its endpoint: with
    one place per endpoint, the next postbacks go out, and the broken ones are retried."""
    from postback.delivery.engine import Engine

    real = Engine._result
    broken = {"left": 4}  # the first two answers: _result, then the failure's own, raise

    def flaky(self: Engine, *args: Any) -> Any:
        if broken["left"] > 0:
            broken["left"] -= 1
            raise RuntimeError("a bug")
        return real(self, *args)

    monkeypatch.setattr(Engine, "_result", flaky)
    service = make_service(endpoint_concurrency=1, lease_seconds=2.0)
    world, receiver = well_behaved(service)
    try:
        for _ in range(5):
            world.report()
        wait_all(world, 5, "succeeded", timeout=30)
        assert broken["left"] == 0
        assert len({r.query["e"] for r in receiver.requests}) == 5
    finally:
        receiver.close()


def test_a_request_task_that_ends_without_an_answer_costs_no_endpoint_its_places(
        make_service: Any, monkeypatch: Any) -> None:
    """A request the driver runs as a task (aiohttp; curl while it looks a name up) that
    ends cancelled or raising, not with a Response, is still an attempt (internal, retried):
    with one place per endpoint the next postbacks go out."""
    import asyncio

    from postback.delivery.http import AiohttpSender

    real = AiohttpSender.send
    calls = {"n": 0}

    async def ending_badly(self: AiohttpSender, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise asyncio.CancelledError  # as a library's internals might let escape
        if calls["n"] == 2:
            raise RuntimeError("a bug past send's own guard")
        return await real(self, *args)

    monkeypatch.setattr(AiohttpSender, "send", ending_badly)
    service = make_service(http_client="aiohttp", endpoint_concurrency=1)
    world, receiver = well_behaved(service)
    try:
        for _ in range(4):
            world.report()
        got = wait_all(world, 4, "succeeded", timeout=30)
        assert len({r.query["e"] for r in receiver.requests}) == 4
        errors = [a["error_class"] for d in got
                  for a in world.partner("GET", f"/v1/deliveries/{d['id']}", 200)["attempts"]]
        assert errors.count("internal") == 2
    finally:
        receiver.close()
