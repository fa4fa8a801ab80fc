"""The database side of the engine: claim due deliveries under a lease, record results.

A claim moves ``next_attempt_at`` to the end of the lease and stamps the worker's id; a
worker that dies simply lets the lease run out and the delivery becomes due again, which
is what makes delivery at-least-once without any other bookkeeping. On PostgreSQL the
claim uses ``FOR UPDATE SKIP LOCKED`` so any number of workers share the table; on SQLite
the claim is one write transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, or_, select, update

from postback.core.responses import stored_body
from postback.core.signing import SigningKey, secret_key
from postback.core.values import utc
from postback.db.schema import delivery, delivery_attempt, notification_setting, rate_bucket
from postback.sealing import Sealer


@dataclass(frozen=True)
class Job:
    """One claimed delivery: everything needed to send it once."""

    id: int
    event_id: str
    setting_id: int | None
    method: str
    url: str
    headers: dict[str, str]
    secret_headers: frozenset[str]
    success_response: str | None
    body: bytes | None
    attempt: int
    failures: int
    error_response: str | None = None
    signing_keys: tuple[SigningKey, ...] = ()

    @property
    def signed_content(self) -> bytes:
        """What the signature covers: the body, or for a GET the full URL."""
        return self.body if self.body is not None else self.url.encode("utf-8")


@dataclass(frozen=True)
class Result:
    """One attempt's outcome, ready to be written."""

    job: Job
    started_at: datetime
    request_headers: dict[str, str]
    status_code: int | None
    response_headers: dict[str, str] | None
    response_body: bytes | None
    latency_ms: float
    error_class: str | None
    error_message: str | None
    outcome: str  # success | retry | permanent_failure
    next_attempt_at: datetime | None  # for a retry


@dataclass(frozen=True)
class Claim:
    jobs: list[Job]
    #: seconds until deliveries held back by a Maximum Requests per second come due
    wake_in: float | None = None


def bucket_capacity(rate: float) -> float:
    """Tokens a rate-limited endpoint may bank: a tenth of a second's worth (at least one),
    so no one-second window sees more than about 1.1 x the rate."""
    return max(1.0, rate / 10)


def _take_tokens(conn: Connection, setting_id: int, rate: float, wanted: int,
                 now: float) -> int:
    """Take up to ``wanted`` tokens from the endpoint's shared bucket (row-locked)."""
    row = conn.execute(select(rate_bucket).where(rate_bucket.c.setting_id == setting_id)
                       .with_for_update()).first()
    capacity = bucket_capacity(rate)
    tokens = capacity if row is None else min(capacity,
                                              row.tokens + max(0.0, now - row.updated) * rate)
    take = min(wanted, int(tokens))
    values = {"tokens": tokens - take, "updated": now}
    if row is None:
        conn.execute(insert(rate_bucket).values(setting_id=setting_id, **values))
    else:
        conn.execute(update(rate_bucket).where(rate_bucket.c.setting_id == setting_id)
                     .values(**values))
    return take


def _choose(candidates: Sequence[Any], limit: int, room: Mapping[int, int],
            default_room: int) -> list[int]:
    """Up to ``limit`` ids, oldest first, no endpoint given more than it has room for."""
    left = dict(room)
    chosen: list[int] = []
    for row in candidates:
        key = row.setting_id
        if key is not None:
            free = left.get(key, default_room)
            if free <= 0:
                continue
            left[key] = free - 1
        chosen.append(row.id)
        if len(chosen) == limit:
            break
    return chosen


def claim(engine: Engine, worker: str, limit: int, now: datetime, lease_seconds: float,
          room: Mapping[int, int] | None = None, default_room: int = 1 << 30,
          sealer: Sealer | None = None) -> Claim:
    """Lease up to ``limit`` due deliveries to ``worker``, oldest due first, giving no
    endpoint more than ``room`` (its free places in this worker; ``default_room`` for one
    it holds nothing of).

    Candidates are read (row-locked, skipping rows other workers hold) and only the chosen
    ones are written, so a busy endpoint costs no writes for what it cannot take now.
    Endpoints with a Maximum Requests per second get only what their shared bucket allows;
    the rest is handed back at once, spaced at the endpoint's rate, with no attempt charged.
    """
    room = room or {}
    full = [key for key, free in room.items() if free <= 0]
    candidates = (select(delivery.c.id, delivery.c.setting_id)
                  .where(delivery.c.status == "pending", delivery.c.next_attempt_at <= now)
                  .order_by(delivery.c.next_attempt_at).limit(limit * 4)
                  .with_for_update(skip_locked=True))
    if full:
        candidates = candidates.where(or_(delivery.c.setting_id.is_(None),
                                          delivery.c.setting_id.not_in(full)))
    wake_in: float | None = None
    with engine.begin() as conn:
        chosen = _choose(conn.execute(candidates).all(), limit, room, default_room)
        rows = sorted(conn.execute(
            update(delivery).where(delivery.c.id.in_(chosen))
            .values(lease_owner=worker, next_attempt_at=now + timedelta(seconds=lease_seconds))
            .returning(delivery.c.id, delivery.c.event_id, delivery.c.setting_id,
                       delivery.c.method, delivery.c.url, delivery.c.headers, delivery.c.body,
                       delivery.c.attempt_count, delivery.c.failures)).all(),
            key=lambda r: r.id) if chosen else []
        setting_ids = {r.setting_id for r in rows if r.setting_id is not None}
        settings: dict[int, Any] = {}
        if setting_ids:
            settings = {s.id: s for s in conn.execute(
                select(notification_setting.c.id, notification_setting.c.headers,
                       notification_setting.c.success_response,
                       notification_setting.c.error_response,
                       notification_setting.c.max_requests_per_second,
                       notification_setting.c.signing_secret,
                       notification_setting.c.previous_signing_secret,
                       notification_setting.c.previous_secret_expires_at)
                .where(notification_setting.c.id.in_(setting_ids)))}
        held: list[dict[str, Any]] = []
        for sid, setting in settings.items():
            rate = setting.max_requests_per_second
            if not rate:
                continue
            mine = [r for r in rows if r.setting_id == sid]
            take = _take_tokens(conn, sid, rate, len(mine), now.timestamp())
            for i, r in enumerate(mine[take:]):
                held.append({"b_id": r.id, "b_next": now + timedelta(seconds=(i + 1) / rate)})
            if len(mine) > take:
                wake_in = min(wake_in or 1 / rate, 1 / rate)
        if held:
            conn.execute(_hold, held)
            held_ids = {h["b_id"] for h in held}
            rows = [r for r in rows if r.id not in held_ids]
    # what depends only on the setting (opened headers, decoded keys) is resolved once
    resolved = {sid: _resolve(setting, sealer, now) for sid, setting in settings.items()}
    none = _Resolved({}, None, None, ())
    jobs = []
    for r in rows:
        res = resolved.get(r.setting_id, none) if r.setting_id is not None else none
        jobs.append(Job(
            id=r.id, event_id=r.event_id, setting_id=r.setting_id, method=r.method, url=r.url,
            headers={**r.headers, **res.headers}, secret_headers=frozenset(res.headers),
            success_response=res.success_response, error_response=res.error_response,
            body=r.body.encode("utf-8") if r.body is not None else None,
            attempt=r.attempt_count + 1, failures=r.failures, signing_keys=res.keys,
        ))
    return Claim(jobs, wake_in)


@dataclass(frozen=True)
class _Resolved:
    headers: dict[str, str]
    success_response: str | None
    error_response: str | None
    keys: tuple[SigningKey, ...]


def _resolve(setting: Any, sealer: Sealer | None, now: datetime) -> _Resolved:
    if sealer is None:
        return _Resolved(setting.headers, setting.success_response, setting.error_response, ())
    return _Resolved(
        sealer.open_values(setting.headers), setting.success_response, setting.error_response,
        signing_keys(setting.signing_secret, setting.previous_signing_secret,
                     setting.previous_secret_expires_at, sealer, now))


def signing_keys(secret: str | None, previous: str | None, previous_expires: datetime | None,
                 sealer: Sealer, now: datetime) -> tuple[SigningKey, ...]:
    """The keys that sign a setting's postbacks (sealed secrets in): its secret, and during
    a rotation's grace period the previous one too."""
    if not secret:
        return ()
    keys = [secret_key(sealer.open(secret))]
    if previous and previous_expires is not None and previous_expires > now:
        keys.append(secret_key(sealer.open(previous)))
    return tuple(keys)


_hold = (update(delivery).where(delivery.c.id == bindparam("b_id"))
         .values(lease_owner=None, next_attempt_at=bindparam("b_next")))


def release(engine: Engine, worker: str, ids: Sequence[int], now: datetime) -> None:
    """Hand claimed but unsent deliveries back, due at once (no attempt is charged)."""
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(update(delivery).where(delivery.c.id.in_(ids),
                                            delivery.c.lease_owner == worker)
                     .values(lease_owner=None, next_attempt_at=now))


@dataclass(frozen=True)
class DisablePolicy:
    """An endpoint that fails every delivery for ``hours`` and at least ``failures`` times in
    a row is disabled, with the reason recorded for the partner to read."""

    hours: float = 72.0
    failures: int = 10


_healthy = (update(notification_setting).where(notification_setting.c.id == bindparam("b_id"))
            .values(failing_since=None, consecutive_failures=0))
_failing = (update(notification_setting).where(notification_setting.c.id == bindparam("b_id"))
            .values(failing_since=func.coalesce(notification_setting.c.failing_since,
                                                bindparam("b_now")),
                    consecutive_failures=notification_setting.c.consecutive_failures
                    + bindparam("b_n")))


def _endpoint_health(conn: Connection, results: Sequence[Result], now: datetime,
                     policy: DisablePolicy) -> None:
    failed: dict[int, int] = {}
    healthy: set[int] = set()
    for r in results:
        if r.job.setting_id is None:
            continue
        if r.outcome == "success":
            healthy.add(r.job.setting_id)
        else:
            failed[r.job.setting_id] = failed.get(r.job.setting_id, 0) + 1
    if healthy:
        conn.execute(_healthy, [{"b_id": sid} for sid in healthy])
    failing = [{"b_id": sid, "b_now": now, "b_n": n} for sid, n in failed.items()
               if sid not in healthy]
    if not failing:
        return
    conn.execute(_failing, failing)
    cutoff = now - timedelta(hours=policy.hours)
    conn.execute(update(notification_setting).where(
        notification_setting.c.id.in_([f["b_id"] for f in failing]),
        notification_setting.c.disabled_at.is_(None),
        notification_setting.c.failing_since <= cutoff,
        notification_setting.c.consecutive_failures >= policy.failures,
    ).values(disabled_at=now, disabled_reason=(
        f"disabled automatically: every delivery failed for {policy.hours:g} hours "
        f"({policy.failures} or more failures in a row); fix the endpoint, then save the "
        "setting again to re-enable it")))


class _Writes:
    """The two statements that record a batch, as driver SQL for one dialect, with rows
    passed as plain tuples: SQLAlchemy's per-row parameter processing (JSON and datetime
    binds, dict building) cost about as much as the database's own work, and it runs
    under the GIL beside the event loop. Values are converted as SQLAlchemy stores them:
    JSON as text, times as UTC (naive ``YYYY-MM-DD HH:MM:SS.ffffff`` text on SQLite)."""

    ATTEMPT = ("delivery_id", "number", "started_at", "method", "url", "request_headers",
               "status_code", "response_headers", "response_body", "response_body_raw",
               "latency_ms",
               "error_class", "error_message", "outcome", "worker")
    JSON = frozenset({"request_headers", "response_headers"})

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        mark = "?" if self.sqlite else "%s"
        values = ", ".join(mark + ("::json" if c in self.JSON and not self.sqlite else "")
                           for c in self.ATTEMPT)
        self.insert_attempts = (f"INSERT INTO delivery_attempt ({', '.join(self.ATTEMPT)}) "
                                f"VALUES ({values})")
        self.finish = (f"UPDATE delivery SET status = {mark}, attempt_count = {mark}, "
                       f"failures = {mark}, next_attempt_at = {mark}, lease_owner = NULL, "
                       f"last_status_code = {mark}, last_error = {mark}, "
                       f"completed_at = {mark} WHERE id = {mark} AND lease_owner = {mark}")

    def time(self, value: datetime | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")


# the column list is ours, so a schema change that it misses fails at import, not quietly
assert set(_Writes.ATTEMPT) == {c.name for c in delivery_attempt.columns} - {"id"}
_WRITES = {name: _Writes(name) for name in ("sqlite", "postgresql")}
_STATUS = {"success": "succeeded", "retry": "pending"}


def record(engine: Engine, worker: str, results: Sequence[Result], now: datetime,
           policy: DisablePolicy | None = None) -> None:
    """Write a batch of attempts and move each delivery on, in one transaction; track each
    endpoint's health and disable one that has failed for too long."""
    if not results:
        return
    writes = _WRITES[engine.dialect.name]
    stamp, dumps = writes.time, json.dumps
    done_at = stamp(now)
    attempts: list[tuple[Any, ...]] = []
    finishes: list[tuple[Any, ...]] = []
    for r in results:
        job = r.job
        attempts.append((
            job.id, job.attempt, stamp(r.started_at), job.method, job.url,
            dumps(r.request_headers), r.status_code,
            None if r.response_headers is None else dumps(r.response_headers),
            *stored_body(r.response_body), r.latency_ms, r.error_class, r.error_message,
            r.outcome, worker))
        retry = r.outcome == "retry"
        finishes.append((
            _STATUS.get(r.outcome, "failed"), job.attempt,
            job.failures + (0 if r.outcome == "success" else 1),
            stamp(r.next_attempt_at) if r.next_attempt_at is not None else done_at,
            r.status_code, r.error_class, None if retry else done_at, job.id, worker))
    with engine.begin() as conn:
        conn.exec_driver_sql(writes.insert_attempts, attempts)
        conn.exec_driver_sql(writes.finish, finishes)
        _endpoint_health(conn, results, now, policy or DisablePolicy())
