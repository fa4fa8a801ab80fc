"""Action Clearing, opt-in triggers and the optional settings of every type, over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from tests.conftest import World
from tests.receiver import Answer, Receiver
from tests.test_delivery import wait_status


def lifecycle_run(world: World, as_of: str) -> None:
    env = {**os.environ, "POSTBACK_DATABASE_URL": world.service.settings.database_url}
    done = subprocess.run([sys.executable, "-m", "postback", "lifecycle", "run", "--as-of",
                           as_of], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_action_clearing_fires_once_with_cleared_date(world: World, receiver: Receiver) -> None:
    world.partner("PUT", "/v1/event-notifications/action-clearing", 200, json={
        "url": f"{receiver.url}/cleared?id={{ActionId}}&t={{Trigger}}&c={{ClearedDate}}"
               "&s={StatusDetail}&p={Payout}"})
    a = world.report(event_date="2026-11-02T18:04:05+00:00", payout="12.00")
    lifecycle_run(world, "2026-12-31T00:00:00Z")  # locks 12-02, clears 12-22
    lifecycle_run(world, "2027-01-31T00:00:00Z")  # nothing more to clear
    req = receiver.wait_for(1)[0]
    time.sleep(0.3)
    assert len(receiver.requests) == 1
    assert req.query == {"id": str(a["id"]), "t": "CLEARED", "c": "2026-12-22T18:04:05+00:00",
                         "s": "PAID", "p": "12.00"}
    types = world.partner("GET", "/v1/event-notifications", 200)["items"]
    assert [t["type"] for t in types][:2] == ["action-lifecycle", "action-clearing"]


def test_locked_and_paid_are_opt_in_on_the_lifecycle_url(world: World,
                                                         receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb?t={{Trigger}}&id={{ActionId}}", extra_triggers=["LOCKED"])
    a = world.report(event_date="2026-11-02T18:04:05+00:00")
    b = world.report()
    world.brand("POST", f"/v1/actions/{b['id']}/approve", 200)
    lifecycle_run(world, "2026-12-31T00:00:00Z")
    receiver.wait_for(4)
    time.sleep(0.3)
    got = sorted((r.query["id"], r.query["t"]) for r in receiver.requests)
    assert got == sorted([(str(a["id"]), "TRACKED"), (str(a["id"]), "LOCKED"),
                          (str(b["id"]), "TRACKED"), (str(b["id"]), "LOCKED")])
    err = world.partner("PUT", "/v1/event-notifications/action-clearing", 422, json={
        "url": "https://x.example/", "extra_triggers": ["LOCKED"]})
    assert err["message"].startswith("extra_triggers: LOCKED is not an opt-in trigger")


def test_paid_opt_in(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb?t={{Trigger}}", extra_triggers=["PAID"])
    world.report(event_date="2026-11-02T18:04:05+00:00")
    lifecycle_run(world, "2026-12-31T00:00:00Z")
    receiver.wait_for(2)
    time.sleep(0.3)
    assert sorted(r.query["t"] for r in receiver.requests) == ["PAID", "TRACKED"]


def test_minimum_delay_holds_a_postback(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb", minimum_delay_seconds=1)
    started = time.monotonic()
    world.report()
    receiver.wait_for(1, timeout=5)
    assert time.monotonic() - started >= 0.95


def test_success_and_error_response_turn_a_2xx_into_a_retry(world: World) -> None:
    answers = iter([Answer(200, body=b"queued"), Answer(200, body=b"OK but ERROR inside"),
                    Answer(200, body=b"OK")])
    receiver = Receiver(lambda _req: next(answers, Answer(200, body=b"OK")))
    try:
        world.subscribe(f"{receiver.url}/pb", success_response="OK", error_response="ERROR")
        world.report()
        delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
        got = wait_status(world, delivery["id"], "succeeded")
        attempts = got["attempts"]
        assert [a["outcome"] for a in attempts] == ["retry", "retry", "success"]
        assert [a["error_class"] for a in attempts] == ["unexpected_response"] * 2 + [None]
        assert "must contain the Success Response text 'OK'" in attempts[0]["error"]
    finally:
        receiver.close()


def test_optional_settings_read_back(world: World) -> None:
    body: dict[str, Any] = {
        "url": "https://x.example/pb", "method": "POST", "body_format": "xml",
        "body": "<a>{ActionId}</a>", "headers": {"X-Key": "secret"},
        "minimum_delay_seconds": 30, "max_requests_per_second": 5,
        "success_response": "OK", "error_response": "FAIL", "extra_triggers": ["PAID"]}
    saved = world.partner("PUT", "/v1/event-notifications/action-lifecycle", 200, json=body)
    for key, value in body.items():
        assert saved[key] == ({"X-Key": "********"} if key == "headers" else value), key
    assert saved["disabled_at"] is None and saved["scope"] == "global"
    err = world.partner("PUT", "/v1/event-notifications/action-lifecycle", 422,
                        json={**body, "minimum_delay_seconds": -1})
    assert err["message"].startswith("minimum_delay_seconds:")


def test_maximum_requests_per_second_holds_across_worker_processes(make_service: Any) -> None:
    """Two `postback worker` processes share one endpoint limited to 10 requests/s."""
    from tests.conftest import build_world
    from tests.test_crash import start_worker

    service = make_service(start_engine=False)
    world = build_world(service)
    receiver = Receiver()
    workers = []
    try:
        world.subscribe(f"{receiver.url}/pb", max_requests_per_second=10)
        world.brand("POST", "/v1/actions/batch", 201,
                    json={"actions": [world.action() for _ in range(40)]})
        workers = [start_worker(service.settings.database_url, poll="0.05") for _ in range(2)]
        arrivals = sorted(r.at for r in receiver.wait_for(40, timeout=30))
        busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
        assert busiest <= 12, busiest  # 10/s plus a tenth of a second's bank and one more
        assert arrivals[-1] - arrivals[0] >= 2.5  # and it really was spread out
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=20)
        receiver.close()
