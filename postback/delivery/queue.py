"""The database side of the engine: claim due deliveries under a lease, record results.

A claim moves ``next_attempt_at`` to the end of the lease and stamps the worker's id; a
worker that dies simply lets the lease run out and the delivery becomes due again, which
is what makes delivery at-least-once without any other bookkeeping. On PostgreSQL the
claim uses ``FOR UPDATE SKIP LOCKED`` so any number of workers share the table; on SQLite
the claim is one write transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, insert, or_, select, update

from postback.db.schema import delivery, delivery_attempt, notification_setting


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


@dataclass(frozen=True)
class Result:
    """One attempt's outcome, ready to be written."""

    job: Job
    started_at: datetime
    request_headers: dict[str, str]
    status_code: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    latency_ms: float
    error_class: str | None
    error_message: str | None
    outcome: str  # success | retry | permanent_failure
    next_attempt_at: datetime | None  # for a retry


def claim(engine: Engine, worker: str, limit: int, now: datetime, lease_seconds: float,
          exclude: Iterable[int] = ()) -> list[Job]:
    """Lease up to ``limit`` due deliveries to ``worker``, oldest due first."""
    due = (select(delivery.c.id)
           .where(delivery.c.status == "pending", delivery.c.next_attempt_at <= now)
           .order_by(delivery.c.next_attempt_at).limit(limit)
           .with_for_update(skip_locked=True))
    excluded = list(exclude)
    if excluded:
        due = due.where(or_(delivery.c.setting_id.is_(None),
                            delivery.c.setting_id.not_in(excluded)))
    stmt = (update(delivery)
            .where(delivery.c.id.in_(due.scalar_subquery()))
            .values(lease_owner=worker, next_attempt_at=now + timedelta(seconds=lease_seconds))
            .returning(delivery.c.id, delivery.c.event_id, delivery.c.setting_id,
                       delivery.c.method, delivery.c.url, delivery.c.headers, delivery.c.body,
                       delivery.c.attempt_count, delivery.c.failures))
    with engine.begin() as conn:
        rows = conn.execute(stmt).all()
        setting_ids = {r.setting_id for r in rows if r.setting_id is not None}
        settings: dict[int, Any] = {}
        if setting_ids:
            settings = {s.id: s for s in conn.execute(
                select(notification_setting.c.id, notification_setting.c.headers,
                       notification_setting.c.success_response,
                       notification_setting.c.error_response)
                .where(notification_setting.c.id.in_(setting_ids)))}
    jobs = []
    for r in rows:
        setting = settings.get(r.setting_id) if r.setting_id is not None else None
        extra = setting.headers if setting is not None else {}
        jobs.append(Job(
            id=r.id, event_id=r.event_id, setting_id=r.setting_id, method=r.method, url=r.url,
            headers={**r.headers, **extra}, secret_headers=frozenset(extra),
            success_response=setting.success_response if setting is not None else None,
            error_response=setting.error_response if setting is not None else None,
            body=r.body.encode("utf-8") if r.body is not None else None,
            attempt=r.attempt_count + 1, failures=r.failures,
        ))
    jobs.sort(key=lambda j: j.id)
    return jobs


def release(engine: Engine, worker: str, ids: Sequence[int], now: datetime) -> None:
    """Hand claimed but unsent deliveries back, due at once (no attempt is charged)."""
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(update(delivery).where(delivery.c.id.in_(ids),
                                            delivery.c.lease_owner == worker)
                     .values(lease_owner=None, next_attempt_at=now))


_finish = (
    update(delivery)
    .where(delivery.c.id == bindparam("b_id"), delivery.c.lease_owner == bindparam("b_worker"))
    .values(status=bindparam("b_status"), attempt_count=bindparam("b_attempt"),
            failures=bindparam("b_failures"), next_attempt_at=bindparam("b_next"),
            lease_owner=None, last_status_code=bindparam("b_code"),
            last_error=bindparam("b_error"), completed_at=bindparam("b_completed"))
)


def record(engine: Engine, worker: str, results: Sequence[Result], now: datetime) -> None:
    """Write a batch of attempts and move each delivery on, in one transaction."""
    if not results:
        return
    attempts: list[dict[str, Any]] = []
    finishes: list[dict[str, Any]] = []
    for r in results:
        attempts.append({
            "delivery_id": r.job.id, "number": r.job.attempt, "started_at": r.started_at,
            "method": r.job.method, "url": r.job.url, "request_headers": r.request_headers,
            "status_code": r.status_code, "response_headers": r.response_headers,
            "response_body": r.response_body, "latency_ms": r.latency_ms,
            "error_class": r.error_class, "error_message": r.error_message,
            "outcome": r.outcome, "worker": worker,
        })
        done = r.outcome != "retry"
        finishes.append({
            "b_id": r.job.id, "b_worker": worker,
            "b_status": {"success": "succeeded", "retry": "pending"}.get(r.outcome, "failed"),
            "b_attempt": r.job.attempt,
            "b_failures": r.job.failures + (0 if r.outcome == "success" else 1),
            "b_next": r.next_attempt_at if r.next_attempt_at is not None else now,
            "b_code": r.status_code, "b_error": r.error_class,
            "b_completed": now if done else None,
        })
    with engine.begin() as conn:
        conn.execute(insert(delivery_attempt), attempts)
        conn.execute(_finish, finishes)
