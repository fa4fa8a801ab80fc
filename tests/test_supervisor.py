"""`postback serve` as separate processes (the API, N delivery engines, the scheduler) under
one supervisor; and, within the API process, that no request holds up the others.

The first half runs the real command and watches its processes through /proc; the second
runs the API in this process (a real uvicorn on loopback) so a test can make one request
slow, by holding the database's write lock or a DNS lookup, and see the others answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from postback.db.wakeup import listener, wake_directory, waker
from tests.conftest import ADMIN, Service, World, build_world
from tests.receiver import Answer, Received, Receiver
from tests.test_readme import free_port, wait_http
from tests.test_web import sign_in

# -- processes, as /proc shows them ---------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited


def children(parent: int) -> dict[int, str]:
    """The live child processes of ``parent``: pid → the postback command each runs."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != parent or stat[0] in ("Z", "X"):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode() for a in argv if a]
        out[int(entry.name)] = words[words.index("postback") + 1] if "postback" in words else ""
    return out


def listens(pid: int) -> bool:
    """Whether the process holds a listening TCP socket."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A":  # LISTEN
                    listening.add(cols[9])
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            return True
    return False


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)
    return result


# -- serve ------------------------------------------------------------------------------------


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def wait_ready(self) -> dict[str, Any]:
        got: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal got
            status, got = self.readyz()
            return status == 200

        wait_until(ready, 30, "/readyz to answer 200")
        return got

    def children(self) -> dict[int, str]:
        return children(self.proc.pid)

    def call(self, method: str, path: str, key: str = ADMIN, body: Any = None,
             timeout: float = 10) -> Any:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*args: str, **env: str) -> Serve:
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("POSTBACK_")}
        log = tmp_path / f"serve-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "postback", "serve", "--port", str(port), *args],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
            env={**base, "POSTBACK_ADMIN_TOKEN": ADMIN,
                 "POSTBACK_ALLOW_TARGETS": "127.0.0.0/8,::1/128",
                 "POSTBACK_HEARTBEAT_SECONDS": "0.25", **env})
        server = Serve(proc, port, log)
        started.append(server)
        wait_http(f"{server.url}/healthz")
        return server

    yield start
    for server in started:
        pids = list(server.children())
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        for pid in pids:  # nothing may outlive a test, whatever it did to serve
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def setup_partner(server: Serve, url: str) -> tuple[str, dict[str, Any]]:
    """A brand and a partner subscribed to ``url``: the brand's key and an action body."""
    brand = server.call("POST", "/v1/brands", body={"name": "b"})["id"]
    partner = server.call("POST", "/v1/partners",
                          body={"name": "p", "partner_type": "cashback"})["id"]
    brand_key = server.call("POST", "/v1/api-keys", body={"account_type": "brand",
                                                         "account_id": brand})["key"]
    partner_key = server.call("POST", "/v1/api-keys", body={"account_type": "partner",
                                                           "account_id": partner})["key"]
    program = server.call("POST", "/v1/programs", brand_key,
                          {"name": "x", "currency": "EUR"})["id"]
    etype = server.call("POST", f"/v1/programs/{program}/event-types", brand_key,
                        {"name": "Sale", "action_type": "SALE"})["id"]
    server.call("PUT", f"/v1/programs/{program}/contracts/{partner}", brand_key, {
        "event_type_ids": [etype], "locking": {"rule": "days_after_event", "days": 30},
        "clearing": {"rule": "days_after_locking", "days": 20}})
    server.call("PUT", "/v1/event-notifications/action-lifecycle", partner_key,
                {"url": f"{url}?id={{ActionId}}", "method": "GET"})
    action = {"program_id": program, "event_type_id": etype, "partner_id": partner,
              "amount": "10.00", "payout": "1.00", "event_date": "2026-11-02T18:04:05Z"}
    return brand_key, {**action, "_partner_key": partner_key}


def report(server: Serve, brand_key: str, action: dict[str, Any], oid: str) -> Any:
    body = {k: v for k, v in action.items() if not k.startswith("_")}
    return server.call("POST", "/v1/actions", brand_key, {**body, "oid": oid})


def test_serve_runs_the_api_the_engines_and_the_scheduler_as_processes(serve: Any) -> None:
    server = serve("--workers", "2")
    ready = server.wait_ready()
    assert ready["status"] == "ready"
    assert ready["components"]["engine"]["detail"].startswith("2 engine workers, last heartbeat")
    assert ready["components"]["scheduler"]["detail"].startswith("1 scheduler, last heartbeat")
    assert ready["components"]["migrations"]["ok"] and ready["components"]["database"]["ok"]
    kids = server.children()
    assert sorted(kids.values()) == ["api", "scheduler", "worker", "worker"]
    # only the API listens
    assert {kind for pid, kind in kids.items() if listens(pid)} == {"api"}
    assert not listens(server.proc.pid)


def test_deliveries_wake_engines_in_other_processes(serve: Any) -> None:
    """With polling all but off, a postback still goes at once: the API wakes the engine
    processes itself (on SQLite, through their datagram sockets)."""
    receiver = Receiver()
    try:
        server = serve("--workers", "2", POSTBACK_POLL_INTERVAL="30")
        server.wait_ready()
        brand_key, action = setup_partner(server, f"{receiver.url}/pb")
        for n in range(3):
            sent = report(server, brand_key, action, f"o-{n}")
            got = receiver.wait_for(n + 1, timeout=10)
            assert got[-1].query == {"id": str(sent["id"])}
    finally:
        receiver.close()


def test_a_killed_engine_is_started_again_and_readyz_says_so_meanwhile(serve: Any) -> None:
    server = serve("--workers", "1")
    server.wait_ready()
    engine = next(pid for pid, kind in server.children().items() if kind == "worker")
    # hold the supervisor still, so the engine stays dead long enough to be seen missing
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        os.kill(engine, signal.SIGKILL)

        def not_ready() -> dict[str, Any] | None:
            status, body = server.readyz()
            return body if status == 503 else None

        body = wait_until(not_ready, 20, "/readyz to answer 503")
        assert body["status"] == "not_ready"
        assert body["components"]["engine"]["ok"] is False
        assert body["components"]["engine"]["detail"].startswith("no engine worker heartbeat")
        assert body["components"]["scheduler"]["ok"] is True
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.wait_ready()
    engines = [pid for pid, kind in server.children().items() if kind == "worker"]
    assert len(engines) == 1 and engines[0] != engine
    assert f"engine-1 (pid {engine}) was killed by SIGKILL" in server.logged()


def never_answers(receiver_gate: threading.Event) -> Callable[[Received], Answer]:
    def answer(_req: Received) -> Answer:
        receiver_gate.wait(60)
        return Answer()
    return answer


def stuck_on_the_wire(serve: Any, receiver: Receiver) -> tuple[Any, list[int]]:
    """A serve with one engine whose postback is on the wire and will stay there (an
    engine would wait 120 s for it: serve does not), and its children's pids."""
    server = serve("--workers", "1", POSTBACK_TOTAL_TIMEOUT="120")
    server.wait_ready()
    brand_key, action = setup_partner(server, f"{receiver.url}/pb")
    report(server, brand_key, action, "stuck")
    receiver.wait_for(1)
    return server, list(server.children())


def test_sigterm_stops_within_20_s_even_when_a_receiver_never_answers(serve: Any) -> None:
    gate = threading.Event()
    receiver = Receiver(never_answers(gate))
    try:
        server, kids = stuck_on_the_wire(serve, receiver)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0
        assert not [pid for pid in kids if alive(pid)]
        assert "still running after 18 s, killed: engine-1" in server.logged()
    finally:
        gate.set()
        receiver.close()


def test_a_second_signal_stops_at_once(serve: Any) -> None:
    gate = threading.Event()
    receiver = Receiver(never_answers(gate))
    try:
        server, kids = stuck_on_the_wire(serve, receiver)
        server.proc.send_signal(signal.SIGINT)
        wait_until(lambda: "SIGINT: stopping every process" in server.logged(), 10)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=5) == 128 + signal.SIGTERM
        assert not [pid for pid in kids if alive(pid)]
        assert "SIGTERM again: killing every process now" in server.logged()
    finally:
        gate.set()
        receiver.close()


def test_no_child_outlives_a_killed_serve(serve: Any) -> None:
    server = serve("--workers", "2")
    kids = wait_until(lambda: len(server.children()) == 4 and server.children())
    server.proc.kill()
    server.proc.wait()
    wait_until(lambda: not [pid for pid in kids if alive(pid)], 20, "children to exit")


def test_a_slow_test_call_delays_neither_deliveries_nor_other_requests(serve: Any) -> None:
    gate = threading.Event()
    slow = Receiver(lambda _req: (gate.wait(30), Answer())[1])
    fast = Receiver()
    try:
        server = serve("--workers", "1")
        server.wait_ready()
        brand_key, action = setup_partner(server, f"{fast.url}/pb")
        result: dict[str, Any] = {}

        def test_call() -> None:
            result.update(server.call("POST", "/v1/event-notifications/action-lifecycle/test",
                                      action["_partner_key"], {"url": f"{slow.url}/t"},
                                      timeout=30))

        caller = threading.Thread(target=test_call)
        caller.start()
        slow.wait_for(1)  # the test request is at the slow receiver, unanswered
        sent = report(server, brand_key, action, "while-testing")
        assert fast.wait_for(1)[0].query == {"id": str(sent["id"])}
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as r:
            assert r.status == 200
        assert caller.is_alive() and not result  # all that while, the test waited
        gate.set()
        caller.join(30)
        assert result["outcome"] == "success"
    finally:
        gate.set()
        slow.close()
        fast.close()


# -- cross-process wake-ups ------------------------------------------------------------------


def test_a_waker_reaches_every_listener_and_clears_the_sockets_of_dead_ones(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/postback.db"

    async def scenario() -> None:
        woken = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(listener(url, e.set)) for e in woken]
        await asyncio.sleep(0.1)
        for e in woken:  # each is woken once on start, for what came before it listened
            assert e.is_set()
            e.clear()
        directory = wake_directory(url)
        assert directory is not None
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dead.bind(str(directory / "1-deadbeef.sock"))
        dead.close()  # a killed worker's socket, left behind
        wake = waker(url)
        await asyncio.to_thread(wake)  # from another thread, as the API calls it
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in woken)), 5)
        assert not (directory / "1-deadbeef.sock").exists()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert list(directory.iterdir()) == []  # each listener removed its own socket
        wake()  # nobody listening: nothing happens, nothing raises

    asyncio.run(scenario())


# -- one API process: no request holds up the others ----------------------------------------


@dataclass
class Live:
    url: str
    world: World

    def client(self, key: str | None = None) -> tuple[httpx.Client, str]:
        """A browser-like client, signed in with ``key``: (client, CSRF token)."""
        client = httpx.Client(base_url=self.url, timeout=30, follow_redirects=True)
        token = sign_in(client, key) if key else ""  # type: ignore[arg-type]
        return client, token


@pytest.fixture
def live(make_service: Any) -> Iterator[Live]:
    """The API and web app under a real uvicorn on loopback, in this process."""
    service: Service = make_service(start_engine=False, connect_timeout=5.0,
                                    total_timeout=5.0)
    world = build_world(service)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(service.client.app, host="127.0.0.1", port=port,
                                           lifespan="off", log_level="warning"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/healthz")
    yield Live(f"http://127.0.0.1:{port}", world)
    server.should_exit = True
    thread.join(10)


def in_thread(fn: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def answered_meanwhile(live: Live, *waiting: threading.Thread) -> None:
    """Cheap requests, one with a database read, answer while ``waiting`` still wait."""
    with httpx.Client(base_url=live.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {live.world.partner_key}"})
        assert me.json()["role"] == "partner"
    assert all(t.is_alive() for t in waiting)


SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_saves_waiting_for_the_database_hold_up_no_other_request(live: Live,
                                                                   db_url: str) -> None:
    client, token = live.client(live.world.partner_key)
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        page_save, page_out = in_thread(lambda: client.post(
            "/partner/event-notifications/action-lifecycle",
            data={"csrf_token": token, "url": "http://127.0.0.1:9/pb?id={ActionId}",
                  "method": "GET", "body_format": "json", "enabled": "on"}))
        api_save, api_out = in_thread(lambda: httpx.post(
            f"{live.url}/v1/brands", json={"name": "waits"}, timeout=30,
            headers={"Authorization": f"Bearer {ADMIN}"}))
        time.sleep(0.3)  # both reach the lock (if they did not, the test proves less, not more)
        answered_meanwhile(live, page_save, api_save)
    finally:
        holder.execute("COMMIT")
        holder.close()
    page_save.join(30)
    api_save.join(30)
    assert page_out[0].status_code == 200 and "Saved." in page_out[0].text
    assert api_out[0].status_code == 201


@SQLITE_ONLY
def test_a_slow_page_view_or_dns_check_holds_up_no_other_request(
        live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    from postback.services import notification_settings as ns

    entered, release = threading.Event(), threading.Event()
    list_settings = ns.list_settings

    def slow_list(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return list_settings(*args, **kwargs)

    client, token = live.client(live.world.partner_key)
    monkeypatch.setattr(ns, "list_settings", slow_list)
    view, view_out = in_thread(lambda: client.get("/partner/event-notifications"))
    assert entered.wait(10)
    answered_meanwhile(live, view)
    release.set()
    view.join(30)
    assert view_out[0].status_code == 200

    looking, answer = threading.Event(), threading.Event()
    getaddrinfo = socket.getaddrinfo

    def slow_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "slow-dns.partner.example.net":
            looking.set()
            answer.wait(10)  # the save stops waiting after 3 s (and saves, with a warning)
            return getaddrinfo("127.0.0.1", *args, **kwargs)
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    save, save_out = in_thread(lambda: client.post(
        "/partner/event-notifications/action-lifecycle",
        data={"csrf_token": token, "url": "http://slow-dns.partner.example.net/pb",
              "method": "GET", "body_format": "json", "enabled": "on"}))
    assert looking.wait(10)
    answered_meanwhile(live, save)
    answer.set()
    save.join(30)
    assert save_out[0].status_code == 200 and "Saved." in save_out[0].text


@SQLITE_ONLY
def test_the_test_tool_sends_four_at_a_time_and_says_so_over_that(live: Live) -> None:
    gate = threading.Event()
    receiver = Receiver(lambda _req: (gate.wait(30), Answer())[1])
    key = {"Authorization": f"Bearer {live.world.partner_key}"}
    path = "/v1/event-notifications/action-lifecycle/test"

    def test_call() -> httpx.Response:
        return httpx.post(f"{live.url}{path}", json={"url": f"{receiver.url}/t"}, headers=key,
                          timeout=30)

    try:
        calls = [in_thread(test_call) for _ in range(4)]
        receiver.wait_for(4)
        over = test_call()
        assert over.status_code == 429
        assert over.json()["message"] == ("4 tests are being sent already; wait a few "
                                          "seconds for one to finish and test again")
        client, token = live.client(live.world.partner_key)
        page = client.post("/partner/event-notifications/action-lifecycle/test", data={
            "csrf_token": token, "url": f"{receiver.url}/t", "method": "GET",
            "body_format": "json"})
        assert page.status_code == 429 and "4 tests are being sent already" in page.text
        answered_meanwhile(live, *(t for t, _ in calls))
        assert len(receiver.requests) == 4  # the refused ones sent nothing
        gate.set()
        for thread, out in calls:
            thread.join(30)
            assert out[0].status_code == 200 and out[0].json()["outcome"] == "success"
        assert test_call().json()["outcome"] == "success"  # room again
    finally:
        gate.set()
        receiver.close()


# -- /readyz, part by part ------------------------------------------------------------------


def test_readyz_says_which_part_is_missing_and_why(make_service: Any) -> None:
    from postback.services.scheduler import heartbeat, leave, scheduler_name
    from tests.conftest import EngineThread

    service: Service = make_service(start_engine=False, heartbeat_seconds=0.25)

    def readyz() -> tuple[int, dict[str, Any]]:
        response = service.client.get("/readyz")
        body: dict[str, Any] = response.json()
        return response.status_code, {k: (v["ok"], v["detail"])
                                      for k, v in body["components"].items()}

    status, parts = readyz()
    assert status == 503
    assert parts["database"] == (True, "answers") and parts["migrations"][0] is True
    assert parts["engine"] == (False, "no engine worker is running (none has sent a "
                                      "heartbeat)")
    assert parts["scheduler"] == (False, "no scheduler is running (none has sent a heartbeat)")
    engine = EngineThread(service.settings, service.db)
    name = scheduler_name()
    try:
        heartbeat(service.db, name, 0.25)
        wait_until(lambda: readyz()[0] == 200, 10, "/readyz 200")
        parts = readyz()[1]
        assert parts["engine"][1].startswith("1 engine worker, last heartbeat ")
        assert parts["scheduler"][1].startswith("1 scheduler, last heartbeat ")
        leave(service.db, name)  # a scheduler that stopped cleanly
        status, parts = readyz()
        assert status == 503 and parts["scheduler"][0] is False and parts["engine"][0] is True
    finally:
        engine.stop()
    body = service.client.get("/readyz").json()
    assert body["status"] == "not_ready"


@SQLITE_ONLY
def test_readyz_refuses_a_schema_other_than_the_code_expects(make_service: Any) -> None:
    from postback.services.health import migration_head

    service: Service = make_service(start_engine=False)
    with service.db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    body = service.client.get("/readyz").json()
    head = ", ".join(sorted(migration_head()))
    assert body["components"]["migrations"] == {
        "ok": False,
        "detail": f"the database is at 0001, this code expects {head}: run `postback migrate`"}


def test_readyz_never_waits_longer_than_its_timeout(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    from postback.db.engine import make_engine
    from postback.services import health

    unreachable = make_engine("postgresql://postgres@127.0.0.1:1/none")
    down = health.Readiness(unreachable, 1.0, timeout=10).check()
    assert down["database"].ok is False and "OperationalError" in down["database"].detail
    assert down["engine"] == health.Component(False, "unknown: the database did not answer")

    release = threading.Event()
    calls: list[int] = []

    def hangs(*_args: Any) -> Any:
        calls.append(1)
        release.wait(30)
        raise RuntimeError("late")

    monkeypatch.setattr(health, "readiness", hangs)
    answers = make_engine(f"sqlite:///{tmp_path}/any.db")
    ready = health.Readiness(answers, 1.0, timeout=0.2)
    try:
        for _ in range(3):
            assert ready.check()["database"] == health.Component(False,
                                                                 "no answer within 0.2 s")
        assert calls == [1]  # asked again while the first check hangs: no second thread
    finally:
        release.set()
        ready.close()
        answers.dispose()
        unreachable.dispose()
