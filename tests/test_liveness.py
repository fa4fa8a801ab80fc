"""Leases that follow liveness: a killed worker's work is sent again within seconds (not
when its lease runs out), a slow receiver never gets a duplicate, and workers whose clocks
are minutes off neither duplicate nor delay anything (the database's clock decides)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from postback.db.schema import delivery, worker
from tests.conftest import IN_CI, LOOPBACK_ENV, build_world
from tests.packages import one_install_at_a_time
from tests.receiver import Answer, Receiver

#: as shipped: leases far longer than any liveness figure, so only liveness explains them
ENV = {"POSTBACK_LEASE_SECONDS": "120", "POSTBACK_HEARTBEAT_SECONDS": "2",
       "POSTBACK_POLL_INTERVAL": "0.2", "POSTBACK_RETRY_SCHEDULE": "0.2,0.2,0.2"}


def start_worker(db_url: str, **extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **LOOPBACK_ENV, **ENV, "POSTBACK_DATABASE_URL": db_url, **extra}
    return subprocess.Popen([sys.executable, "-m", "postback", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def engines(db: Any) -> int:
    with db.connect() as conn:
        return len(conn.execute(select(worker.c.name).where(worker.c.kind == "engine")).all())


def all_succeeded(db: Any) -> bool:
    with db.connect() as conn:
        return set(conn.execute(select(delivery.c.status)).scalars()) == {"succeeded"}


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop them as serve would (SIGTERM, 20 s); anything left is killed, so no worker of
    this test can take another test's deliveries."""
    running = [w for w in workers if w.poll() is None]
    for w in running:
        w.terminate()
    for w in workers:
        try:
            if w in running:
                assert w.wait(timeout=20) == 0, "a worker did not stop cleanly on SIGTERM"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)


def test_a_killed_workers_delivery_is_sent_again_within_15_s(make_service: Any) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    release = threading.Event()
    # the first request hangs (the worker dies with it on the wire); later ones are answered
    receiver = Receiver(lambda req: Answer(200) if release.is_set() else Answer(200, delay=20))
    workers = [start_worker(service.settings.database_url)]
    try:
        world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
        wait_until(lambda: engines(service.db) == 1, 20, "the worker never heartbeat")
        world.report()
        receiver.wait_for(1, timeout=15)
        release.set()
        workers.append(start_worker(service.settings.database_url))
        wait_until(lambda: engines(service.db) == 2, 20, "the second worker never heartbeat")
        workers[0].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        workers[0].wait(timeout=10)
        receiver.wait_for(2, timeout=15)  # the contract: within 15 s (a 120 s lease)
        resent_after = time.monotonic() - killed_at
        print(f"[liveness] resent {resent_after:.1f} s after SIGKILL")
        assert receiver.requests[0].query["e"] == receiver.requests[1].query["e"]
        wait_until(lambda: engines(service.db) == 1, 10, "the dead worker's row stayed")
        with service.db.connect() as conn:
            assert conn.execute(select(delivery.c.status)).scalar_one() in (
                "succeeded", "pending")
    finally:
        release.set()
        stop_all(workers)
        receiver.close()


def test_a_slow_receiver_gets_no_duplicate_past_the_lease(make_service: Any) -> None:
    """Leases of 2 s, answers after 6 s: only renewal keeps the others off it."""
    service = make_service(start_engine=False)
    world = build_world(service)
    receiver = Receiver(lambda _req: Answer(200, delay=6))
    fast = {"POSTBACK_LEASE_SECONDS": "2", "POSTBACK_HEARTBEAT_SECONDS": "0.25",
            "POSTBACK_TOTAL_TIMEOUT": "15"}
    workers = [start_worker(service.settings.database_url, **fast) for _ in range(2)]
    try:
        world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
        wait_until(lambda: engines(service.db) == 2, 20, "the workers never heartbeat")
        for _ in range(3):
            world.report()
        receiver.wait_for(3, timeout=15)

        wait_until(lambda: all_succeeded(service.db), 30, "not all recorded")
        counts = Counter(r.query["e"] for r in receiver.requests)
        assert len(counts) == 3 and set(counts.values()) == {1}, counts
    finally:
        stop_all(workers)
        receiver.close()


def libfaketime() -> str | None:
    """Debian's libfaketime (package faketime), installed when missing and possible. It is
    preloaded into the worker itself: the ``faketime`` wrapper forks, and a SIGTERM to the
    wrapper would leave the worker running."""
    def found() -> str | None:
        return next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)

    if found() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with one_install_at_a_time():
            for cmd in (["apt-get", "install", "-y", "-qq", "faketime"],
                        ["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "faketime"]):
                if found() is not None:
                    break
                subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=600)
    return found()


def skewed(lib: str, offset: str) -> dict[str, str]:
    return {"LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_skewed_worker_clocks_cause_no_duplicate_and_no_delay(make_service: Any) -> None:
    """One worker 5 minutes ahead, one 5 minutes behind (Debian's faketime), sharing
    PostgreSQL with 3 s leases and a receiver slower than a lease: on its own clock the one
    ahead would take the other's leases at once, and the one behind would see nothing due
    for 5 minutes."""
    lib = libfaketime()
    if lib is None:
        if IN_CI:
            pytest.fail("faketime is not installed and cannot be (CI never skips this)")
        pytest.skip("faketime is not installed (apt-get install faketime)")
    service = make_service(start_engine=False)
    world = build_world(service)
    receiver = Receiver(lambda _req: Answer(200, delay=4))
    short = {"POSTBACK_LEASE_SECONDS": "3", "POSTBACK_HEARTBEAT_SECONDS": "0.5"}
    behind = start_worker(service.settings.database_url, **short, **skewed(lib, "-5m"))
    workers = [behind]
    try:
        world.subscribe(f"{receiver.url}/pb?e={{EventId}}")
        wait_until(lambda: engines(service.db) == 1, 20, "the worker behind never heartbeat")
        reported = time.monotonic()
        world.report()
        receiver.wait_for(1, timeout=10)  # no delay: due on the database's clock
        print(f"[liveness] a worker 5 min behind sent a new postback "
              f"{(receiver.requests[0].at - reported) * 1000:.0f} ms after it was reported")
        workers.append(start_worker(service.settings.database_url, **short,
                                    **skewed(lib, "+5m")))
        wait_until(lambda: engines(service.db) == 2, 20, "the worker ahead never heartbeat")
        for _ in range(6):
            world.report()
        receiver.wait_for(7, timeout=20)

        wait_until(lambda: all_succeeded(service.db), 40, "not all recorded")
        counts = Counter(r.query["e"] for r in receiver.requests)
        print(f"[liveness] workers at -5 min and +5 min, 3 s leases, 4 s answers: "
              f"{len(counts)} postbacks, {sum(counts.values()) - len(counts)} duplicates")
        assert len(counts) == 7 and set(counts.values()) == {1}, counts
    finally:
        stop_all(workers)
        receiver.close()
