"""Time-driven work: lock and clear actions whose contract dates have passed."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from postback.services.ledger import run_lifecycle


def run_due(engine: Engine, as_of: datetime, batch: int = 1000) -> dict[str, int]:
    """Lock and clear everything due at ``as_of``, in transactions of ``batch`` actions."""
    total = {"locked": 0, "cleared": 0}
    while True:
        with engine.begin() as conn:
            done = run_lifecycle(conn, as_of, datetime.now(UTC), batch)
        for key, value in done.items():
            total[key] += value
        if not any(done.values()):
            return total
