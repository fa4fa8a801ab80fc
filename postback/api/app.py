"""The HTTP API: routes, error handling, liveness (``/healthz``) and readiness
(``/readyz``). ``postback.asgi`` puts it together with the web app.

Every route handler that touches the database, DNS or the network is a plain ``def``, which
FastAPI runs on its thread pool, so no request ever holds up the event loop (and with it
every other request); the test tool sends on its own bounded lane (``services/lane.py``).
The one exception is ``POST /v1/actions``: an ``async def`` that hands its action to the
group commit (``services/group_commit.py``) and awaits the answer, so concurrent sales
reported one by one are written in one transaction by one thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Connection, Engine

from postback import __version__
from postback.api import (
    accounts,
    actions,
    brand_postbacks,
    catalog,
    deliveries,
    errors,
    feeds,
    inquiries,
    notifications,
    programs,
    updates,
)
from postback.api.limits import BodyLimit
from postback.api.schemas.health import HealthOut, IpRangesOut, ReadinessOut
from postback.config import Settings
from postback.models import ActionIn
from postback.services import ledger
from postback.services.group_commit import GroupCommit
from postback.services.health import Readiness
from postback.services.key_cache import KeyCache
from postback.services.lane import TestLane


def create_api(settings: Settings, db: Engine, wake: Callable[[], None] | None = None,
               readiness: Readiness | None = None) -> FastAPI:
    """The API over ``db``. ``wake`` is called after every commit that creates due
    deliveries (thread-safe; ``db.wakeup.waker`` across processes)."""
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        title="postback",
        version=__version__,
        description="Real-time partner postbacks (event notifications), impact.com-style. "
                    "Authenticate with `Authorization: Bearer <key>`.",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.wake = wake or (lambda: None)
    app.state.test_lane = TestLane()
    app.state.keys = KeyCache()

    def report_each(conn: Connection,
                    reports: Sequence[tuple[int, ActionIn]]) -> list[ledger.Outcome]:
        return ledger.report_each(conn, reports, datetime.now(UTC))

    app.state.action_commits = GroupCommit(db, report_each,
                                           after_commit=lambda: app.state.wake())
    ready = readiness or Readiness(db, settings.heartbeat_seconds)
    app.state.readiness = ready
    errors.install(app)
    app.add_middleware(BodyLimit)
    for module in (accounts, programs, catalog, actions, inquiries, notifications,
                   brand_postbacks, deliveries, updates, feeds):
        app.include_router(module.router)

    # /docs from assets shipped in a package: it works offline, with no CDN. Swagger UI 5
    # (fastapi-offline's copy), since 4.x cannot read the OpenAPI 3.1 FastAPI writes.
    assets = files("fastapi_offline") / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="postback API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")

    @app.get("/v1/ip-ranges", tags=["health"], response_model=IpRangesOut)
    def ip_ranges() -> dict[str, list[str]]:
        """The address ranges postbacks come from, for partners' allow-lists (no key
        needed), like GitHub's ``/meta`` hooks field."""
        return {"postbacks": list(settings.egress_ranges)}

    @app.get("/healthz", tags=["health"], response_model=HealthOut)
    async def healthz() -> dict[str, str]:
        """Liveness: the API process answers (nothing else is asked, not even the database;
        see ``/readyz``)."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"], response_model=ReadinessOut,
             responses={503: {"model": ReadinessOut, "description": "not ready"}})
    def readyz() -> JSONResponse:
        """Readiness: 200 when the database answers, its schema is current, and a delivery
        engine and the scheduler are alive (a heartbeat within the last few); 503
        otherwise. Each component says why in plain words."""
        components = ready.check()
        ok = all(c.ok for c in components.values())
        return JSONResponse(status_code=200 if ok else 503, content={
            "status": "ready" if ok else "not_ready",
            "components": {name: {"ok": c.ok, "detail": c.detail}
                           for name, c in components.items()}})

    return app
