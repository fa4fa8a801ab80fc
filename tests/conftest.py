"""Fixtures: real SQLite and real PostgreSQL databases, a running delivery engine, an API
client, loopback receivers, and a small world of accounts to act in."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine as DbEngine
from sqlalchemy import text

from postback.asgi import create_app
from postback.config import Settings
from postback.core.addresses import AddressPolicy
from postback.core.retry import RetryPolicy
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from postback.db.schema import metadata
from postback.delivery.curl import CurlSender
from postback.delivery.engine import Engine
from postback.delivery.http import AiohttpSender, Sender
from postback.sealing import new_key
from tests.receiver import Receiver

ADMIN = "test-admin-token"
#: receivers in tests listen on loopback, which production refuses; tests open it
LOOPBACK = AddressPolicy.parse("127.0.0.0/8,::1/128")
TEST_KEY = new_key()
LOOPBACK_ENV = {"POSTBACK_ALLOW_TARGETS": "127.0.0.0/8,::1/128", "POSTBACK_SECRET_KEY": TEST_KEY}
PG_SERVER = os.environ.get("POSTBACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: the default action's event date: yesterday, so its 30-day lock is always ahead (a fixed
#: date made every test that modifies such an action fail once the date had locked)
RECENT = (datetime.now(UTC) - timedelta(days=1)).replace(hour=18, minute=4, second=5,
                                                         microsecond=0).isoformat()


#: the longest tests, started first, so that no test process is left running one of them
#: alone at the end of the parallel run (make test)
LONGEST = ("test_faults.py::test_a_retry_queue_past_100000_drains", "test_migration_crash.py::",
           "test_supervisor.py::test_sigterm_stops_within_20_s")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not any(part in item.nodeid for part in LONGEST))


def _pg_reachable() -> bool:
    try:
        with psycopg.connect(PG_SERVER, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    if not _pg_reachable():
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (CI never skips it)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_SERVER}")
    with fresh_pg_database() as url:
        upgrade(url)
        yield url


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """An empty PostgreSQL database of its own (not migrated), dropped afterwards."""
    name = f"postback_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a copy of a template file, or a truncated PG database."""
    if request.param == "sqlite":
        path = tmp_path / "postback.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    engine = make_engine(url, pool_size=1)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


def settings_for(db_url: str, **overrides: Any) -> Settings:
    base = {
        "database_url": db_url,
        "admin_token": ADMIN,
        "retry": RetryPolicy(schedule=(0.05, 0.05, 0.05), jitter=0.0, throttle_floor=0.0),
        "connect_timeout": 1.0,
        "total_timeout": 1.0,
        "poll_interval": 0.05,
        "lease_seconds": 30.0,
        "allow_targets": LOOPBACK,
        "secret_key": TEST_KEY,
    }
    base.update(overrides)
    return Settings(**base)


class EngineThread:
    """The real delivery engine, running its own event loop in a background thread."""

    def __init__(self, settings: Settings, db: DbEngine) -> None:
        self.engine = Engine(settings, db, name="test-engine")
        self.thread = threading.Thread(target=asyncio.run, args=(self.engine.run(),),
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.engine.stop()
        self.thread.join(timeout=10)


@dataclass
class Service:
    settings: Settings
    db: DbEngine
    client: TestClient
    engine: EngineThread | None

    def call(self, method: str, path: str, key: str, expect: int | None = None,
             **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers={"Authorization": f"Bearer {key}"},
                                       **kwargs)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response.json() if response.content else None


@pytest.fixture(params=[CurlSender, AiohttpSender], ids=["curl", "aiohttp"])
def driver(request: pytest.FixtureRequest) -> type[Sender]:
    """Each HTTP driver, for tests of what every driver must do alike."""
    cls: type[Sender] = request.param
    return cls


@pytest.fixture
def make_service(db_url: str) -> Iterator[Any]:
    made: list[Service] = []

    def make(start_engine: bool = True, **overrides: Any) -> Service:
        settings = settings_for(db_url, **overrides)
        db = make_engine(db_url)
        engine = EngineThread(settings, db) if start_engine else None
        app = create_app(settings, db, wake=engine.engine.wake if engine else None)
        service = Service(settings, db, TestClient(app), engine)
        made.append(service)
        return service

    yield make
    for service in made:
        if service.engine:
            service.engine.stop()
        service.client.close()
        service.db.dispose()


@pytest.fixture
def service(make_service: Any) -> Service:
    result: Service = make_service()
    return result


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@dataclass
class World:
    """One brand with one program and event type, and a partner contracted on it."""

    service: Service
    brand_id: int
    brand_key: str
    partner_id: int
    partner_key: str
    program_id: int
    event_type_id: int

    def brand(self, method: str, path: str, expect: int | None = None, **kw: Any) -> Any:
        return self.service.call(method, path, self.brand_key, expect, **kw)

    def partner(self, method: str, path: str, expect: int | None = None, **kw: Any) -> Any:
        return self.service.call(method, path, self.partner_key, expect, **kw)

    def action(self, **fields: Any) -> dict[str, Any]:
        body = {
            "program_id": self.program_id, "event_type_id": self.event_type_id,
            "partner_id": self.partner_id, "oid": f"ORD-{uuid.uuid4().hex[:10]}",
            "amount": "100.00", "payout": "7.50", "event_date": RECENT,
        }
        body.update(fields)
        return body

    def report(self, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.brand("POST", "/v1/actions", 201, json=self.action(**fields))
        return result

    def subscribe(self, url: str, method: str = "GET", body_format: str = "json",
                  body: str = "", **extra: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.partner(
            "PUT", "/v1/event-notifications/action-lifecycle", 200,
            json={"url": url, "method": method, "body_format": body_format, "body": body,
                  **extra})
        return result


def build_world(service: Service, partner_type: str = "cashback",
                locking: dict[str, Any] | None = None) -> World:
    call = service.call
    brand = call("POST", "/v1/brands", ADMIN, 201, json={"name": "Acme Shoes"})
    partner = call("POST", "/v1/partners", ADMIN, 201,
                   json={"name": "Cashback World", "partner_type": partner_type})
    brand_key = call("POST", "/v1/api-keys", ADMIN, 201,
                     json={"account_type": "brand", "account_id": brand["id"]})["key"]
    partner_key = call("POST", "/v1/api-keys", ADMIN, 201,
                       json={"account_type": "partner", "account_id": partner["id"]})["key"]
    program = call("POST", "/v1/programs", brand_key, 201,
                   json={"name": "Acme Shoes US", "currency": "USD"})
    etype = call("POST", f"/v1/programs/{program['id']}/event-types", brand_key, 201,
                 json={"name": "Online Sale", "action_type": "SALE"})
    call("PUT", f"/v1/programs/{program['id']}/contracts/{partner['id']}", brand_key, 200,
         json={"event_type_ids": [etype["id"]],
               "locking": locking or {"rule": "days_after_event", "days": 30},
               "clearing": {"rule": "days_after_locking", "days": 20}})
    return World(service, brand["id"], brand_key, partner["id"], partner_key, program["id"],
                 etype["id"])


@pytest.fixture
def world(service: Service) -> World:
    return build_world(service)
