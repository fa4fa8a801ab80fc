"""Time-driven work: lock and clear actions whose contract dates have passed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from postback.services.inquiries import run_auto_approvals
from postback.services.ledger import run_lifecycle


def run_due(engine: Engine, as_of: datetime, batch: int = 1000) -> dict[str, int]:
    """Lock and clear every action due at ``as_of``, then apply inquiry auto-approval
    rules, in transactions of ``batch`` rows."""
    total = {"locked": 0, "cleared": 0, "auto_approved": 0}
    while True:
        with engine.begin() as conn:
            done = run_lifecycle(conn, as_of, datetime.now(UTC), batch)
        for key, value in done.items():
            total[key] += value
        if not any(done.values()):
            break
    with engine.begin() as conn:  # one pass: what its rules refuse stays open
        total["auto_approved"] = run_auto_approvals(conn, as_of, datetime.now(UTC))
    return total
