"""Running data feeds: the scheduler makes due runs, an executor claims one under a lease,
produces its file from the database a page at a time, stores it, and delivers it; retention
deletes old files.

A run's phases, each committed before the next begins::

    queued -> producing -> produced (file stored) -> delivering -> succeeded | failed

* **One run of a feed at a time, across every process.** A run is claimed only while the
  feed's row is locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer)
  and no other run of the feed is ``running`` — a run waiting to retry its delivery counts
  as running, so runs of one feed go out in order. Such feeds are left out of the claim's
  due list in SQL, so they never fill it and keep other feeds' runs waiting.
* **Workers.** The scheduler works up to ``POSTBACK_FEED_WORKERS`` runs at once, a thread
  each (:func:`feed_worker`), each claiming its own run through :func:`claim`: a slow
  destination holds one worker, never the others.
* **Leases.** The executor holds the run until ``lease_until`` (the database's clock) and
  renews it from a thread while it works; every write it makes checks it still holds the
  lease (so a run taken over after a stall is never written by two). A worker that dies
  leaves the lease to expire, and the next claim resumes the run where its phase says: a
  run that was producing produces again from the start (what it had stored is dropped); a
  run whose file was stored is never produced again, only delivered.
* **Delivery is idempotent at the destination.** SFTP writes ``name.part`` and renames it,
  and takes a file of the same name and size already there as delivered; email carries a
  Message-ID made from the run's id, the same on every try.
* **Retries.** A temporary destination failure is retried after 1, 5 and 15 minutes, then
  the run fails; a permanent one (login refused, host key changed) fails it at once. A run
  that is claimed 5 times without moving on (it kills its worker each time) fails.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from postback.config import Settings
from postback.core.feed_format import FeedWriter, file_suffix
from postback.core.feed_schedule import from_json as schedule_from_json
from postback.core.feed_schedule import latest_due, next_run, zone
from postback.core.payload import CatalogContext, catalog_values
from postback.core.values import format_date
from postback.db.clock import db_now
from postback.db.engine import reader
from postback.db.schema import (
    catalog_item,
    change_log,
    contract,
    feed,
    feed_file_chunk,
    feed_run,
    program,
)
from postback.delivery.feed_destinations import (
    Delivered,
    DestinationError,
    MailTarget,
    deliver_mail,
    deliver_sftp,
)
from postback.services.change_log import START, decode_cursor, encode_cursor, read_changes
from postback.services.feeds import (
    CHUNK_BYTES,
    LINK_DAYS,
    UnopenableSecret,
    download_url,
    pin_host_key,
    sftp_target,
)
from postback.services.integrity import unique_violation

log = logging.getLogger("postback.feeds")

#: seconds before a temporary delivery failure is tried again; after the last, the run fails
RETRY_SCHEDULE: tuple[float, ...] = (60.0, 300.0, 900.0)
#: a run claimed this many times without moving on is stopped
MAX_CLAIMS = 5
#: rows read per query while producing
PAGE_ROWS = 2000
#: chunks stored per transaction (short write transactions: SQLite has one writer)
CHUNKS_PER_COMMIT = 8
_ROOTS = {"actions": ("Actions", "Action"), "catalog": ("CatalogItems", "CatalogItem")}


class Stopping(Exception):
    """The process is stopping: the run is handed back and resumed by the next claim."""


class LeaseLost(Exception):
    """This executor no longer holds the run (it stalled past its lease, or the feed was
    deleted): it stops without writing anything more."""


_EXECUTORS = itertools.count(1)


def executor_name() -> str:
    """A new executor's name for the leases it takes: the host, the process and a number
    no other executor of this process has (each worker thread takes its own)."""
    return f"feeds:{socket.gethostname()[:20]}:{os.getpid()}:{next(_EXECUTORS)}"[:40]


# -- the scheduler ---------------------------------------------------------------------------

def schedule_due(engine: Engine, limit: int = 500) -> int:
    """Make a run for every enabled feed whose slot has come (one per feed per slot: the
    latest missed slot when the scheduler was stopped for a while), and move the feed to
    its next slot. A feed with a run still waiting to start gets no second one (that run
    makes the next file). Returns how many runs were made."""
    made = 0
    with engine.begin() as conn:
        now = db_now(conn)
        query = (select(feed.c.id, feed.c.schedule, feed.c.next_run_at)
                 .where(feed.c.enabled.is_(True), feed.c.next_run_at <= now)
                 .order_by(feed.c.next_run_at).limit(limit))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=feed)
        for row in conn.execute(query).all():
            schedule = schedule_from_json(dict(row.schedule))
            slot = latest_due(schedule, row.next_run_at, now)
            waiting = conn.execute(select(feed_run.c.id).where(
                feed_run.c.feed_id == row.id, feed_run.c.phase == "queued").limit(1)).first()
            if waiting is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(feed_run).values(
                            feed_id=row.id, trigger="schedule", scheduled_for=slot,
                            status="queued", phase="queued", next_attempt_at=now,
                            created_at=now))
                    made += 1
                except IntegrityError as exc:  # another scheduler made it: one per slot
                    if not unique_violation(exc, feed_run, "feed_id", "scheduled_for"):
                        raise
            conn.execute(update(feed).where(feed.c.id == row.id).values(
                next_run_at=next_run(schedule, max(slot, now))))
    return made


# -- claiming --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimed:
    run_id: int
    feed_id: int
    phase: str


def claim(engine: Engine, owner: str, lease_seconds: float) -> Claimed | None:
    """Take the next due run under a lease, if one of its feed's runs may start: the feed's
    running run when its lease has expired and its retry is due, else the feed's oldest
    queued run when none is running."""
    with engine.begin() as conn:
        now = db_now(conn)
        # only runs that may start now count against the limit: a queued run whose feed
        # has a run in progress (under a lease, or waiting for its retry) is left out here,
        # so feeds stuck behind a dead server never fill the list and starve the others
        busy = feed_run.alias("busy")
        in_progress = exists().where(
            busy.c.feed_id == feed_run.c.feed_id, busy.c.status == "running",
            or_(busy.c.next_attempt_at > now, busy.c.lease_until >= now))
        due = (select(feed_run.c.feed_id, func.min(feed_run.c.next_attempt_at).label("at"))
               .where(feed_run.c.status.in_(("queued", "running")),
                      feed_run.c.next_attempt_at <= now,
                      or_(feed_run.c.lease_until.is_(None), feed_run.c.lease_until < now),
                      ~in_progress)
               .group_by(feed_run.c.feed_id).order_by("at").limit(20))
        for feed_id in [r.feed_id for r in conn.execute(due)]:
            lock = select(feed.c.id).where(feed.c.id == feed_id)
            if conn.dialect.name == "postgresql":
                lock = lock.with_for_update(skip_locked=True)
            if conn.execute(lock).first() is None:
                continue  # another executor is claiming for this feed now
            run = conn.execute(select(feed_run).where(
                feed_run.c.feed_id == feed_id, feed_run.c.status == "running")
                .order_by(feed_run.c.id).limit(1)).mappings().first()
            if run is not None:
                if run["next_attempt_at"] > now or (run["lease_until"] is not None
                                                    and run["lease_until"] >= now):
                    continue  # under way elsewhere, or waiting for its retry
            else:
                run = conn.execute(select(feed_run).where(
                    feed_run.c.feed_id == feed_id, feed_run.c.phase == "queued",
                    feed_run.c.next_attempt_at <= now)
                    .order_by(feed_run.c.id).limit(1)).mappings().first()
                if run is None:
                    continue
            claims = run["claims"] + 1
            if claims > MAX_CLAIMS:
                conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
                    status="failed", phase="failed", lease_owner=None, lease_until=None,
                    finished_at=now, error=f"stopped: the run was interrupted {MAX_CLAIMS} "
                    "times without finishing (its worker stopped each time); see the logs"))
                continue
            phase = "producing" if run["phase"] == "queued" else run["phase"]
            conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
                status="running", phase=phase, lease_owner=owner,
                lease_until=now + timedelta(seconds=lease_seconds), claims=claims,
                started_at=run["started_at"] or now))
            return Claimed(run["id"], feed_id, phase)
    return None


class Lease:
    """Renews a claimed run's lease from a thread; :meth:`check` raises :class:`LeaseLost`
    once a renewal finds the run no longer ours."""

    def __init__(self, engine: Engine, run_id: int, owner: str, seconds: float,
                 stop: threading.Event | None = None) -> None:
        self.engine, self.run_id, self.owner, self.seconds = engine, run_id, owner, seconds
        self.stopping = stop or threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name=f"feed-lease-{run_id}")

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                with self.engine.begin() as conn:
                    self.hold(conn)
            except LeaseLost:
                return
            except Exception as exc:  # the database is away: the next renewal tries again
                log.warning("feed run %d: lease renewal failed (%s)", self.run_id, exc)

    def hold(self, conn: Connection) -> datetime:
        """Extend the lease inside ``conn``'s transaction, which then writes as the run's
        holder (on PostgreSQL the run's row stays locked until it commits)."""
        now = db_now(conn)
        held = conn.execute(update(feed_run).where(
            feed_run.c.id == self.run_id, feed_run.c.lease_owner == self.owner,
            feed_run.c.status == "running").values(
            lease_until=now + timedelta(seconds=self.seconds))).rowcount
        if not held:
            self.lost.set()
            raise LeaseLost(f"run {self.run_id}")
        return now

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"run {self.run_id}")
        if self.stopping.is_set():
            raise Stopping(f"run {self.run_id}")


# -- producing -------------------------------------------------------------------------------

def _file_name(feed_row: Any, run: Any) -> str:
    """``actions-2026-12-01-run42.csv.gz``: the content, the slot's date in the feed's time
    zone (the run's creation for a manual run) and the run id (unique: one name per run)."""
    tz = zone(str(dict(feed_row["schedule"]).get("time_zone") or "UTC"))
    when = (run["scheduled_for"] or run["created_at"]).astimezone(tz)
    return (f"{feed_row['content']}-{when.date().isoformat()}-run{run['id']}"
            f"{file_suffix(feed_row['format'], feed_row['gzip'])}")


def _previous_cursor(conn: Connection, feed_id: int, run_id: int) -> str | None:
    return conn.execute(select(feed_run.c.cursor_to).where(
        feed_run.c.feed_id == feed_id, feed_run.c.status == "succeeded",
        feed_run.c.id != run_id, feed_run.c.cursor_to.is_not(None))
        .order_by(feed_run.c.produced_at.desc(), feed_run.c.id.desc()).limit(1)).scalar()


def _changes_since(conn: Connection, feed_row: Any, after: str | None,
                   check: Callable[[], None], end: list[str]) -> Iterator[Sequence[Any]]:
    """since_last_run: every change after the cursor, a page at a time; ``end`` gets the
    cursor it stopped at (the next run starts there)."""
    cursor = decode_cursor(after) if after else START
    while True:
        check()
        rows, cursor = read_changes(conn, "action", partner_id=feed_row["partner_id"],
                                    program_id=feed_row["program_id"], after=cursor,
                                    limit=PAGE_ROWS)
        if rows:
            yield [r._mapping["values"] for r in rows]
        if len(rows) < PAGE_ROWS:
            end.append(encode_cursor(cursor))
            return


def _snapshot(conn: Connection, feed_row: Any, now: datetime, check: Callable[[], None]
              ) -> Iterator[Sequence[Any]]:
    """{days: N}: each action changed in the last N days once, with its latest change's
    values (read in one snapshot, so an action changing meanwhile is still one row)."""
    newer = change_log.alias("newer")
    since = now - timedelta(days=feed_row["window_days"])
    last_id = 0
    while True:
        check()
        query = (select(change_log.c.id, change_log.c["values"]).where(
            change_log.c.kind == "action", change_log.c.partner_id == feed_row["partner_id"],
            change_log.c.created_at >= since, change_log.c.id > last_id,
            ~exists().where(newer.c.kind == "action", newer.c.subject == change_log.c.subject,
                            or_(newer.c.sequence > change_log.c.sequence,
                                and_(newer.c.sequence == change_log.c.sequence,
                                     newer.c.id > change_log.c.id))))
            .order_by(change_log.c.id).limit(PAGE_ROWS))
        if feed_row["program_id"] is not None:
            query = query.where(change_log.c.program_id == feed_row["program_id"])
        rows = conn.execute(query).all()
        if rows:
            last_id = rows[-1].id
            yield [r._mapping["values"] for r in rows]
        if len(rows) < PAGE_ROWS:
            return


def _catalog(conn: Connection, feed_row: Any, check: Callable[[], None]
             ) -> Iterator[Sequence[Any]]:
    """The program's current catalog, every item once, as Product Data Change postbacks
    name its values (ChangeType, ChangedFields and ChangeId are empty: no change)."""
    program_id = feed_row["program_id"]
    name = conn.execute(select(program.c.name).where(program.c.id == program_id)).scalar_one()
    last_id = 0
    while True:
        check()
        rows = conn.execute(select(catalog_item.c.id, catalog_item.c.item_id,
                                   catalog_item.c.data)
                            .where(catalog_item.c.program_id == program_id,
                                   catalog_item.c.id > last_id)
                            .order_by(catalog_item.c.id).limit(PAGE_ROWS)).all()
        if rows:
            last_id = rows[-1].id
            yield [catalog_values(CatalogContext(r.item_id, r.data, program_id, name, "", (),
                                                 "", ""))
                   for r in rows]
        if len(rows) < PAGE_ROWS:
            return


class Permanent(Exception):
    """A run that cannot succeed (e.g. the partner's contract on the program ended)."""


def _read_snapshot(engine: Engine) -> Connection:
    """A read-only connection whose reads share one snapshot (REPEATABLE READ on
    PostgreSQL; one SQLite read transaction)."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(isolation_level="REPEATABLE READ",
                                                  postgresql_readonly=True)
    return reader(engine).connect()


def produce(engine: Engine, claimed: Claimed, lease: Lease, config: Settings,
            pause: Callable[[str], None] | None = None) -> None:
    """Make the run's file into a temporary file (never the whole feed in memory), store it
    in chunks, and commit the run as ``produced``. ``pause`` (tests) is called between
    steps, to stop a process at a chosen one."""
    started = time.monotonic()
    with engine.begin() as conn:
        now = lease.hold(conn)
        run = conn.execute(select(feed_run).where(feed_run.c.id == claimed.run_id)
                           ).mappings().one()
        feed_row = conn.execute(select(feed).where(feed.c.id == claimed.feed_id)
                                ).mappings().one()
        conn.execute(delete(feed_file_chunk).where(feed_file_chunk.c.run_id == run["id"]))
        after = _previous_cursor(conn, feed_row["id"], run["id"])
        if feed_row["program_id"] is not None and conn.execute(select(contract.c.id).where(
                contract.c.program_id == feed_row["program_id"],
                contract.c.partner_id == feed_row["partner_id"]).limit(1)).first() is None:
            raise Permanent(f"you are no longer contracted on program {feed_row['program_id']}"
                            ": this feed cannot run until the brand contracts you again")
    root, element = _ROOTS[feed_row["content"]]
    since_last_run = feed_row["content"] == "actions" and feed_row["window_days"] is None
    ended: list[str] = []
    with tempfile.TemporaryFile(prefix="postback-feed-") as out:
        writer = FeedWriter(out, feed_row["format"], feed_row["columns"],
                            gzip=feed_row["gzip"], header=feed_row["header"], root=root,
                            element=element)
        with _read_snapshot(engine) as conn, conn.begin():
            if feed_row["content"] == "catalog":
                pages = _catalog(conn, feed_row, lease.check)
            elif feed_row["window_days"] is not None:
                pages = _snapshot(conn, feed_row, now, lease.check)
            else:
                pages = _changes_since(conn, feed_row, after, lease.check, ended)
            for page in pages:
                for values in page:
                    writer.write(values)
        writer.close()
        size = out.tell()
        if pause:
            pause("written")
        chunks = _store(engine, run["id"], out, lease, pause)
    duration_ms = int((time.monotonic() - started) * 1000)
    with engine.begin() as conn:
        at = lease.hold(conn)
        conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
            phase="produced", rows=writer.rows, bytes=size, file_chunks=chunks,
            file_name=_file_name(feed_row, run), duration_ms=duration_ms,
            cursor_from=(after or encode_cursor(START)) if since_last_run else None,
            cursor_to=ended[-1] if since_last_run and ended else None, produced_at=at,
            claims=0, error=None,
            file_expires_at=at + timedelta(days=config.feed_retention_days)))
    if pause:
        pause("produced")


def _store(engine: Engine, run_id: int, out: IO[bytes], lease: Lease,
           pause: Callable[[str], None] | None) -> int:
    out.seek(0)
    seq = 0
    while True:
        batch: list[dict[str, Any]] = []
        while len(batch) < CHUNKS_PER_COMMIT and (data := out.read(CHUNK_BYTES)):
            batch.append({"run_id": run_id, "seq": seq, "data": data})
            seq += 1
        if not batch:
            return seq
        with engine.begin() as conn:
            lease.hold(conn)
            conn.execute(insert(feed_file_chunk), batch)
        if pause:
            pause("chunk")


# -- delivering ------------------------------------------------------------------------------

def _materialize(engine: Engine, run: Any, directory: str) -> Path:
    path = Path(directory) / str(run["file_name"])
    with path.open("wb") as out:
        for seq in range(run["file_chunks"]):
            with reader(engine).connect() as conn:
                data = conn.execute(select(feed_file_chunk.c.data).where(
                    feed_file_chunk.c.run_id == run["id"],
                    feed_file_chunk.c.seq == seq)).scalar()
            if data is None:
                raise Permanent("the run's stored file is gone (deleted by retention)")
            out.write(data)
    return path


def _send(engine: Engine, run: Any, feed_row: Any, config: Settings) -> Delivered:
    dest = dict(feed_row["destination"])
    try:
        target = sftp_target(feed_row, config) if dest["kind"] == "sftp" else None
    except UnopenableSecret as exc:  # this run fails; the partner enters the secret again
        raise Permanent(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="postback-feed-") as tmp:
        path = _materialize(engine, run, tmp)
        if target is not None:
            return deliver_sftp(target, path, run["file_name"], config)
        expires = min(datetime.now(run["file_expires_at"].tzinfo) + timedelta(days=LINK_DAYS),
                      run["file_expires_at"])
        link = download_url(config, run["id"], expires)
        title = feed_row["name"] or f"{feed_row['content']} feed {feed_row['id']}"
        body = (f"{title}: {run['rows']} rows in {run['file_name']} "
                f"({run['bytes']} bytes), made {format_date(run['produced_at'])}.\n"
                f"The file can also be downloaded until {format_date(expires)}:\n{link}\n")
        return deliver_mail(MailTarget(tuple(dest["to"]), bool(dest["attach"]), link), path,
                            run["file_name"], f"{title}: {run['file_name']}", body, config,
                            message_id=f"postback-feed-{feed_row['id']}-run-{run['id']}")


def deliver(engine: Engine, claimed: Claimed, lease: Lease, config: Settings,
            retry_schedule: Sequence[float] = RETRY_SCHEDULE,
            pause: Callable[[str], None] | None = None) -> None:
    """Deliver a stored file, once per attempt; record the answer, or schedule a retry."""
    with engine.begin() as conn:
        now = lease.hold(conn)
        run = conn.execute(select(feed_run).where(feed_run.c.id == claimed.run_id)
                           ).mappings().one()
        feed_row = conn.execute(select(feed).where(feed.c.id == claimed.feed_id)
                                ).mappings().one()
        kind = dict(feed_row["destination"])["kind"]
        if kind == "hosted":
            conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
                status="succeeded", phase="succeeded", lease_owner=None, lease_until=None,
                finished_at=now, error=None,
                answer=f"kept for download until {format_date(run['file_expires_at'])}"))
            return
        attempts = run["attempts"] + 1
        conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
            phase="delivering", attempts=attempts))
    lease.check()
    try:
        done = _send(engine, run, feed_row, config)
    except DestinationError as exc:
        _failed_delivery(engine, run["id"], lease, exc.reason,
                         exc.permanent or attempts > len(retry_schedule),
                         retry_schedule[attempts - 1] if attempts <= len(retry_schedule)
                         else 0.0)
        return
    if pause:
        pause("delivered")
    with engine.begin() as conn:
        at = lease.hold(conn)
        if kind == "sftp":
            pin_host_key(conn, feed_row["id"], feed_row["destination_rev"], done.host_key)
        conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
            status="succeeded", phase="succeeded", lease_owner=None, lease_until=None,
            finished_at=at, answer=done.answer, error=None, claims=0))


def _failed_delivery(engine: Engine, run_id: int, lease: Lease, reason: str, final: bool,
                     wait: float) -> None:
    with engine.begin() as conn:
        now = lease.hold(conn)
        if final:
            values: dict[str, Any] = {"status": "failed", "phase": "failed",
                                      "finished_at": now}
        else:
            values = {"phase": "produced", "next_attempt_at": now + timedelta(seconds=wait),
                      "claims": 0}
        conn.execute(update(feed_run).where(feed_run.c.id == run_id).values(
            lease_owner=None, lease_until=None, error=reason, **values))


def _fail(engine: Engine, run_id: int, owner: str, reason: str) -> None:
    with engine.begin() as conn:
        now = db_now(conn)
        conn.execute(update(feed_run).where(feed_run.c.id == run_id,
                                            feed_run.c.lease_owner == owner).values(
            status="failed", phase="failed", lease_owner=None, lease_until=None,
            finished_at=now, error=reason))


def _release(engine: Engine, run_id: int, owner: str) -> None:
    """Hand a run back after an unexpected error: the next claim resumes it."""
    with engine.begin() as conn:
        conn.execute(update(feed_run).where(feed_run.c.id == run_id,
                                            feed_run.c.lease_owner == owner).values(
            lease_owner=None, lease_until=None))


def execute(engine: Engine, claimed: Claimed, owner: str, config: Settings,
            lease_seconds: float, retry_schedule: Sequence[float] = RETRY_SCHEDULE,
            pause: Callable[[str], None] | None = None,
            stop: threading.Event | None = None) -> None:
    """Work a claimed run from its phase to its end (or to its next retry); ``stop`` set
    (the process is stopping) hands it back at its next step."""
    with Lease(engine, claimed.run_id, owner, lease_seconds, stop) as lease:
        try:
            phase = claimed.phase
            if phase == "producing":
                produce(engine, claimed, lease, config, pause)
                phase = "produced"
            if phase in ("produced", "delivering"):
                deliver(engine, claimed, lease, config, retry_schedule, pause)
        except LeaseLost:
            log.warning("feed run %d: the lease was lost (taken over, or the feed deleted); "
                        "stopped", claimed.run_id)
        except Permanent as exc:
            _fail(engine, claimed.run_id, owner, str(exc))
        except Stopping:
            _release(engine, claimed.run_id, owner)
        except Exception:
            log.exception("feed run %d failed unexpectedly; it will be resumed",
                          claimed.run_id)
            _release(engine, claimed.run_id, owner)


# -- retention -------------------------------------------------------------------------------

def sweep_files(engine: Engine, batch: int = 100) -> int:
    """Delete the files of finished runs kept past ``file_expires_at``; the runs stay, with
    ``file_deleted``. Returns how many files were deleted."""
    total = 0
    while True:
        with engine.begin() as conn:
            now = db_now(conn)
            ids = list(conn.execute(select(feed_run.c.id).where(
                feed_run.c.file_expires_at < now, feed_run.c.file_deleted_at.is_(None),
                feed_run.c.status.in_(("succeeded", "failed"))).limit(batch)).scalars())
            if not ids:
                return total
            conn.execute(delete(feed_file_chunk).where(feed_file_chunk.c.run_id.in_(ids)))
            conn.execute(update(feed_run).where(feed_run.c.id.in_(ids)).values(
                file_deleted_at=now))
            total += len(ids)


# -- the scheduler's workers, and one pass for `postback feeds run-due` -----------------------

class Tally:
    """A count shared by worker threads (runs worked, for the scheduler's log)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self) -> None:
        with self._lock:
            self._count += 1

    def take(self) -> int:
        """The count since the last take."""
        with self._lock:
            count, self._count = self._count, 0
            return count


def _claim_logged(engine: Engine, owner: str, lease: float) -> Claimed | None:
    try:
        return claim(engine, owner, lease)
    except Exception:  # the database is busy or away: the next look tries again
        log.exception("feeds: claiming a run failed")
        return None


def _work(engine: Engine, claimed: Claimed, owner: str, config: Settings, lease: float,
          retry_schedule: Sequence[float], stop: threading.Event | None) -> None:
    try:
        execute(engine, claimed, owner, config, lease, retry_schedule, stop=stop)
    except Exception:  # handing it back failed: its lease runs out and it is resumed
        log.exception("feed run %d: could not be handed back", claimed.run_id)


def feed_worker(engine: Engine, config: Settings, stop: threading.Event, *,
                interval: float, lease_seconds: float | None = None,
                retry_schedule: Sequence[float] = RETRY_SCHEDULE,
                worked: Tally | None = None) -> None:
    """One of the scheduler's ``POSTBACK_FEED_WORKERS`` threads, until ``stop`` is set: claim
    a due run (the same claim as every other worker and process, so a feed still has one
    run at a time) and work it; when none is due, look again after ``interval`` seconds.
    A run against a slow destination holds this worker only; the others go on."""
    owner = executor_name()
    lease = lease_seconds if lease_seconds is not None else config.lease_seconds
    while not stop.is_set():
        claimed = _claim_logged(engine, owner, lease)
        if claimed is None:
            stop.wait(interval)
            continue
        _work(engine, claimed, owner, config, lease, retry_schedule, stop)
        if worked is not None:
            worked.add()


def housekeep(engine: Engine) -> dict[str, int]:
    """Make due runs and delete expired files (the scheduler's part besides its workers)."""
    return {"scheduled": schedule_due(engine), "files_deleted": sweep_files(engine)}


def run_feeds(engine: Engine, config: Settings, *, owner: str | None = None,
              max_runs: int = 20, lease_seconds: float | None = None,
              retry_schedule: Sequence[float] = RETRY_SCHEDULE,
              stop: threading.Event | None = None,
              workers: int | None = None) -> dict[str, int]:
    """One pass: make due runs, work due runs (up to ``max_runs``, ``workers`` at once,
    default ``POSTBACK_FEED_WORKERS``: a slow destination holds one of them only), and
    delete expired files. Blocking: call it from a thread; ``stop`` set ends it at the next
    step (a run under way is handed back, to be resumed)."""
    lease = lease_seconds if lease_seconds is not None else config.lease_seconds
    count = max(1, workers if workers is not None else config.feed_workers)
    done = {"scheduled": schedule_due(engine), "worked": 0, "files_deleted": 0}
    budget = [max_runs]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(me: str) -> None:
        try:
            while not (stop is not None and stop.is_set()):
                with lock:
                    if budget[0] <= 0 or errors:
                        return
                    budget[0] -= 1
                claimed = claim(engine, me, lease)
                if claimed is None:
                    return
                execute(engine, claimed, me, config, lease, retry_schedule, stop=stop)
                with lock:
                    done["worked"] += 1
        except BaseException as exc:  # raised by the pass, once every worker has ended
            with lock:
                errors.append(exc)

    names = [owner] if owner is not None and count == 1 else \
        [f"{owner[:36]}:{i}" if owner is not None else executor_name() for i in range(count)]
    threads = [threading.Thread(target=worker, args=(name,), name=f"feed-pass-{i}",
                                daemon=True) for i, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    done["files_deleted"] = sweep_files(engine)
    return done
