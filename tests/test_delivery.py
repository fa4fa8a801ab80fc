"""Postbacks over real HTTP to loopback receivers: the exact requests partners get, and how
every kind of answer is classified, retried and logged."""

from __future__ import annotations

import json
import os
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qsl

import pytest

from postback.services.ids import uuid7, uuid7_ms
from tests.conftest import Service, World, build_world
from tests.receiver import Answer, Received, Receiver

HOSTILE = 'a&b=c#d?e"f\\g<h>i]]>j\r\nk ü 日本'
FIELDS = ("ActionId", "Trigger", "Sequence", "Status", "Payout", "DeltaPayout", "Amount",
          "DeltaAmount", "SubId1", "EventId", "Oid", "CampaignName", "Items")
BODIES = {
    "json": "{" + ", ".join(f'"{f}": "{{{f}}}"' for f in FIELDS) + "}",
    "xml": "<postback>" + "".join(f"<{f}>{{{f}}}</{f}>" for f in FIELDS) + "</postback>",
    "form": "&".join(f"{f}={{{f}}}" for f in FIELDS),
}


def wait_status(world: World, delivery_id: int, status: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = world.partner("GET", f"/v1/deliveries/{delivery_id}", 200)
        if got["status"] == status:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"delivery stayed {got['status']}: {got}")
        time.sleep(0.05)


def decode(fmt: str, req: Received) -> dict[str, Any]:
    if fmt == "get":
        return req.query
    text = req.body.decode("utf-8")
    if fmt == "json":
        return dict(json.loads(text))
    if fmt == "xml":
        return {child.tag: child.text or "" for child in ET.fromstring(text)}
    return dict(parse_qsl(text, keep_blank_values=True))


def once_each(world: World, receiver: Receiver, events: int) -> list[Received]:
    """The last request of each of ``events`` postbacks, once every delivery is recorded.

    Each request the receiver got must be an attempt the engine recorded, and each
    delivery must have succeeded exactly once: a second request is allowed only as the
    retry of an attempt that failed (on a loaded machine a 1 s answer can time out), never
    as a copy the log does not show."""
    deadline = time.monotonic() + 10
    while True:
        page = world.partner("GET", "/v1/deliveries", 200)["items"]
        if len(page) == events and all(d["status"] == "succeeded" for d in page):
            break
        assert time.monotonic() < deadline, f"deliveries not all succeeded: {page}"
        time.sleep(0.05)
    time.sleep(0.2)  # a copy the engine sent without recording would arrive by now
    details = [world.partner("GET", f"/v1/deliveries/{d['id']}", 200) for d in page]
    attempts = [a for d in details for a in d["attempts"]]
    succeeded = [a for a in attempts if a["outcome"] == "success"]
    assert len(succeeded) == events, details
    assert len(receiver.requests) == len(attempts), (receiver.requests, details)
    last = {r.header("webhook-id"): r for r in receiver.requests}
    assert len(last) == events
    return list(last.values())


@pytest.mark.parametrize("fmt", ["get", "json", "xml", "form"])
def test_tracked_modified_reversed_arrive_with_the_right_values(
        world: World, receiver: Receiver, fmt: str) -> None:
    if fmt == "get":
        query = "&".join(f"{f.lower()}={{{f}}}" for f in FIELDS)
        world.subscribe(f"{receiver.url}/pb?{query}", headers={"X-Secret": "s3cret"})
    else:
        world.subscribe(f"{receiver.url}/pb", method="POST", body_format=fmt, body=BODIES[fmt],
                        headers={"X-Secret": "s3cret"})
    a = world.report(amount="100.00", payout="10.00", sub_id1=HOSTILE, oid="O&1",
                     items=[{"sku": "S<1>", "quantity": 1, "amount": "100.00"}])
    world.brand("PATCH", f"/v1/actions/{a['id']}", 200,
                json={"payout": "7.25", "reason": "ITEM_RETURNED"})
    world.brand("POST", f"/v1/actions/{a['id']}/reverse", 200, json={"reason": "CONS_FRAUD"})
    received = once_each(world, receiver, 3)
    got = sorted((decode(fmt, r) for r in received),
                 key=lambda v: int(v.get("Sequence") or v.get("sequence")))
    key = (lambda f: f.lower()) if fmt == "get" else (lambda f: f)
    rows = [{f: v[key(f)] for f in FIELDS} for v in got]
    assert [(r["Trigger"], r["Sequence"], r["Status"], r["Payout"], r["DeltaPayout"],
             r["Amount"], r["DeltaAmount"]) for r in rows] == [
        ("TRACKED", "1", "PENDING", "10.00", "10.00", "100.00", "100.00"),
        ("MODIFIED", "2", "PENDING", "7.25", "-2.75", "100.00", "0.00"),
        ("REVERSED", "3", "REVERSED", "0.00", "-7.25", "0.00", "-100.00"),
    ]
    for row, req in zip(rows, sorted(received, key=lambda r: decode(fmt, r)[key("Sequence")]),
                        strict=True):
        assert row["SubId1"] == HOSTILE
        assert row["Oid"] == "O&1" and row["ActionId"] == str(a["id"])
        assert row["CampaignName"] == "Acme Shoes US"
        assert json.loads(row["Items"])[0]["sku"] == "S<1>" if fmt != "xml" else True
        assert req.header("webhook-id") == row["EventId"]
        assert req.header("X-Secret") == "s3cret"
        assert req.header("User-Agent", ).startswith("postback/")  # type: ignore[union-attr]
        assert req.method == ("GET" if fmt == "get" else "POST")
        if fmt != "get":
            assert req.header("Content-Type", ).startswith(  # type: ignore[union-attr]
                {"json": "application/json", "xml": "application/xml",
                 "form": "application/x-www-form-urlencoded"}[fmt])
    assert len({r["EventId"] for r in rows}) == 3


def test_the_exact_json_body_a_partner_designed(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/in", method="POST", body_format="json",
                    body='{"id": "{ActionId}", "payout": {Payout}, "sub": "{SubId1}", '
                         '"promo": {PromoCode}, "status": "{Status}"}')
    a = world.report(payout="27.75", sub_id1='say "hi"\n')
    req = receiver.wait_for(1)[0]
    assert req.path == "/in"
    assert req.body.decode() == (f'{{"id": "{a["id"]}", "payout": 27.75, '
                                 '"sub": "say \\"hi\\"\\n", "promo": null, "status": "PENDING"}')


def test_postbacks_arrive_within_milliseconds_of_the_commit(world: World,
                                                            receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/in?e={{EventId}}")
    world.report()
    req = receiver.wait_for(1, timeout=5)[0]
    latency_ms = time.time() * 1000 - uuid7_ms(req.query["e"])
    assert latency_ms < 2000  # wake-on-commit; a polling sleep alone would not be needed


@pytest.mark.parametrize(("script", "final", "outcomes", "errors"), [
    ([Answer(500), Answer(200)], "succeeded", ["retry", "success"], ["http_5xx", None]),
    ([Answer(429), Answer(200)], "succeeded", ["retry", "success"], ["http_4xx", None]),
    ([Answer(408), Answer(204)], "succeeded", ["retry", "success"], ["http_4xx", None]),
    ([Answer(404)], "failed", ["permanent_failure"], ["http_4xx"]),
    ([Answer(410)], "failed", ["permanent_failure"], ["http_4xx"]),
    ([Answer(301, {"Location": "/moved"})], "failed", ["permanent_failure"], ["redirect"]),
    ([Answer(200, delay=1.5), Answer(200)], "succeeded", ["retry", "success"],
     ["timeout", None]),
    ([Answer(500)] * 4, "failed", ["retry", "retry", "retry", "permanent_failure"],
     ["http_5xx"] * 4),
])
def test_retry_classification(world: World, script: list[Answer], final: str,
                              outcomes: list[str], errors: list[str | None]) -> None:
    answers = iter(script)
    receiver = Receiver(lambda _req: next(answers, Answer(200)))
    try:
        world.subscribe(f"{receiver.url}/pb?id={{ActionId}}")
        world.report()
        delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
        got = wait_status(world, delivery["id"], final)
        assert [a["outcome"] for a in got["attempts"]] == outcomes
        assert [a["error_class"] for a in got["attempts"]] == errors
        assert len(receiver.requests) == len(outcomes)  # a redirect is never followed
        assert all(r.path.startswith("/pb") for r in receiver.requests)
        if final == "failed" and len(outcomes) > 1:
            assert "retries exhausted after 4 attempts" in got["attempts"][-1]["error"]
    finally:
        receiver.close()


def test_503_retry_after_is_honoured(world: World) -> None:
    answers = iter([Answer(503, {"Retry-After": "1"})])
    receiver = Receiver(lambda _req: next(answers, Answer(200)))
    try:
        world.subscribe(f"{receiver.url}/pb")
        world.report()
        first, second = receiver.wait_for(2, timeout=10)
        assert second.at - first.at >= 0.95  # the schedule alone says 0.05 s
    finally:
        receiver.close()


def test_refused_connections_are_retried_then_fail(world: World) -> None:
    closed = Receiver()
    url = closed.url
    closed.close()  # nothing listens on that port any more
    world.subscribe(f"{url}/pb")
    world.report()
    delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
    got = wait_status(world, delivery["id"], "failed")
    assert [a["error_class"] for a in got["attempts"]] == ["connection_error"] * 4
    assert [a["outcome"] for a in got["attempts"]] == ["retry"] * 3 + ["permanent_failure"]
    assert got["attempts"][0]["response"] is None


def test_attempt_log_masks_secrets_and_keeps_20_kb_of_response(world: World) -> None:
    receiver = Receiver(lambda _req: Answer(200, {"X-Reply": "yes"}, b"x" * 50_000))
    try:
        world.subscribe(f"{receiver.url}/pb", headers={"Authorization": "Bearer partner-secret"})
        world.report()
        delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
        got = wait_status(world, delivery["id"], "succeeded")
        attempt = got["attempts"][0]
        assert attempt["request"]["headers"]["Authorization"] == "********"
        assert attempt["request"]["headers"]["webhook-id"] == got["event_id"]
        assert attempt["response"]["status"] == 200
        assert attempt["response"]["headers"]["X-Reply"] == "yes"
        assert len(attempt["response"]["body"]) == 20 * 1024
        assert attempt["latency_ms"] > 0
        assert "partner-secret" not in json.dumps(got)
        setting = world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"]
        assert setting["headers"] == {"Authorization": "********"}
    finally:
        receiver.close()


def test_resend_sends_the_same_event_again(world: World) -> None:
    answers = iter([Answer(404)])
    receiver = Receiver(lambda _req: next(answers, Answer(200)))
    try:
        world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
        world.report()
        delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
        wait_status(world, delivery["id"], "failed")
        world.partner("POST", f"/v1/deliveries/{delivery['id']}/resend", 200)
        got = wait_status(world, delivery["id"], "succeeded")
        assert [a["outcome"] for a in got["attempts"]] == ["permanent_failure", "success"]
        first, second = receiver.wait_for(2)
        assert first.query["e"] == second.query["e"] == got["event_id"]
    finally:
        receiver.close()


def test_delivery_filters(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb")
    a = world.report()
    b = world.report()
    world.brand("POST", f"/v1/actions/{b['id']}/reverse", 200, json={"reason": "REJECTED"})
    receiver.wait_for(3)
    items = world.partner("GET", "/v1/deliveries?trigger=REVERSED", 200)["items"]
    assert [(d["trigger"], d["action_id"]) for d in items] == [("REVERSED", b["id"])]
    items = world.partner("GET", f"/v1/deliveries?action_id={a['id']}", 200)["items"]
    assert [d["trigger"] for d in items] == ["TRACKED"]
    assert world.partner("GET", "/v1/deliveries?status=failed", 200)["items"] == []
    page = world.partner("GET", "/v1/deliveries?limit=2", 200)
    assert len(page["items"]) == 2 and page["next_cursor"]


def test_disabled_and_deleted_settings(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb", enabled=False)
    world.report()
    assert world.partner("GET", "/v1/deliveries", 200)["items"] == []
    world.partner("DELETE", "/v1/event-notifications/action-lifecycle", 204)
    world.partner("DELETE", "/v1/event-notifications/action-lifecycle", 404)
    assert world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"] is None
    world.report()
    time.sleep(0.2)
    assert receiver.requests == []


def test_a_slow_partner_does_not_hold_up_the_others(make_service: Any) -> None:
    service: Service = make_service(endpoint_concurrency=2, total_timeout=10.0)
    slow_world, fast_world = build_world(service), build_world(service)
    slow = Receiver(lambda _req: Answer(200, delay=2.0))
    fast = Receiver()
    try:
        slow_world.subscribe(f"{slow.url}/slow")
        fast_world.subscribe(f"{fast.url}/fast")
        slow_world.brand("POST", "/v1/actions/batch", 201,
                         json={"actions": [slow_world.action() for _ in range(20)]})
        started = time.monotonic()
        fast_world.brand("POST", "/v1/actions/batch", 201,
                         json={"actions": [fast_world.action() for _ in range(20)]})
        fast.wait_for(20, timeout=1.5)
        assert time.monotonic() - started < 1.5
        assert slow.max_active == 2  # the slow endpoint holds only its share
    finally:
        slow.close()
        fast.close()


@pytest.mark.parametrize(("body", "message"), [
    ({"url": "ftp://x.example/"}, "url: must start with http:// or https://"),
    ({"url": "https://user:pw@x.example/"}, "url: must not carry user:password@"),
    ({"url": "https://x.example/?a={ActionID}"},
     "url: unknown token {ActionID}; did you mean {ActionId}"),
    ({"url": "https://x.example/", "method": "POST", "body": '{"a": "{subid1}"}'},
     "body: unknown token {subid1}; did you mean {SubId1}"),
    ({"url": "https://x.example/", "body": "a={ActionId}"},
     "body: a GET postback carries its values in the url"),
    ({"url": "https://x.example/", "headers": {"X-A": "a\r\nX-B: b"}},
     "headers: header 'X-A' value must not contain CR, LF or NUL"),
    ({"url": "https://x.example/", "headers": {"Bad Name": "v"}},
     "headers: header name 'Bad Name' is not a valid HTTP token"),
    ({"url": "https://x.example/", "method": "PUT"}, "method: "),
    ({"url": "https://x.example/", "method": "POST", "body": "x" * 70_000}, "body: "),
])
def test_settings_are_validated_on_save(world: World, body: dict[str, Any],
                                        message: str) -> None:
    err = world.partner("PUT", "/v1/event-notifications/action-lifecycle", 422, json=body)
    assert err["message"].startswith(message), err
    assert world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"] is None


def test_unknown_notification_type_is_404(world: World) -> None:
    world.partner("PUT", "/v1/event-notifications/nope", 404, json={"url": "https://x.example/"})


def test_event_ids_are_unique_time_ordered_and_differ_in_a_forked_child() -> None:
    ids = [uuid7() for _ in range(5000)]  # across several fetches of random bytes
    assert len(set(ids)) == 5000
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert [uuid7_ms(i) for i in ids] == sorted(uuid7_ms(i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next ids, to compare with the parent's
        os.close(read)
        os.write(write, "\n".join(uuid7() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    parent = [uuid7() for _ in range(10)]
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    assert len(child) == 10
    assert [c[15:] for c in child] != [p[15:] for p in parent]  # not the same random bytes
