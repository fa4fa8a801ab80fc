"""Every hostile answer in ``tests/hostile.py`` at once, each from its own partner's server,
beside a well-behaved partner: the well-behaved partner's postbacks are all delivered and
recorded within seconds, and every hostile answer is recorded as what it was (stored byte
for byte, shown readably), on SQLite and PostgreSQL. Then arbitrary response bytes
through the real driver, ``record`` and the read."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from postback.core.addresses import AddressPolicy
from postback.db.schema import delivery
from postback.delivery import queue
from postback.delivery.curl import CurlSender
from postback.services.deliveries import get_delivery
from tests.conftest import World, build_world
from tests.hostile import SCENARIOS, HostileReceiver, Script
from tests.receiver import Receiver


def items(world: World) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.partner("GET", "/v1/deliveries", 200)["items"]
    return found


def settled(world: World, count: int) -> list[dict[str, Any]] | None:
    got = items(world)
    done = len(got) == count and all(d["status"] in ("succeeded", "failed") for d in got)
    return got if done else None


def test_hostile_partners_beside_a_well_behaved_one(make_service: Any) -> None:
    service = make_service()
    good = build_world(service)
    good_receiver = Receiver()
    servers = {s.name: HostileReceiver(s.script) for s in SCENARIOS}
    hostile = {s.name: build_world(service) for s in SCENARIOS}
    try:
        good.subscribe(f"{good_receiver.url}/good?e={{EventId}}")
        for s in SCENARIOS:
            hostile[s.name].subscribe(f"{servers[s.name].url}/pb?e={{EventId}}")
            hostile[s.name].report()
        for _ in range(20):
            good.report()

        deadline = time.monotonic() + 20
        while (got := settled(good, 20)) is None:
            assert time.monotonic() < deadline, [d["status"] for d in items(good)]
            time.sleep(0.1)
        assert {d["status"] for d in got} == {"succeeded"}
        assert len(good_receiver.requests) == 20

        for s in SCENARIOS:
            world = hostile[s.name]
            while (mine := settled(world, 1)) is None:  # recorded, whatever it answered
                assert time.monotonic() < deadline + 20, (s.name, items(world))
                time.sleep(0.1)
            detail = world.partner("GET", f"/v1/deliveries/{mine[0]['id']}", 200)
            last = detail["attempts"][-1]
            expected = "succeeded" if s.error is None else "failed"
            assert detail["status"] == expected, (s.name, detail)
            assert last["error_class"] == (s.error.value if s.error else None), (s.name, last)
            if s.status is not None:
                assert last["response"]["status"] == s.status, s.name
            if s.body is not None:
                response = last["response"]
                exact = (base64.b64decode(response["body_base64"])
                         if response["body_base64"] is not None
                         else response["body"].encode("utf-8"))
                assert exact == s.body, s.name
                assert "\x00" not in response["body"], s.name
        long = hostile["300-long-headers"].partner(
            "GET", f"/v1/deliveries/{items(hostile['300-long-headers'])[0]['id']}", 200)
        headers = long["attempts"][-1]["response"]["headers"]
        assert sum(1 for name in headers if name.startswith("X-Long-")) == 300
        odd = hostile["non-utf8-header"].partner(
            "GET", f"/v1/deliveries/{items(hostile['non-utf8-header'])[0]['id']}", 200)
        seen = odd["attempts"][-1]["response"]["headers"]
        assert seen["X-Odd"] == "\xb2\xff" and seen["X-Fine"] == "café"
    finally:
        good_receiver.close()
        for server in servers.values():
            server.close()


def test_arbitrary_answers_through_the_driver_record_and_read(make_service: Any) -> None:
    """Whatever bytes a server answers with, the real curl driver returns a Response that
    ``record`` writes and the read shows, the body exactly as received."""
    service = make_service(start_engine=False)
    world = build_world(service)
    world.subscribe("http://127.0.0.1:9/pb")
    world.report()
    with service.db.connect() as conn:
        row = conn.execute(select(delivery)).one()
    job = queue.Job(id=row.id, event_id=row.event_id, setting_id=row.setting_id,
                    method="GET", url=row.url, headers={}, secret_headers=frozenset(),
                    success_response=None, body=None, attempt=1, failures=0)
    server = HostileReceiver()

    async def send() -> Any:
        async with CurlSender(1.0, 1.0, 4, "test", AddressPolicy.parse("127.0.0.0/8")) as s:
            return await s.send("GET", f"{server.url}/pb", {}, None)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(status=st.integers(100, 999), name=st.binary(max_size=20),
           value=st.binary(max_size=60), body=st.binary(max_size=300))
    def check(status: int, name: bytes, value: bytes, body: bytes) -> None:
        raw = (b"HTTP/1.1 %d X\r\n" % status + name + b": " + value
               + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        server.script = Script(raw)
        response = asyncio.run(send())
        result = queue.Result(
            job=job, started_at=datetime.now(UTC), request_headers={},
            status_code=response.status, response_headers=response.headers,
            response_body=response.body, latency_ms=response.latency_ms,
            error_class=response.error.value if response.error else None,
            error_message=response.message, outcome="retry",
            next_attempt_at=datetime.now(UTC))
        assert queue.record_isolating(service.db, "prop", [result], datetime.now(UTC)) == []
        with service.db.connect() as conn:
            shown = get_delivery(conn, world.partner_id, row.id)["attempts"][-1]
        assert shown["error_class"] == result.error_class
        if response.status is not None and shown["response"] is not None:
            got = shown["response"]
            exact = (base64.b64decode(got["body_base64"]) if got["body_base64"] is not None
                     else (got["body"] or "").encode("utf-8"))
            assert exact == (response.body or b"")

    try:
        check()
    finally:
        server.close()
