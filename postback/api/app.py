"""The FastAPI application: routes, error handling, health."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from sqlalchemy import Engine, text

from postback import __version__
from postback.api import accounts, actions, deliveries, errors, notifications, programs
from postback.config import Settings
from postback.db.engine import reader


def create_app(settings: Settings, db: Engine, wake: Callable[[], None] | None = None) -> FastAPI:
    app = FastAPI(
        title="postback",
        version=__version__,
        description="Real-time partner postbacks (event notifications), impact.com-style. "
                    "Authenticate with `Authorization: Bearer <key>`.",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.wake = wake or (lambda: None)
    errors.install(app)
    for module in (accounts, programs, actions, notifications, deliveries):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        with reader(db).connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    return app
