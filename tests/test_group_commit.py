"""``POST /v1/actions`` requests that arrive together are committed together (#14), and
each gets the answer it would have had alone: a refusal fails only its own request, of two
with one oid the first is recorded, a row the database refuses fails alone.

Each group is made, not hoped for: another transaction holds the action table while the
first request's transaction waits for it, the others queue behind, and the lock is let go
once every one of them is queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import OperationalError

from postback.core.lifecycle import RuleViolation
from postback.db.engine import make_engine, reader
from postback.db.schema import action, delivery
from postback.models import ActionIn
from postback.services import group_commit, ledger
from postback.services.group_commit import GroupCommit
from tests.conftest import ADMIN, Service, World, build_world

BOUND = 20.0  # seconds: a bound on a broken run, not a timing claim


@pytest.fixture
def quiet(make_service: Any) -> World:
    """A world without a delivery engine (its queued postbacks stay countable), with a
    setting, so every recorded action queues one postback."""
    world = build_world(make_service(start_engine=False))
    world.subscribe("http://127.0.0.1:9/postback?oid={Oid}")
    return world


def _commits(service: Service) -> GroupCommit[Any, Any]:
    commits: GroupCommit[Any, Any] = service.client.app.state.action_commits  # type: ignore[attr-defined]
    return commits


def _until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


@contextmanager
def _action_table_held(db: Engine) -> Iterator[None]:
    """Writes to ``action`` wait until the block ends (SQLite: the write lock; PostgreSQL:
    a lock on the table that inserts wait for)."""
    conn = db.connect()
    trans = conn.begin()
    if db.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE action IN SHARE MODE"))
    else:
        conn.execute(text("UPDATE action SET id = id WHERE 0"))
    try:
        yield
    finally:
        trans.rollback()
        conn.close()


def _queued_or_answered(commits: GroupCommit[Any, Any], before: int, responses: list[Any],
                        i: int) -> bool:
    return commits.queued > before or responses[i] is not None


def _post_together(world: World, bodies: list[dict[str, Any]], groups: int = 2) -> list[Any]:
    """The responses to ``bodies``, posted at once: the first is committed alone while the
    rest queue behind it, then the rest in one transaction (``groups`` commits in all)."""
    commits = _commits(world.service)
    before = commits.groups
    responses: list[Any] = [None] * len(bodies)

    def post(i: int) -> None:
        responses[i] = world.service.client.post(
            "/v1/actions", json=bodies[i], headers={"Authorization": f"Bearer {world.brand_key}"})

    threads = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(len(bodies))]
    queued: list[int] = []
    with _action_table_held(world.service.db):
        threads[0].start()
        _until(lambda: commits.in_flight == 1, "the first request never reached the commit")
        for i, thread in enumerate(threads[1:], start=1):
            # one at a time, so the queue holds them in the order given; a request
            # refused before it reaches the queue (its body's fields) is answered at once
            thread.start()
            _until(partial(_queued_or_answered, commits, len(queued), responses, i),
                   "a request neither queued nor was answered")
            if commits.queued > len(queued):
                queued.append(i)
        assert all(responses[i] is None for i in [0, *queued]), \
            "a request was answered before its commit"
    for thread in threads:
        thread.join(BOUND)
    assert not any(t.is_alive() for t in threads)
    assert commits.groups - before == groups, "the queued requests were not committed together"
    return responses


def _recorded(world: World, oid: str) -> int:
    with world.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(action).where(
            action.c.oid == oid)).scalar_one())


def _postbacks(world: World) -> int:
    with world.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(delivery)).scalar_one())


def test_concurrent_reports_are_committed_together_each_with_its_own_answer(
        quiet: World) -> None:
    bodies = [quiet.action(oid=f"SALE-{i}", amount=f"{10 + i}.00") for i in range(12)]
    responses = _post_together(quiet, bodies)
    assert [r.status_code for r in responses] == [201] * 12, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 12
    for body, response in zip(bodies, responses, strict=True):
        got = response.json()
        assert (got["oid"], got["amount"], got["status"]) == (body["oid"], body["amount"],
                                                              "PENDING")
        read = quiet.brand("GET", f"/v1/actions/{got['id']}", 200)
        assert read["oid"] == body["oid"] and read["amount"] == body["amount"]
    assert _postbacks(quiet) == 12  # one TRACKED postback each, queued in the same commits


def test_a_refused_request_fails_alone_with_the_message_it_gets_alone(quiet: World) -> None:
    stranger = quiet.service.call("POST", "/v1/partners", ADMIN, 201,
                                  json={"name": "No Contract", "partner_type": "content"})
    bad_partner = quiet.action(oid="BAD-PARTNER", partner_id=stranger["id"])
    bad_type = quiet.action(oid="BAD-TYPE", event_type_id=987_654)
    bad_units = quiet.action(oid="BAD-UNITS", amount="1.005")
    alone = {}
    for name, body in (("partner", bad_partner), ("type", bad_type), ("units", bad_units)):
        response = quiet.service.client.post(
            "/v1/actions", json=body, headers={"Authorization": f"Bearer {quiet.brand_key}"})
        alone[name] = (response.status_code, response.json())

    good = [quiet.action(oid=f"GOOD-{i}") for i in range(4)]
    bodies = [good[0], bad_partner, good[1], bad_type, good[2], bad_units, good[3]]
    responses = _post_together(quiet, bodies)
    assert [r.status_code for r in responses] == [201, alone["partner"][0], 201,
                                                   alone["type"][0], 201, alone["units"][0], 201]
    assert {alone[k][0] for k in alone} == {422}
    for i, name in ((1, "partner"), (3, "type"), (5, "units")):
        assert responses[i].json() == alone[name][1]  # word for word what it is told alone
    assert alone["partner"][1]["field"] == "partner_id"
    assert alone["type"][1]["field"] == "event_type_id"
    assert alone["units"][1]["field"] == "amount"
    assert [_recorded(quiet, b["oid"]) for b in bodies] == [1, 0, 1, 0, 1, 0, 1]
    assert _postbacks(quiet) == 4


def test_of_two_requests_with_one_oid_the_first_is_recorded_and_the_second_told(
        quiet: World) -> None:
    first = quiet.action(oid="TWICE", amount="10.00")
    second = quiet.action(oid="TWICE", amount="99.00")
    earlier = quiet.report(oid="EARLIER")
    again = quiet.action(oid="EARLIER")
    responses = _post_together(quiet, [quiet.action(), first, again, second])
    assert [r.status_code for r in responses] == [201, 201, 409, 409]
    message = ("oid: oid '{}' is already used by an action of event type "
               f"{quiet.event_type_id}")
    for response, oid in ((responses[2], "EARLIER"), (responses[3], "TWICE")):
        assert response.json()["error"] == "oid_reused"
        assert response.json()["field"] == "oid"
        assert response.json()["message"] == message.format(oid)
    listed = quiet.brand("GET", "/v1/actions?oid=TWICE", 200)["items"]
    assert [a["amount"] for a in listed] == ["10.00"]  # the first, not the second
    assert [a["id"] for a in quiet.brand("GET", "/v1/actions?oid=EARLIER", 200)["items"]] == [
        earlier["id"]]
    assert _postbacks(quiet) == 3  # EARLIER, the first request, TWICE once


def test_a_row_the_database_refuses_fails_alone_and_the_rest_of_its_group_commits(
        quiet: World) -> None:
    """Something no rule foresaw (here a trigger) refuses one row: the group's transaction
    fails, each request is tried alone, and only the culprit's request fails."""
    with quiet.service.db.begin() as conn:
        if quiet.service.db.dialect.name == "postgresql":
            conn.execute(text(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.oid = 'POISON' THEN RAISE EXCEPTION 'refused by a trigger'; "
                "END IF; RETURN NEW; END $$"))
            conn.execute(text("CREATE TRIGGER refuse_poison BEFORE INSERT ON action "
                              "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse_poison BEFORE INSERT ON action "
                              "WHEN NEW.oid = 'POISON' BEGIN "
                              "SELECT RAISE(ABORT, 'refused by a trigger'); END"))
    try:
        bodies = [quiet.action(oid="A"), quiet.action(oid="B"), quiet.action(oid="POISON"),
                  quiet.action(oid="C")]
        client = quiet.service.client
        quiet.service.client = TestClient(client.app, raise_server_exceptions=False)
        try:
            # A alone, then B, POISON and C together, which fails, then each alone
            responses = _post_together(quiet, bodies, groups=1 + 2)
        finally:
            quiet.service.client.close()
            quiet.service.client = client
        assert [r.status_code for r in responses] == [201, 201, 500, 201]
        assert [_recorded(quiet, oid) for oid in ["A", "B", "POISON", "C"]] == [1, 1, 0, 1]
        assert _postbacks(quiet) == 3
    finally:
        with quiet.service.db.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_poison" + (
                " ON action" if quiet.service.db.dialect.name == "postgresql" else "")))


def test_the_commit_thread_ends_when_idle_and_the_next_request_starts_another(
        db_url: str) -> None:
    db = make_engine(db_url)
    try:
        commits: GroupCommit[int, int] = GroupCommit(
            db, lambda conn, items: [conn.execute(text("SELECT :n"), {"n": n}).scalar_one()
                                     for n in items], idle_seconds=0.01)
        assert commits.submit(1).result(BOUND) == 1
        _until(lambda: not any(t.name == "group-commit" for t in threading.enumerate()),
               "the idle thread never ended")
        assert commits.submit(2).result(BOUND) == 2
        assert commits.groups == 2
    finally:
        db.dispose()


def test_a_work_function_that_breaks_its_contract_fails_its_requests_not_the_thread(
        db_url: str) -> None:
    db = make_engine(db_url)
    try:
        calls: list[int] = []

        def work(conn: Any, items: Any) -> list[int]:
            calls.append(len(items))
            return []  # one outcome too few: refused, never half-answered

        commits: GroupCommit[int, int] = GroupCommit(db, work)
        with pytest.raises(RuntimeError, match="0 outcomes for 1 items"):
            commits.submit(1).result(BOUND)
        assert commits.submit(2).exception(BOUND) is not None  # the thread still answers
    finally:
        db.dispose()


def _wait_for_action_table(conn: Connection) -> None:
    """A write to ``action`` that gives up after 0.1 s of waiting for its lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL lock_timeout = '100ms'"))
        conn.execute(text("LOCK TABLE action IN ROW EXCLUSIVE MODE"))
    else:
        conn.exec_driver_sql("PRAGMA busy_timeout = 100")
        conn.execute(text("UPDATE action SET id = id WHERE 0"))


def test_a_group_that_times_out_on_a_lock_fails_whole_not_one_request_at_a_time(
        db_url: str) -> None:
    """A lock wait, a lost connection or an exhausted pool is nobody's fault in the group:
    retried one request at a time on the one commit thread, each would wait out the same
    timeout while every later request waited behind them."""
    db = make_engine(db_url)
    try:
        calls: list[list[int]] = []
        first_running, let_first_go = threading.Event(), threading.Event()

        def work(conn: Connection, items: Any) -> list[int]:
            calls.append(list(items))
            if items == [0]:  # holds the thread while the others queue behind it
                first_running.set()
                let_first_go.wait(BOUND)
            else:
                _wait_for_action_table(conn)
            return list(items)

        # deferred transactions on SQLite, so that only the write waits for the lock
        commits: GroupCommit[int, int] = GroupCommit(reader(db), work)
        first = commits.submit(0)
        assert first_running.wait(BOUND)
        rest = [commits.submit(n) for n in range(1, 7)]
        with _action_table_held(db):
            let_first_go.set()
            assert first.result(BOUND) == 0
            errors = [f.exception(BOUND) for f in rest]
        assert all(isinstance(e, OperationalError) for e in errors), errors
        assert calls == [[0], [1, 2, 3, 4, 5, 6]]  # one attempt for the six, not seven
        assert commits.submit(7).result(BOUND) == 7  # and the thread goes on
    finally:
        db.dispose()


def test_a_commit_thread_that_cannot_start_fails_its_request_and_the_next_starts_one(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads can run out (a process limit): the request that needed one is told, and the
    next request is not left waiting on a thread that never ran."""
    class NoThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    db = make_engine(db_url)
    try:
        commits: GroupCommit[int, int] = GroupCommit(db, lambda conn, items: list(items))
        monkeypatch.setattr(group_commit, "threading", SimpleNamespace(Thread=NoThread))
        with pytest.raises(RuntimeError, match="can't start new thread"):
            commits.submit(1)
        assert commits.queued == 0
        monkeypatch.undo()
        assert commits.submit(2).result(BOUND) == 2
    finally:
        db.dispose()


def _waiting_on_a_lock(db: Engine) -> bool:
    with db.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar_one())


def test_overlapping_reports_insert_in_oid_order_so_they_wait_rather_than_deadlock(
        quiet: World) -> None:
    """A group and a batch (or two batches) that share oids lock the unique index's entries
    in the order they insert them. In the order given, one holding B and waiting for A
    while the other, holding A, inserts B is a deadlock PostgreSQL breaks by failing one;
    in oid order both take A first and the second simply waits."""
    db = quiet.service.db
    if db.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: its inserts never interleave")
    now = datetime.now(UTC)
    a, b = (ActionIn(**quiet.action(oid=oid)) for oid in ("A", "B"))
    holder = db.connect()
    holder_trans = holder.begin()
    ledger.report_actions(holder, quiet.brand_id, [a], now)  # holds A, uncommitted
    outcome: list[BaseException | None] = []

    def report_b_then_a() -> None:
        try:
            with db.begin() as conn:
                ledger.report_actions(conn, quiet.brand_id, [b, a], now, batch=True)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    other = threading.Thread(target=report_b_then_a, daemon=True)
    other.start()
    try:
        _until(partial(_waiting_on_a_lock, db), "the batch never waited for A")
        ledger.report_actions(holder, quiet.brand_id, [b], now)  # B is free: no deadlock
        holder_trans.commit()
    finally:
        holder.close()
    other.join(BOUND)
    assert len(outcome) == 1 and isinstance(outcome[0], RuleViolation), outcome
    assert "oid 'A' is already used" in str(outcome[0])
    assert [_recorded(quiet, oid) for oid in ("A", "B")] == [1, 1]
