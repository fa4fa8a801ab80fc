"""The application ``postback api`` serves: the HTTP API and the web app, one ASGI app.

It sits above both (they are siblings that never import each other)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from sqlalchemy import Engine

from postback.api.app import create_api
from postback.config import Settings
from postback.services.health import Readiness
from postback.web import install as install_web


def create_app(settings: Settings, db: Engine, wake: Callable[[], None] | None = None,
               readiness: Readiness | None = None) -> FastAPI:
    """The API and the web app over ``db`` (see ``create_api`` for ``wake``)."""
    app = create_api(settings, db, wake, readiness)
    install_web(app)
    return app
