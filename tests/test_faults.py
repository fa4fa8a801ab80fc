"""Faults while postbacks flow: workers killed again and again, PostgreSQL restarted, a
receiver that flaps, a retry queue past 100,000. Afterwards every notification has reached
the (idempotent) receiver; the duplicates it saw before deduplicating are reported."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from postback.db.schema import delivery, notification_setting
from tests.conftest import Service, build_world
from tests.flaky_receiver import FlakyReceiver
from tests.test_crash import start_worker

FAST_RETRIES = {"POSTBACK_RETRY_SCHEDULE": "0.1,0.2,0.3,0.5,0.5,1,1,1,1,1,1,1",
                "POSTBACK_RETRY_THROTTLE_FLOOR": "0", "POSTBACK_RETRY_JITTER": "0",
                "POSTBACK_TOTAL_TIMEOUT": "1", "POSTBACK_CONNECT_TIMEOUT": "1",
                "POSTBACK_LEASE_SECONDS": "3", "POSTBACK_ENDPOINT_CONCURRENCY": "64"}


def wait_all_succeeded(service: Service, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with service.db.connect() as conn:
                done = conn.execute(select(func.count()).select_from(delivery).where(
                    delivery.c.status == "succeeded")).scalar_one()
                failed = conn.execute(select(func.count()).select_from(delivery).where(
                    delivery.c.status == "failed")).scalar_one()
        except Exception:  # the database may be restarting
            done, failed = -1, 0
        assert failed == 0, f"{failed} deliveries failed for good"
        if done == total:
            return
        assert time.monotonic() < deadline, f"only {done} of {total} succeeded"
        time.sleep(0.25)


def report(capsys: Any, name: str, rx: FlakyReceiver, expected: set[str]) -> None:
    accepted = sum(rx.accepted.values())
    with capsys.disabled():
        print(f"\n[faults] {name}: notifications {len(expected)}, delivered "
              f"{len(set(rx.accepted) & expected)}, requests {rx.requests}, accepted "
              f"{accepted}, duplicates {accepted - len(rx.accepted)}, "
              f"lost {len(expected - set(rx.accepted))}")


def restart_postgres() -> None:
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, timeout=120, capture_output=True)


@pytest.mark.serial  # restarts PostgreSQL (see pyproject.toml)
def test_kills_restarts_and_flapping_lose_nothing(make_service: Any, db_url: str,
                                                  capsys: Any) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    rx = FlakyReceiver(flaky_attempts=2, hang=2.0)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        world.subscribe(f"{rx.url}/pb")
        for _ in range(2):
            world.brand("POST", "/v1/actions/batch", 201,
                        json={"actions": [world.action() for _ in range(1000)]})
        with service.db.connect() as conn:
            expected = set(conn.execute(select(delivery.c.event_id)).scalars())
        url = service.settings.database_url
        workers = [start_worker(url, **FAST_RETRIES) for _ in range(2)]
        for round_ in range(4):
            time.sleep(1.0)
            victim = workers[round_ % 2]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            if round_ == 1 and url.startswith("postgresql"):
                restart_postgres()
            workers[round_ % 2] = start_worker(url, **FAST_RETRIES)
        wait_all_succeeded(service, len(expected), timeout=180)
        assert set(rx.accepted) == expected  # every notification reached the receiver
        report(capsys, f"kills + flapping ({db_url.split(':')[0]})", rx, expected)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        rx.close()


@pytest.mark.parametrize("count", [100_100])
def test_a_retry_queue_past_100000_drains(make_service: Any, db_url: str, capsys: Any,
                                         count: int) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    rx = FlakyReceiver(flaky_attempts=0)
    rx.down = True
    worker = None
    try:
        setting = world.subscribe(f"{rx.url}/pb")
        now = datetime.now(UTC)
        with service.db.begin() as conn:
            setting_id = conn.execute(select(notification_setting.c.id)).scalar_one()
            assert setting_id == setting["id"]
            for start in range(0, count, 10_000):
                conn.execute(insert(delivery), [{
                    "event_id": str(uuid.uuid4()), "partner_id": world.partner_id,
                    "setting_id": setting_id, "notification_type": "action-lifecycle",
                    "trigger": "TRACKED", "status": "pending", "method": "GET",
                    "url": f"{rx.url}/pb?n={n}", "headers": {}, "body": None,
                    "attempt_count": 0, "failures": 0, "next_attempt_at": now,
                    "created_at": now} for n in range(start, min(start + 10_000, count))])
            expected = set(conn.execute(select(delivery.c.event_id)).scalars())
        worker = start_worker(service.settings.database_url, poll="0.2", **{
            **FAST_RETRIES, "POSTBACK_RETRY_SCHEDULE": "5,0.5,0.5,0.5,0.5,0.5,0.5",
            "POSTBACK_CLAIM_BATCH": "500", "POSTBACK_ENDPOINT_CONCURRENCY": "64"})
        deadline = time.monotonic() + 240
        while len(rx.seen) < count:  # every delivery failed once: all are in the retry queue
            assert time.monotonic() < deadline, f"{len(rx.seen)} tried"
            time.sleep(0.5)
        with service.db.connect() as conn:
            retrying = conn.execute(select(func.count()).select_from(delivery).where(
                delivery.c.status == "pending", delivery.c.failures >= 1)).scalar_one()
        assert retrying > 100_000 - 1000  # a few may already be on their second try
        rx.down = False
        wait_all_succeeded(service, count, timeout=300)
        assert set(rx.accepted) == expected
        report(capsys, f"retry queue of {count} ({db_url.split(':')[0]})", rx, expected)
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=30)
        rx.close()
