"""At-least-once: a worker killed with SIGKILL mid-batch loses no postback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import select

from postback.db.schema import delivery
from tests.conftest import LOOPBACK_ENV, build_world
from tests.receiver import Answer, Receiver


def start_worker(db_url: str, poll: str = "0.1", **extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **LOOPBACK_ENV, "POSTBACK_DATABASE_URL": db_url,
           "POSTBACK_LEASE_SECONDS": "2",
           "POSTBACK_POLL_INTERVAL": poll, "POSTBACK_CLAIM_BATCH": "50",
           "POSTBACK_ENDPOINT_CONCURRENCY": "8", "POSTBACK_RETRY_SCHEDULE": "0.1,0.1,0.1",
           **extra}
    return subprocess.Popen([sys.executable, "-m", "postback", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_mid_batch_loses_nothing(make_service: Any) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    receiver = Receiver(lambda _req: Answer(200, delay=0.05))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
        world.brand("POST", "/v1/actions/batch", 201,
                    json={"actions": [world.action() for _ in range(300)]})
        with service.db.connect() as conn:
            expected = set(conn.execute(select(delivery.c.event_id)).scalars())
        assert len(expected) == 300

        workers.append(start_worker(service.settings.database_url))
        receiver.wait_for(40, timeout=30)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        at_kill = len(receiver.requests)
        assert at_kill < 300, "the worker finished before it could be killed"

        workers.append(start_worker(service.settings.database_url))
        deadline = time.monotonic() + 60
        while {r.query["e"] for r in receiver.requests} != expected:
            assert time.monotonic() < deadline, (
                f"{len(expected - {r.query['e'] for r in receiver.requests})} never arrived")
            time.sleep(0.1)
        while True:  # the survivor records every attempt
            with service.db.connect() as conn:
                states = list(conn.execute(select(delivery.c.status)).scalars())
            if states.count("succeeded") == 300:
                break
            assert time.monotonic() < deadline, f"not all recorded: {set(states)}"
            time.sleep(0.1)
        duplicates = len(receiver.requests) - len(expected)
        # only what the killed worker had on the wire or unrecorded may come twice
        assert duplicates <= 50 + 8, duplicates
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=20)
        receiver.close()


def test_worker_stops_cleanly_on_sigterm(make_service: Any) -> None:
    service = make_service(start_engine=False)
    worker = start_worker(service.settings.database_url)
    assert worker.stderr is not None
    for line in worker.stderr:  # running: its loop's own handler is installed
        if b"started" in line:
            break
    time.sleep(0.3)
    worker.terminate()
    assert worker.wait(timeout=20) == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_separate_worker_wakes_on_commit_through_notify(make_service: Any) -> None:
    """With a 30 s poll, only LISTEN/NOTIFY can bring the postback within a second or two."""
    service = make_service(start_engine=False)
    world = build_world(service)
    receiver = Receiver()
    worker = start_worker(service.settings.database_url, poll="30")
    try:
        world.subscribe(f"{receiver.url}/pb")
        time.sleep(2)  # the worker is up, listening, and has done its first claim
        started = time.monotonic()
        world.report()
        receiver.wait_for(1, timeout=5)
        assert time.monotonic() - started < 2
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        receiver.close()
