"""A start stopped anywhere in its migrations leaves the database at a revision, never between
two, and the next ``postback migrate`` completes the upgrade (docs/reliability.md).

Each run is ``python -m postback migrate`` (or ``serve``) in a process of its own, forked by a
driver (this file, run as a script) that has imported postback once, so that hundreds of runs
take seconds rather than minutes. A run reports each SQL statement as it begins; at its Nth it
waits, before that statement has done anything, for the test to send it a signal from outside:
SIGKILL, or SIGTERM/SIGINT, which ``serve`` turns into a clean exit.

SIGKILL leaves only the files behind, and a statement that only reads leaves them as the one
before it did, so N is each statement that can write (BEGIN, every DDL and DML statement,
COMMIT, the PRAGMAs that set something) and the first: every state the files can be left in.
SIGTERM raises SystemExit in whatever code is running, so there the reads are points too.

On SQLite the statements are sqlite3's trace callback: everything the library runs, PRAGMAs,
BEGIN and COMMIT included. A Python exception raised inside that callback is swallowed by
sqlite3, so the SIGTERM/SIGINT runs (whose handler raises SystemExit) stop at SQLAlchemy's
before_cursor_execute and commit events instead, as on PostgreSQL.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from alembic.script import ScriptDirectory

from postback.db.migrate import alembic_config, upgrade
from postback.sealing import new_key

ROOT = Path(__file__).resolve().parent.parent
PAUSE_TIMEOUT = 120.0
WIDTH = 2  # runs at once (the machine has 2 cores)
#: every process runs the postback of this tree, whatever is installed
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# --- the driver (this file run as a script) -----------------------------------------------


@dataclass
class _Child:
    pid: int
    events: int
    resume: int
    buffer: bytes = b""
    statements: list[str] = field(default_factory=list)
    ended: bool = False


class _Reporter:
    """In a run: report each statement as it begins; at the ``pause_at``-th, wait there."""

    def __init__(self, pause_at: int | None, events: int, resume: int) -> None:
        self.n = 0
        self.pause_at = pause_at
        self.events = events
        self.resume = resume

    def __call__(self, statement: str) -> None:
        self.n += 1
        self._send({"sql": " ".join(statement.split())[:200]})
        if self.n == self.pause_at:
            self._send({"paused": self.n})
            if not os.read(self.resume, 1):  # a signal from the test lands here
                os._exit(3)  # the driver has gone: go too, without finishing the start

    def _send(self, event: dict[str, Any]) -> None:
        os.write(self.events, (json.dumps(event) + "\n").encode())


def _install(hook: str, reporter: _Reporter) -> None:
    from sqlalchemy import Engine, event
    from sqlalchemy.pool import Pool

    if hook == "sqlite":
        def connected(dbapi_connection: Any, _record: Any) -> None:
            if isinstance(dbapi_connection, sqlite3.Connection):
                dbapi_connection.set_trace_callback(reporter)

        event.listen(Pool, "connect", connected)
    elif hook == "sqlalchemy":
        def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            reporter(statement)

        event.listen(Engine, "before_cursor_execute", before)
        event.listen(Engine, "commit", lambda _conn: reporter("COMMIT"))
    else:
        raise ValueError(hook)


def _child(req: dict[str, Any], events: int, resume: int, inherited: list[int]) -> NoReturn:
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.chdir(req["cwd"])
        os.environ.update(req["env"])
        if req.get("hook"):
            _install(req["hook"], _Reporter(req.get("pause_at"), events, resume))
        sys.argv = ["postback", *req["argv"]]
        runpy.run_module("postback", run_name="__main__")  # postback/__main__.py: sys.exit(main())
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _read_event(child: _Child, timeout: float) -> dict[str, Any] | None:
    """The child's next event; None when it has ended (or after ``timeout`` seconds)."""
    while b"\n" not in child.buffer:
        if child.ended:
            return None
        ready, _, _ = select.select([child.events], [], [], timeout)
        if not ready:
            return None
        chunk = os.read(child.events, 65536)
        if not chunk:  # ended; a line cut short by SIGKILL is dropped
            child.ended = True
            child.buffer = b""
            return None
        child.buffer += chunk
    line, child.buffer = child.buffer.split(b"\n", 1)
    event: dict[str, Any] = json.loads(line)
    if "sql" in event:
        child.statements.append(event["sql"])
    return event


def _driver() -> None:
    # imported once, here, for every run (postback.runner brings what `serve` starts with)
    for module in ("alembic.command", "psycopg", "sqlalchemy.dialects.postgresql.psycopg",
                   "sqlalchemy.dialects.sqlite.pysqlite", "postback.cli", "postback.runner"):
        importlib.import_module(module)
    from postback.db.migrate import upgrade

    warm = Path(sys.argv[1]) / "warm-up.db"
    upgrade(f"sqlite:///{warm}")  # loads what a migration loads lazily (no connection is left)
    children: dict[int, _Child] = {}
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        reply: dict[str, Any] = {}
        if op == "start":
            events_r, events_w = os.pipe()
            resume_r, resume_w = os.pipe()
            inherited = [fd for c in children.values() for fd in (c.events, c.resume)]
            pid = os.fork()
            if pid == 0:
                os.close(events_r)
                os.close(resume_w)
                _child(req, events_w, resume_r, inherited)
            os.close(events_w)
            os.close(resume_r)
            children[pid] = _Child(pid, events_r, resume_w)
            reply = {"id": pid}
        else:
            child = children[req["id"]]
            if op == "until":  # until it pauses, or runs a statement starting with req["sql"]
                prefix = req.get("sql")
                while (event := _read_event(child, PAUSE_TIMEOUT)) is not None:
                    if "paused" in event or (prefix and event["sql"].startswith(prefix)):
                        reply = {"reached": True, "n": len(child.statements)}
                        break
                else:
                    reply = {"reached": False, "n": len(child.statements)}
            elif op == "signal":
                os.kill(child.pid, getattr(signal, req["signal"]))
            elif op == "resume":
                os.write(child.resume, b"x")
            elif op == "wait":
                while _read_event(child, PAUSE_TIMEOUT) is not None:
                    pass
                if not child.ended:  # still running after PAUSE_TIMEOUT: a hung run
                    os.kill(child.pid, signal.SIGKILL)
                    reply["hung"] = True
                    while _read_event(child, PAUSE_TIMEOUT) is not None:
                        pass
                _, status = os.waitpid(child.pid, 0)
                os.close(child.events)
                os.close(child.resume)
                del children[child.pid]
                reply.update(exit=os.waitstatus_to_exitcode(status),
                             statements=child.statements)
            else:
                raise ValueError(op)
        out.write(json.dumps(reply) + "\n")
        out.flush()
    for child in children.values():  # left by a failed test: none outlives the driver
        os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)


# --- the test's side -----------------------------------------------------------------------


@dataclass
class Run:
    exit: int  # negative: killed by that signal
    statements: list[str]
    log: str


class Driver:
    """Talks to the driver process: one JSON line per request and per reply."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.stderr = (work / "driver.stderr").open("w")
        self.proc = subprocess.Popen([sys.executable, __file__, str(work)], cwd=ROOT,
                                     env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.runs = 0

    def call(self, **req: Any) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(req) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise AssertionError("the driver died:\n" + (self.work / "driver.stderr").read_text())
        reply: dict[str, Any] = json.loads(line)
        return reply

    def start(self, argv: list[str], env: dict[str, str], hook: str | None = None,
              pause_at: int | None = None) -> tuple[int, Path]:
        self.runs += 1
        log = self.work / f"run-{self.runs}.log"
        pid: int = self.call(op="start", argv=argv, env=env, hook=hook, pause_at=pause_at,
                             log=str(log), cwd=str(self.work))["id"]
        return pid, log

    def until(self, pid: int, sql: str | None = None) -> bool:
        """Until the run pauses (or runs a statement starting with ``sql``); False if it ended."""
        reached: bool = self.call(op="until", id=pid, sql=sql)["reached"]
        return reached

    def wait(self, pid: int, log: Path) -> Run:
        reply = self.call(op="wait", id=pid)
        text = log.read_text() if log.exists() else ""
        assert not reply.get("hung"), f"the run hung:\n{text}"
        return Run(reply["exit"], reply["statements"], text)

    def run(self, argv: list[str], env: dict[str, str], hook: str | None = None) -> Run:
        return self.wait(*self.start(argv, env, hook))

    def stop_all(self, at: list[int], sig: signal.Signals, argv: list[str],
                 envs: list[dict[str, str]], hook: str) -> list[Run]:
        """Runs at once, each sent ``sig`` while waiting before its statement in ``at``."""
        started = [self.start(argv, env, hook, pause_at=n) for n, env in zip(at, envs,
                                                                             strict=True)]
        reached = [self.until(pid) for pid, _ in started]
        for (pid, _), ok in zip(started, reached, strict=True):
            if ok:
                self.call(op="signal", id=pid, signal=sig.name)
        runs = [self.wait(pid, log) for pid, log in started]
        for n, ok, run in zip(at, reached, runs, strict=True):
            assert ok, f"the run ended before its statement {n}:\n{run.log}"
        return runs

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()


MIGRATE = ["migrate"]
SERVE = ["serve", "--port", "0"]  # never gets as far as listening: stopped while migrating
DDL = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")


def expected_exit(argv: list[str], sig: signal.Signals) -> int:
    if argv[0] == "serve" and sig in (signal.SIGTERM, signal.SIGINT):
        return 0  # cli._stop_before_start: a clean stop
    return -sig  # SIGKILL, and SIGTERM's default action on `migrate`


def check_stopped(run: Run, argv: list[str], sig: signal.Signals) -> None:
    assert run.exit == expected_exit(argv, sig), run.log
    if run.exit == 0:
        assert "Traceback" not in run.log, run.log


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    d = Driver(tmp_path_factory.mktemp("migration-crash"))
    yield d
    d.close()


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


# --- SQLite --------------------------------------------------------------------------------

KEY = new_key()


def sqlite_env(path: Path) -> dict[str, str]:
    return {"POSTBACK_DATABASE_URL": f"sqlite:///{path}", "POSTBACK_SECRET_KEY": KEY}


def sqlite_files(path: Path) -> list[Path]:
    return [p for p in (Path(f"{path}{s}") for s in ("", "-wal", "-journal")) if p.exists()]


def dump(path: Path) -> list[str]:
    """Schema and rows as the next start will find them (read from a copy, so that the files
    stay exactly as the stopped run left them for that start). An empty database is []."""
    copy = path.parent / f"copy-{uuid.uuid4().hex}"
    copy.mkdir()
    try:
        for p in sqlite_files(path):
            shutil.copy(p, copy / p.name.replace(path.name, "db"))
        conn = sqlite3.connect(copy / "db")
        try:
            lines = list(conn.iterdump())
        finally:
            conn.close()
    finally:
        shutil.rmtree(copy)
    # sorted: indexes are listed in the order they were made, which a rebuild varies too
    return sorted(normal(line) for line in lines
                  if line not in ("BEGIN TRANSACTION;", "COMMIT;"))


CONSTRAINT = ("CONSTRAINT ", "PRIMARY KEY", "FOREIGN KEY", "UNIQUE", "CHECK")


def normal(statement: str) -> str:
    """A table's constraints in one order: a batch rebuild lists them in the order of a set,
    which varies from one process to the next."""
    if not statement.startswith("CREATE TABLE"):
        return statement
    *body, end = (line.rstrip(", ") for line in statement.split("\n"))
    constraints = sorted(line for line in body if line.strip().startswith(CONSTRAINT))
    columns = [line for line in body if not line.strip().startswith(CONSTRAINT)]
    return "\n".join([*columns, *constraints, end])


def sqlite_revision(path: Path) -> str | None:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'")
        if not found.fetchall():
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def sqlite_states(start: Path | None, work: Path) -> dict[str | None, list[str]]:
    """The database at each revision from ``start`` (None: no database yet) to head."""
    path = work / "states.db"
    if start is not None:
        for p in sqlite_files(start):
            shutil.copy(p, Path(str(p).replace(str(start), str(path))))
    current = sqlite_revision(path) if start is not None else None
    states = {current: dump(path)}
    todo = revisions()
    for rev in todo[todo.index(current) + 1 if current else 0:]:
        upgrade(f"sqlite:///{path}", rev)
        states[rev] = dump(path)
    return states


def summary(lines: list[str]) -> str:
    return "\n".join(line[:120] for line in lines if line.startswith("CREATE TABLE"))


def can_write(statement: str) -> bool:
    """False for a statement that only reads: stopped before it, the files are as they were
    after the statement before it."""
    return not (statement.startswith("SELECT")
                or (statement.startswith("PRAGMA") and "=" not in statement))


Points = Callable[[list[str]], list[int]]


def before_each_write(statements: list[str]) -> list[int]:
    """Every point the files can differ at: before the first statement, before each one
    that can write (BEGIN and COMMIT included); the clean run covers after the last."""
    return [1, *(n for n, s in enumerate(statements, 1) if n > 1 and can_write(s))]


def writes_and_every(k: int) -> Points:
    """Before each statement that can write, and before every ``k``-th of all."""
    def points(statements: list[str]) -> list[int]:
        every = range(k, len(statements) + 1, k)
        return sorted({*before_each_write(statements), *every})
    return points


def spread(count: int) -> Points:
    def points(statements: list[str]) -> list[int]:
        total = len(statements)
        return sorted({max(1, total * i // (count - 1)) for i in range(count)})
    return points


def sweep_sqlite(driver: Driver, work: Path, start: Path | None, argv: list[str],
                 sig: signal.Signals, hook: str, points: Points, rerun_every: int = 1) -> int:
    """Stop a start (the database as ``start``, None: no file yet) before each statement that
    ``points`` picks of those a clean start runs. Each time, the run stopped as a stop
    should, the database is at a revision, and (every ``rerun_every``-th time, and the last)
    the next `migrate` takes it to head. Returns how many points were covered."""
    states = sqlite_states(start, work)
    head = states[revisions()[-1]]

    def fresh(name: str) -> Path:
        path = work / name / "postback.db"
        path.parent.mkdir()
        if start is not None:
            for p in sqlite_files(start):
                shutil.copy(p, path.parent / p.name.replace(start.name, path.name))
        return path

    path = fresh("clean")
    clean = driver.run(MIGRATE, sqlite_env(path), hook)
    assert clean.exit == 0, clean.log
    assert dump(path) == head
    statements = clean.statements
    assert any(s.startswith("CREATE") for s in statements)  # it migrated something
    chosen = points(statements)
    for batch in range(0, len(chosen), WIDTH):  # WIDTH runs at a time, each on its own file
        at = chosen[batch:batch + WIDTH]
        paths = [fresh(f"stop-{n}") for n in at]
        runs = driver.stop_all(at, sig, argv, [sqlite_env(p) for p in paths], hook)
        again: list[Path] = []
        for i, (n, run, path) in enumerate(zip(at, runs, paths, strict=True), batch):
            check_stopped(run, argv, sig)
            assert len(run.statements) == n
            state = dump(path)
            assert state in states.values(), (
                f"{sig.name} before statement {n} ({statements[n - 1]!r}) left a database at "
                f"no revision; its tables:\n{summary(state)}")
            if i % rerun_every == 0 or i == len(chosen) - 1:
                again.append(path)
        reruns = [driver.start(MIGRATE, sqlite_env(p)) for p in again]
        for path, (pid, log) in zip(again, reruns, strict=True):
            run = driver.wait(pid, log)
            assert run.exit == 0, f"the next start after {sig.name} ({path}):\n{run.log}"
            assert dump(path) == head, f"the next start after {sig.name} ({path})"
        for path in paths:
            shutil.rmtree(path.parent)
    return len(chosen)


def test_first_start_killed_at_every_point(driver: Driver, tmp_path: Path) -> None:
    """The reported failure: SIGKILL during the first start's migrations."""
    assert sweep_sqlite(driver, tmp_path, None, MIGRATE, signal.SIGKILL, "sqlite",
                        before_each_write, rerun_every=2) > 30


def test_migrate_terminated_at_points(driver: Driver, tmp_path: Path) -> None:
    """`migrate` keeps SIGTERM's default action: it dies at once, as with SIGKILL."""
    sweep_sqlite(driver, tmp_path, None, MIGRATE, signal.SIGTERM, "sqlite", spread(4))


def test_serve_terminated_at_every_point(driver: Driver, tmp_path: Path) -> None:
    """`serve` turns SIGTERM into SystemExit (cli._stop_before_start), raised wherever the
    start-up is, so reads are points too (every fourth statement): it exits 0, and the
    transaction it was in is rolled back."""
    assert sweep_sqlite(driver, tmp_path, None, SERVE, signal.SIGTERM, "sqlalchemy",
                        writes_and_every(4), rerun_every=10) > 60


def test_serve_interrupted_at_points(driver: Driver, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) on `serve`, as SIGTERM."""
    sweep_sqlite(driver, tmp_path, None, SERVE, signal.SIGINT, "sqlalchemy", spread(4))


def rows_at_0001(path: Path) -> None:
    """Rows in the tables later migrations rebuild: a setting that a delivery refers to (ON
    DELETE SET NULL), the delivery, and one attempt."""
    upgrade(f"sqlite:///{path}", "0001")
    t = "'2026-11-01 00:00:00.000000'"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(f"INSERT INTO brand VALUES (1, 'Acme Shoes', {t})")
        conn.execute(f"INSERT INTO partner VALUES (1, 'Cashback World', 'cashback', {t})")
        conn.execute("INSERT INTO notification_setting VALUES (1, 1, 'action-lifecycle', "
                     f"'https://example.com/pb', 'GET', 'json', '', '{{}}', 1, {t}, {t})")
        conn.execute("INSERT INTO delivery VALUES (1, 'e1', 1, 1, NULL, 'action-lifecycle', "
                     f"'created', 'pending', 'GET', 'https://example.com/pb', '{{}}', NULL, 1, "
                     f"1, {t}, NULL, 500, 'http_500', {t}, NULL)")
        conn.execute(f"INSERT INTO delivery_attempt VALUES (1, 1, 1, {t}, 'GET', "
                     "'https://example.com/pb', '{}', 500, '{}', 'oops', 1.5, NULL, NULL, "
                     "'failed', 'w1')")
    conn.close()


def test_upgrade_with_rows_killed_at_every_point(driver: Driver, tmp_path: Path) -> None:
    """From 0001 with rows in it, through the batch rebuilds of notification_setting and
    delivery (copy, DROP, rename)."""
    start = tmp_path / "start" / "postback.db"
    start.parent.mkdir()
    rows_at_0001(start)
    assert sweep_sqlite(driver, tmp_path, start, MIGRATE, signal.SIGKILL, "sqlite",
                        before_each_write, rerun_every=4) > 20
    path = tmp_path / "after.db"
    shutil.copy(start, path)
    upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    try:  # foreign keys were off for the rebuilds: no cascade, nothing set to NULL
        assert conn.execute("SELECT id, setting_id FROM delivery").fetchall() == [(1, 1)]
        assert conn.execute("SELECT count(*) FROM delivery_attempt").fetchone() == (1,)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_real_starts_at_once_take_turns(tmp_path: Path) -> None:
    """Two real `python -m postback migrate` started together on a new file: both succeed
    and the schema is the one a single upgrade builds."""
    path = tmp_path / "postback.db"
    env = {**ENV, **sqlite_env(path)}
    procs = [subprocess.Popen([sys.executable, "-m", "postback", "migrate"], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    assert dump(path) == sqlite_states(None, tmp_path)[revisions()[-1]]


def take_turns(driver: Driver, env: dict[str, str], clean: list[str], head_noop: int,
               lock_sql: str) -> tuple[Run, Run]:
    """`migrate` stopped halfway through its upgrade (so holding the lock) while `serve`
    starts: serve waits at ``lock_sql`` until migrate commits, then finds the schema at head
    and starts (stopped there by SIGTERM, at its first statement after its upgrade)."""
    first, first_log = driver.start(MIGRATE, env, HOOK_OF[lock_sql], pause_at=len(clean) // 2)
    assert driver.until(first)
    second, second_log = driver.start(SERVE, env, "sqlalchemy", pause_at=head_noop + 1)
    assert driver.until(second, sql=lock_sql)  # now waiting for the first's transaction
    driver.call(op="resume", id=first)
    one = driver.wait(first, first_log)
    assert one.exit == 0, one.log
    assert driver.until(second), "serve did not get past its migrations"
    driver.call(op="signal", id=second, signal="SIGTERM")
    two = driver.wait(second, second_log)
    assert two.exit == 0, two.log
    assert any(s.startswith("CREATE TABLE") for s in one.statements)
    migrating = two.statements[:head_noop]
    assert not [s for s in migrating if s.startswith(DDL)], "serve migrated again"
    return one, two


HOOK_OF = {"BEGIN IMMEDIATE": "sqlite", "SELECT pg_advisory_xact_lock": "sqlalchemy"}


def test_migrate_and_serve_at_once_take_turns(driver: Driver, tmp_path: Path) -> None:
    path = tmp_path / "postback.db"
    head_path = tmp_path / "head.db"
    clean = driver.run(MIGRATE, sqlite_env(head_path), "sqlite")
    assert clean.exit == 0, clean.log
    noop = driver.run(MIGRATE, sqlite_env(head_path), "sqlalchemy")
    assert noop.exit == 0 and not [s for s in noop.statements if s.startswith(DDL)]
    take_turns(driver, sqlite_env(path), clean.statements, len(noop.statements),
               "BEGIN IMMEDIATE")
    assert dump(path) == dump(head_path)


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_databases() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty PostgreSQL databases, dropped at the end."""
    from tests.conftest import IN_CI, PG_SERVER, _pg_reachable

    if not _pg_reachable():
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (CI never skips it)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_SERVER}")
    made: list[str] = []

    def make() -> str:
        name = f"postback_crash_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return PG_SERVER.rsplit("/", 1)[0] + "/" + name

    yield make
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_empty(url: str) -> str:
    """The database emptied (cheaper than making another)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    assert pg_state(url) == []
    return url


def pg_env(url: str) -> dict[str, str]:
    return {"POSTBACK_DATABASE_URL": url, "POSTBACK_SECRET_KEY": KEY}


def pg_state(url: str) -> list[tuple[str, ...]]:
    """Every relation, column, constraint and index in the public schema, and the version."""
    queries = [
        "SELECT 'relation', c.relname, c.relkind::text, '' FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
        "SELECT 'column', table_name || '.' || column_name, data_type || ' ' || is_nullable, "
        "coalesce(column_default, '') FROM information_schema.columns "
        "WHERE table_schema = 'public'",
        "SELECT 'constraint', conrelid::regclass::text || '.' || conname, contype::text, "
        "pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
        "SELECT 'index', indexname, tablename, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public'",
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        rows: list[tuple[str, ...]] = []
        for query in queries:
            rows += conn.execute(query).fetchall()
        if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() != (None,):
            rows += [("version", str(v)) for (v,) in
                     conn.execute("SELECT version_num FROM alembic_version").fetchall()]
    return sorted(rows)


def test_postgresql_stopped_at_points_of_the_first_start(
        driver: Driver, pg_databases: Callable[[], str]) -> None:
    states_url = pg_databases()
    states = [pg_state(states_url)]
    for rev in revisions():
        upgrade(states_url, rev)
        states.append(pg_state(states_url))
    head = states[-1]
    url = pg_databases()
    clean = driver.run(MIGRATE, pg_env(url), "sqlalchemy")
    assert clean.exit == 0, clean.log
    assert pg_state(url) == head
    total = len(clean.statements)  # the last is the COMMIT
    assert clean.statements[-1] == "COMMIT" and total > 20
    kills = sorted({1, total // 3, 2 * total // 3, total - 1, total})
    spare = [pg_databases() for _ in range(WIDTH)]
    for argv, sig, points in [(MIGRATE, signal.SIGKILL, kills),
                              (SERVE, signal.SIGTERM, [total // 2, total])]:
        for batch in range(0, len(points), WIDTH):
            at = points[batch:batch + WIDTH]
            urls = [pg_empty(u) for u in spare[:len(at)]]
            runs = driver.stop_all(at, sig, argv, [pg_env(u) for u in urls], "sqlalchemy")
            for n, run, url in zip(at, runs, urls, strict=True):
                check_stopped(run, argv, sig)
                state = pg_state(url)
                assert state in states, f"{sig.name} before statement {n}: no revision: {state}"
            reruns = [driver.start(MIGRATE, pg_env(u)) for u in urls]
            for n, (pid, log), url in zip(at, reruns, urls, strict=True):
                run = driver.wait(pid, log)
                assert run.exit == 0, f"the next start after {sig.name} before {n}:\n{run.log}"
                assert pg_state(url) == head


def test_postgresql_migrate_and_serve_at_once_take_turns(
        driver: Driver, pg_databases: Callable[[], str]) -> None:
    head_url = pg_databases()
    clean = driver.run(MIGRATE, pg_env(head_url), "sqlalchemy")
    assert clean.exit == 0, clean.log
    noop = driver.run(MIGRATE, pg_env(head_url), "sqlalchemy")
    assert noop.exit == 0 and not [s for s in noop.statements if s.startswith(DDL)]
    url = pg_databases()
    take_turns(driver, pg_env(url), clean.statements, len(noop.statements),
               "SELECT pg_advisory_xact_lock")
    assert pg_state(url) == pg_state(head_url)


if __name__ == "__main__":
    _driver()
