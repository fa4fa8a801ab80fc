"""The test tool: what a partner sees when it presses Test."""

from __future__ import annotations

import json

import pytest

from tests.conftest import World
from tests.receiver import Answer, Receiver


def test_saved_setting_with_sample_values_for_every_token(world: World,
                                                         receiver: Receiver) -> None:
    body = "{" + ", ".join(f'"{n}": "{{{n}}}"' for n in ("ActionId", "Payout", "SubId1",
                                                         "EventDate", "Trigger")) + "}"
    world.subscribe(f"{receiver.url}/pb?oid={{Oid}}", method="POST", body=body,
                    headers={"X-Key": "secret"})
    out = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 200, json={})
    req = receiver.wait_for(1)[0]
    assert json.loads(req.body) == {"ActionId": "1042", "Payout": "27.75",
                                    "SubId1": "member-8812",
                                    "EventDate": "2026-11-02T18:04:05+00:00",
                                    "Trigger": "TRACKED"}
    assert req.query == {"oid": "ORD-2026-55102"} and req.header("X-Key") == "secret"
    assert out["request"]["url"] == f"{receiver.url}/pb?oid=ORD-2026-55102"
    assert out["request"]["body"] == req.body.decode()
    assert out["request"]["headers"]["X-Key"] == "********"
    assert out["request"]["headers"]["webhook-id"] == req.header("webhook-id")
    assert out["response"] == {"status": 200, "headers": out["response"]["headers"],
                               "body": "OK"}
    assert out["outcome"] == "success" and out["diagnosis"].startswith("Delivered")
    assert out["latency_ms"] > 0
    assert world.partner("GET", "/v1/deliveries", 200)["items"] == []  # not a delivery


def test_overrides_and_a_real_action(world: World, receiver: Receiver) -> None:
    a = world.report(sub_id1="member-77", payout="3.10")
    out = world.partner("POST", "/v1/event-notifications/action-clearing/test", 200, json={
        "url": f"{receiver.url}/x?id={{ActionId}}&m={{SubId1}}&p={{Payout}}",
        "sample_id": a["id"]})
    assert receiver.wait_for(1)[0].query == {"id": str(a["id"]), "m": "member-77", "p": "3.10"}
    assert out["outcome"] == "success"
    world.partner("POST", "/v1/event-notifications/action-clearing/test", 404, json={
        "url": f"{receiver.url}/x", "sample_id": 999999})


@pytest.mark.parametrize(("answer", "outcome", "words"), [
    (Answer(404), "permanent_failure", "answered 404: it refused the request"),
    (Answer(503), "retry", "answered 503: a server error"),
    (Answer(302, {"Location": "https://elsewhere.example/"}), "permanent_failure",
     "Redirect (302) to https://elsewhere.example/: redirects are never followed"),
    (Answer(200, body=b"nope"), "retry", "must contain the Success Response text 'OK'"),
])
def test_diagnoses(world: World, answer: Answer, outcome: str, words: str) -> None:
    receiver = Receiver(lambda _req: answer)
    try:
        world.subscribe(f"{receiver.url}/pb", success_response="OK")
        out = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 200,
                            json={})
        assert out["outcome"] == outcome
        assert words in out["diagnosis"]
    finally:
        receiver.close()


def test_refused_and_timeout_diagnoses(world: World) -> None:
    closed = Receiver()
    closed.close()
    out = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 200,
                        json={"url": f"{closed.url}/pb"})
    assert out["outcome"] == "retry" and out["error_class"] == "connection_error"
    assert out["diagnosis"].startswith("Connection failed or was refused")
    assert out["response"] is None
    slow = Receiver(lambda _req: Answer(200, delay=2))
    try:
        out = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 200,
                            json={"url": f"{slow.url}/pb"})
        assert out["error_class"] == "timeout" and out["diagnosis"].startswith("Timeout")
    finally:
        slow.close()


def test_nothing_to_test_and_bad_templates(world: World) -> None:
    err = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 422, json={})
    assert err["message"].startswith("url: no action-lifecycle setting is saved yet")
    err = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 422,
                        json={"url": "https://x.example/?a={Nope}"})
    assert err["message"].startswith("url: unknown token {Nope}")
