"""Off is off: from the commit that turns a setting off, its endpoint gets no request; what
it had queued is held, with the reason, and goes out when it is turned on again."""

from __future__ import annotations

import time
from typing import Any

from postback.core.retry import RetryPolicy
from tests.conftest import World, build_world
from tests.receiver import Answer, Receiver


def setting_body(url: str, enabled: bool) -> dict[str, Any]:
    return {"url": url, "method": "GET", "body_format": "json", "body": "", "enabled": enabled}


def put(world: World, url: str, enabled: bool) -> None:
    world.partner("PUT", "/v1/event-notifications/action-lifecycle", 200,
                  json=setting_body(url, enabled))


def lifecycle_setting(world: World) -> dict[str, Any]:
    items = world.partner("GET", "/v1/event-notifications", 200)["items"]
    setting: dict[str, Any] = next(t for t in items if t["type"] == "action-lifecycle")[
        "setting"]
    return setting


def wait_for(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)
    return got


def test_turned_off_while_retrying_no_request_then_resumes(make_service: Any) -> None:
    service = make_service(retry=RetryPolicy(schedule=(0.3,) * 8, jitter=0.0,
                                             throttle_floor=0.0))
    world = build_world(service)
    failing = {"on": True}
    receiver = Receiver(lambda _req: Answer(503 if failing["on"] else 200))
    try:
        url = f"{receiver.url}/pb?e={{EventId}}"
        put(world, url, enabled=True)
        world.report()
        receiver.wait_for(2)  # it is retrying
        put(world, url, enabled=False)
        after_off = len(receiver.requests)
        (item,) = world.partner("GET", "/v1/deliveries", 200)["items"]
        # at most the one on the wire at the commit is recorded; nothing is sent after it
        held = wait_for(lambda: (d := world.partner("GET", f"/v1/deliveries/{item['id']}",
                                                    200))["status"] == "held" and d)
        assert held["held_reason"] == "the partner turned this postback off"
        assert held["next_attempt_at"] is None
        time.sleep(2)  # six retry periods
        assert len(receiver.requests) <= after_off + 1
        assert world.partner("GET", "/v1/deliveries?status=held", 200)["items"][0]["id"] \
            == item["id"]
        resend = world.partner("POST", f"/v1/deliveries/{item['id']}/resend", 409)
        assert "turned off" in resend["message"]

        failing["on"] = False
        sent_before = len(receiver.requests)
        put(world, url, enabled=True)
        receiver.wait_for(sent_before + 1)
        wait_for(lambda: world.partner("GET", f"/v1/deliveries/{item['id']}",
                                       200)["status"] == "succeeded")
    finally:
        receiver.close()


def test_auto_disable_holds_and_discard_gives_up(make_service: Any) -> None:
    service = make_service(retry=RetryPolicy(schedule=(0.2,) * 20, jitter=0.0,
                                             throttle_floor=0.0),
                           disable_after_hours=0.0, disable_after_failures=3)
    world = build_world(service)
    receiver = Receiver(lambda _req: Answer(500))
    try:
        url = f"{receiver.url}/pb?e={{EventId}}"
        put(world, url, enabled=True)
        world.report()
        world.report()
        setting = wait_for(lambda: (s := lifecycle_setting(world))["disabled_at"] and s)
        assert "disabled automatically" in setting["disabled_reason"]
        items = wait_for(lambda: (i := world.partner(
            "GET", "/v1/deliveries", 200)["items"]) and all(
                d["status"] == "held" for d in i) and i)
        assert len(items) == 2
        detail = world.partner("GET", f"/v1/deliveries/{items[0]['id']}", 200)
        assert "disabled automatically" in detail["held_reason"]
        count = len(receiver.requests)
        time.sleep(1.2)  # six retry periods
        assert len(receiver.requests) == count

        assert world.partner("POST", "/v1/event-notifications/action-lifecycle/held/discard",
                             200) == {"discarded": 2}
        for d in world.partner("GET", "/v1/deliveries", 200)["items"]:
            assert d["status"] == "failed" and d["last_error"] == "discarded"
        world.partner("POST", "/v1/event-notifications/product-data-change/held/discard", 404)
    finally:
        receiver.close()
