"""System health for the operator: what is due, how fast it goes out, how much fails."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from postback.core.values import format_date
from postback.db.schema import delivery, delivery_attempt


def health(conn: Connection, now: datetime) -> dict[str, Any]:
    due = (delivery.c.status == "pending") & (delivery.c.next_attempt_at <= now)
    backlog, oldest = conn.execute(
        select(func.count(), func.min(delivery.c.next_attempt_at)).where(due)).one()
    window = now - timedelta(minutes=5)
    recent = conn.execute(
        select(func.count(), func.count().filter(delivery_attempt.c.outcome != "success"))
        .where(delivery_attempt.c.started_at >= window)).one()
    hour = conn.execute(
        select(func.count(), func.count().filter(delivery_attempt.c.outcome != "success"))
        .where(delivery_attempt.c.started_at >= now - timedelta(hours=1))).one()
    workers = conn.execute(
        select(delivery_attempt.c.worker, func.max(delivery_attempt.c.started_at),
               func.count())
        .where(delivery_attempt.c.started_at >= now - timedelta(minutes=10))
        .group_by(delivery_attempt.c.worker).order_by(delivery_attempt.c.worker)).all()
    return {
        "due_backlog": backlog,
        "oldest_due_at": format_date(oldest) or None,
        "oldest_due_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        "deliveries_per_minute": round(recent[0] / 5, 1),
        "failure_rate_last_hour": round(hour[1] / hour[0], 4) if hour[0] else None,
        "attempts_last_hour": hour[0],
        "workers_seen": [{"name": w or "?", "last_attempt_at": format_date(at),
                          "attempts_last_10_minutes": n} for w, at, n in workers],
    }
