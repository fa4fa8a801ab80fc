"""Recovering failed deliveries, and endpoints that are disabled for failing too long."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from tests.conftest import Service, World, build_world
from tests.receiver import Answer, Receiver
from tests.test_delivery import wait_status


def fail_then(world: World, count: int, receiver: Receiver) -> list[int]:
    """``count`` deliveries that fail permanently (404) and are then wanted again."""
    world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
    world.brand("POST", "/v1/actions/batch", 201,
                json={"actions": [world.action() for _ in range(count)]})
    ids = [d["id"] for d in world.partner("GET", "/v1/deliveries", 200)["items"]]
    for delivery_id in ids:
        wait_status(world, delivery_id, "failed")
    return ids


def test_recover_requeues_failed_deliveries_in_the_window(world: World) -> None:
    state = {"status": 404}
    receiver = Receiver(lambda _req: Answer(state["status"]))
    try:
        ids = fail_then(world, 3, receiver)
        state["status"] = 200
        none = world.partner("POST", "/v1/deliveries/recover", 200,
                             json={"since": "2000-01-01T00:00:00Z",
                                   "until": "2000-01-02T00:00:00Z"})
        assert none == {"requeued": 0}
        out = world.partner("POST", "/v1/deliveries/recover", 200,
                            json={"since": "2000-01-01T00:00:00Z", "type": "action-lifecycle"})
        assert out == {"requeued": 3}
        for delivery_id in ids:
            got = wait_status(world, delivery_id, "succeeded")
            assert [a["outcome"] for a in got["attempts"]] == ["permanent_failure", "success"]
        again = world.partner("POST", "/v1/deliveries/recover", 200,
                              json={"since": "2000-01-01T00:00:00Z"})
        assert again == {"requeued": 0}  # idempotent: nothing failed any more
        sent = [r.query["e"] for r in receiver.requests]
        assert len(sent) == 6 and len(set(sent)) == 3  # same event ids the second time
    finally:
        receiver.close()


def test_recover_touches_only_the_callers_deliveries(service: Service) -> None:
    a, b = build_world(service), build_world(service)
    receiver = Receiver(lambda _req: Answer(404))
    try:
        fail_then(a, 2, receiver)
        assert b.partner("POST", "/v1/deliveries/recover", 200,
                         json={"since": "2000-01-01T00:00:00Z"}) == {"requeued": 0}
        err = b.partner("POST", "/v1/deliveries/recover", 422, json={"since": "yesterday"})
        assert err["message"].startswith("since:")
    finally:
        receiver.close()


def test_cli_recover_with_progress(make_service: Any) -> None:
    service = make_service()
    world = build_world(service)
    receiver = Receiver(lambda _req: Answer(404))
    try:
        fail_then(world, 5, receiver)
        service.engine.stop()  # type: ignore[union-attr]
        env = {**os.environ, "POSTBACK_DATABASE_URL": service.settings.database_url}
        done = subprocess.run([sys.executable, "-m", "postback", "deliveries", "recover",
                               "--since", "2000-01-01T00:00:00Z", "--partner",
                               str(world.partner_id)], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == '{"requeued": 5}'
        assert "5/5" in done.stderr  # the progress bar
        pending = world.partner("GET", "/v1/deliveries?status=pending", 200)["items"]
        assert len(pending) == 5
    finally:
        receiver.close()


def test_an_endpoint_failing_for_too_long_is_disabled_and_re_enabled_by_saving(
        make_service: Any) -> None:
    service = make_service(disable_after_hours=0.5 / 3600, disable_after_failures=3)
    world = build_world(service)
    receiver = Receiver(lambda _req: Answer(500))
    try:
        world.subscribe(f"{receiver.url}/pb")
        deadline = time.monotonic() + 15
        while True:
            world.report()
            setting = world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"]
            if setting["disabled_at"]:
                break
            assert time.monotonic() < deadline, setting
            time.sleep(0.2)
        assert setting["disabled_reason"].startswith("disabled automatically: every delivery "
                                                     "failed for")
        before = len(world.partner("GET", "/v1/deliveries?limit=1000", 200)["items"])
        world.report()  # a disabled endpoint gets no new deliveries
        assert len(world.partner("GET", "/v1/deliveries?limit=1000", 200)["items"]) == before
        saved = world.subscribe(f"{receiver.url}/pb")
        assert saved["disabled_at"] is None and saved["disabled_reason"] is None
        world.report()
        assert len(world.partner("GET", "/v1/deliveries?limit=1000", 200)["items"]) == before + 1
    finally:
        receiver.close()
