"""Property-based API fuzzing against our own OpenAPI schema: whatever schemathesis sends,
with valid keys of every role, no answer is a 5xx or breaks the documented schema."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from postback.asgi import create_app
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from tests.conftest import ADMIN, Service, build_world, settings_for

_DIR = tempfile.TemporaryDirectory(prefix="postback-fuzz-")
_URL = f"sqlite:///{Path(_DIR.name) / 'fuzz.db'}"
upgrade(_URL)
APP = create_app(settings_for(_URL), make_engine(_URL))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@cache
def keys() -> tuple[str, str, str]:
    """An operator, a brand and a partner, with a program and a contract to act on."""
    world = build_world(Service(APP.state.settings, APP.state.db, TestClient(APP), None))
    return ADMIN, world.brand_key, world.partner_key


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_no_schema_violation(case: Any) -> None:
    # /readyz answers a documented 503 while no engine heartbeats (none runs here)
    checks = [response_schema_conformance] if case.path == "/readyz" else [
        not_a_server_error, response_schema_conformance]
    for key in keys():
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=checks)
