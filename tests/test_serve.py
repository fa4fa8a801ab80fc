"""`postback serve` as a user starts it: the operator token, the scheduler among its
processes, what it refuses at start; and the same parts started one by one, as production
runs them (``postback migrate``, ``api``, ``worker``, ``scheduler``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import LOOPBACK_ENV
from tests.receiver import Receiver
from tests.test_readme import free_port, wait_http


def start(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACK_")}
    return subprocess.Popen([sys.executable, "-m", "postback", "serve", "--port", str(port)],
                            cwd=tmp_path, env={**base, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return out


def call(port: int, method: str, path: str, token: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_operator_token_is_printed_once_and_works(tmp_path: Path) -> None:
    port = free_port()
    first = start(tmp_path, port)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    out = stop(first)
    token = out.split("Operator token (shown once, store it now):")[1].split()[0]
    assert token.startswith("pbo_")
    again = start(tmp_path, port)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    assert call(port, "GET", "/v1/me", token) == {"role": "operator", "account_id": None}
    assert "Operator token" not in stop(again)


def test_the_scheduler_locks_due_actions_by_itself(tmp_path: Path) -> None:
    port, admin = free_port(), "admin"
    proc = start(tmp_path, port, POSTBACK_ADMIN_TOKEN=admin, POSTBACK_LIFECYCLE_INTERVAL="0.2")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        brand = call(port, "POST", "/v1/brands", admin, {"name": "b"})["id"]
        partner = call(port, "POST", "/v1/partners", admin,
                       {"name": "p", "partner_type": "loyalty"})["id"]
        key = call(port, "POST", "/v1/api-keys", admin,
                   {"account_type": "brand", "account_id": brand})["key"]
        program = call(port, "POST", "/v1/programs", key, {"name": "x", "currency": "EUR"})["id"]
        etype = call(port, "POST", f"/v1/programs/{program}/event-types", key,
                     {"name": "Sale", "action_type": "SALE"})["id"]
        call(port, "PUT", f"/v1/programs/{program}/contracts/{partner}", key,
             {"event_type_ids": [etype], "locking": {"rule": "days_after_event", "days": 1},
              "clearing": {"rule": "days_after_locking", "days": 1}})
        action = call(port, "POST", "/v1/actions", key, {
            "program_id": program, "event_type_id": etype, "partner_id": partner,
            "oid": "late", "amount": "10.00", "payout": "1.00",
            "event_date": "2020-01-01T00:00:00Z"})
        deadline = time.monotonic() + 10
        while (got := call(port, "GET", f"/v1/actions/{action['id']}", key))["cleared_at"] is None:
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        assert got["status"] == "APPROVED" and got["status_detail"] == "PAID"
        assert got["locked_at"] == "2020-01-02T00:00:00+00:00"
        assert got["cleared_at"] == "2020-01-03T00:00:00+00:00"
    finally:
        stop(proc)


def test_serve_refuses_a_busy_port_and_a_worker_count_below_one(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACK_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "postback", "serve", "--port", str(port)],
                              cwd=tmp_path, env=base, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    done = subprocess.run([sys.executable, "-m", "postback", "serve", "--workers", "0"],
                          cwd=tmp_path, env=base, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "'0' is not a whole number of at least 1" in done.stderr


def test_the_parts_run_as_separate_commands(tmp_path: Path) -> None:
    """What serve supervises, started by hand: the API wakes the separate engine, and
    /readyz sees the engine and the scheduler."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACK_")}
    env = {**base, **LOOPBACK_ENV, "POSTBACK_ADMIN_TOKEN": "admin",
           "POSTBACK_HEARTBEAT_SECONDS": "0.25", "POSTBACK_POLL_INTERVAL": "30"}
    postback = [sys.executable, "-m", "postback"]
    subprocess.run([*postback, "migrate"], cwd=tmp_path, env=env, check=True, timeout=60,
                   capture_output=True)
    port, receiver = free_port(), Receiver()
    procs = [subprocess.Popen([*postback, *args], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for args in (["api", "--port", str(port)], ["worker"], ["scheduler"])]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    ready = json.loads(r.read())
                break
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.1)
        assert ready["status"] == "ready"
        brand = call(port, "POST", "/v1/brands", "admin", {"name": "b"})["id"]
        partner = call(port, "POST", "/v1/partners", "admin",
                       {"name": "p", "partner_type": "cashback"})["id"]
        key = call(port, "POST", "/v1/api-keys", "admin",
                   {"account_type": "brand", "account_id": brand})["key"]
        pkey = call(port, "POST", "/v1/api-keys", "admin",
                    {"account_type": "partner", "account_id": partner})["key"]
        program = call(port, "POST", "/v1/programs", key, {"name": "x", "currency": "EUR"})["id"]
        etype = call(port, "POST", f"/v1/programs/{program}/event-types", key,
                     {"name": "Sale", "action_type": "SALE"})["id"]
        call(port, "PUT", f"/v1/programs/{program}/contracts/{partner}", key,
             {"event_type_ids": [etype], "locking": {"rule": "days_after_event", "days": 30},
              "clearing": {"rule": "days_after_locking", "days": 20}})
        call(port, "PUT", "/v1/event-notifications/action-lifecycle", pkey,
             {"url": f"{receiver.url}/pb?id={{ActionId}}", "method": "GET"})
        action = call(port, "POST", "/v1/actions", key, {
            "program_id": program, "event_type_id": etype, "partner_id": partner,
            "oid": "o-1", "amount": "10.00", "payout": "1.00",
            "event_date": "2026-11-02T18:04:05Z"})
        assert receiver.wait_for(1)[0].query == {"id": str(action["id"])}  # woken, not polled
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(timeout=30) == 0
        receiver.close()
