"""Property-based API fuzzing against our own OpenAPI schema, one run per role (operator,
brand, partner, no key) on SQLite and on PostgreSQL: whatever schemathesis sends, no answer
is a 5xx, every status is one the route documents, and every body, refusals included, is
the documented model (``postback/api/schemas/``) with its documented headers and type.

Each database holds a seeded world (a brand, a cashback partner, a program and its
contract; actions, inquiries, catalog items, settings of every scope, and deliveries that
succeeded, failed, are pending and are held, with their attempts). The hooks below put that
world's real ids, and values the service takes (money as decimal strings: the request
schema calls money an integer, which the API refuses), in about half of the generated paths,
queries and bodies, so those calls reach the service instead of stopping at a 404 or a 422.
Before each operation the brand and partner runs make fresh pending actions and open
inquiries and put back what an earlier operation deleted, so its changes can succeed; every
run gets new keys (the operator's revokes keys).

``pytest -s`` prints what each run got."""

from __future__ import annotations

import inspect
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from postback.api.deps import principal
from postback.asgi import create_app
from postback.core.inquiries import REJECT_REASONS
from postback.db.engine import make_engine
from postback.db.migrate import upgrade
from tests.conftest import (
    ADMIN,
    IN_CI,
    PG_SERVER,
    EngineThread,
    Service,
    _pg_reachable,
    build_world,
    settings_for,
)
from tests.receiver import Answer, Received, Receiver

#: generated cases per operation and role; on SQLite schemathesis' coverage cases too (each
#: field's edges and wrong types, on the operations of the run's role): they are refused
#: before the database is asked, so once is enough
EXAMPLES = {"sqlite": 25, "postgresql": 12}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance, response_headers_conformance]
ROLES = ("operator", "brand", "partner", "nobody")

_DIR = tempfile.TemporaryDirectory(prefix="postback-fuzz-")
#: the database the PostgreSQL runs make for themselves (``database`` fixture)
PG_NAME = f"postback_fuzz_{os.getpid()}_{uuid.uuid4().hex[:8]}"
URLS = {"sqlite": f"sqlite:///{Path(_DIR.name) / 'fuzz.db'}",
        "postgresql": PG_SERVER.rsplit("/", 1)[0] + "/" + PG_NAME}
#: one app per database (its engine connects when first used)
APPS = {name: create_app(settings_for(url), make_engine(url)) for name, url in URLS.items()}
SCHEMAS = {name: schemathesis.openapi.from_asgi("/openapi.json", app)
           for name, app in APPS.items()}


def _answer(request: Received) -> Answer:
    if request.path.startswith("/fail"):
        return Answer(500, body=b"down for maintenance")
    if request.path.startswith("/bin"):  # not text: an attempt keeps it as body_base64
        return Answer(200, {"Content-Type": "application/octet-stream"}, b"\x00\xffok\x80")
    return Answer()


RECEIVER = Receiver(_answer)


class Seeded:
    """One database's world, the keys of the run in progress, and the hints: a field's
    name (path, query or body) -> a strategy of real values for it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.service = Service(app.state.settings, app.state.db, TestClient(app), None)
        self.world = build_world(self.service)
        self.hints: dict[str, st.SearchStrategy[Any]] = {}
        self.keys: dict[str, str | None] = {}
        w = self.world
        self.spare_key = self.issue("brand", w.brand_id)
        engine = EngineThread(app.state.settings, app.state.db)
        try:  # deliveries that succeed (text and bytes) and fail, with their attempts
            self.settings()
            batch = w.brand("POST", "/v1/actions/batch", 201,
                            json={"actions": [self.action() for _ in range(3)]})
            self.sent = [a["id"] for a in batch["items"]]
            self.settle()
        finally:
            engine.stop()
        # a held delivery: its setting is turned off while it is pending
        catalog = {"url": f"{RECEIVER.url}/pb?i={{CatalogItemId}}"}
        w.partner("PUT", "/v1/event-notifications/product-data-change", 200, json=catalog)
        self.items()
        w.partner("PUT", "/v1/event-notifications/product-data-change", 200,
                  json={**catalog, "enabled": False})
        w.brand("PUT", f"/v1/programs/{w.program_id}/inquiry-settings", 200, json={
            "resolution_deadline_days": 30,
            "auto_approval": {"mode": "after_days", "days": 10,
                              "max_expected_payout": "50.00",
                              "event_type_id": w.event_type_id}})
        self.refresh()

    def issue(self, account_type: str, account_id: int) -> dict[str, Any]:
        key: dict[str, Any] = self.service.call(
            "POST", "/v1/api-keys", ADMIN, 201,
            json={"account_type": account_type, "account_id": account_id})
        return key

    def action(self) -> dict[str, Any]:
        return self.world.action(event_date=datetime.now(UTC).isoformat())

    def settings(self) -> None:
        """The partner's signed Action Life Cycle setting, an event-level setting and a
        brand-created postback, each made again if an operation deleted it."""
        w = self.world
        w.subscribe(f"{RECEIVER.url}/pb?oid={{ActionId}}", signed=True)
        event_level = "/v1/event-notifications/action-lifecycle/event-level"
        if not w.partner("GET", event_level, 200)["items"]:
            w.partner("POST", event_level, 201, json={
                "url": f"{RECEIVER.url}/bin", "program_id": w.program_id,
                "event_type_id": w.event_type_id})
        brand_made = f"/v1/partners/{w.partner_id}/postbacks"
        if not w.brand("GET", brand_made, 200)["items"]:
            w.brand("POST", brand_made, 201, json={
                "url": f"{RECEIVER.url}/fail", "method": "POST",
                "body": '{"id": "{ActionId}"}', "event_type_id": w.event_type_id})

    def items(self) -> None:
        self.world.brand("POST", f"/v1/programs/{self.world.program_id}/catalog/items/bulk",
                         200, json={"items": [
                             {"item_id": f"ITEM-{n}", "name": f"Shoe {n}",
                              "current_price": "59.90", "currency": "USD"} for n in (1, 2)]})

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until the engine has finished every delivery it was given."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            page = self.world.partner("GET", "/v1/deliveries?limit=1000", 200)["items"]
            if page and all(d["status"] != "pending" for d in page):
                return
            time.sleep(0.05)
        raise AssertionError("the seeded deliveries did not finish")

    def start(self, role: str) -> None:
        """Ready the world for ``role``'s run of one operation."""
        w = self.world
        # the world's own keys (the operator's run may have revoked them), and the run's
        w.brand_key = str(self.issue("brand", w.brand_id)["key"])
        w.partner_key = str(self.issue("partner", w.partner_id)["key"])
        self.keys = {"operator": ADMIN, "brand": w.brand_key, "partner": w.partner_key,
                     "nobody": None}
        if role in ("brand", "partner"):
            self.refresh()

    def refresh(self) -> None:
        """Fresh pending actions and open inquiries, and the settings and items an earlier
        operation may have deleted; then the hints name them."""
        w = self.world
        self.settings()
        self.items()
        batch = w.brand("POST", "/v1/actions/batch", 201,
                        json={"actions": [self.action() for _ in range(2)]})
        inquiries = [w.partner("POST", "/v1/inquiries", 201, json={
            "program_id": w.program_id, "inquiry_type": "UNTRACKED",
            "oid": f"INQ-{uuid.uuid4().hex[:12]}",
            "transaction_date": datetime.now(UTC).isoformat(),
            "transaction_amount": "80.00", "expected_payout": "6.00"})["id"] for _ in (1, 2)]
        deliveries = [d["id"] for d in
                      w.partner("GET", "/v1/deliveries?limit=1000", 200)["items"]]
        event_level = w.partner("GET", "/v1/event-notifications/action-lifecycle/event-level",
                                200)["items"]
        brand_made = w.brand("GET", f"/v1/partners/{w.partner_id}/postbacks", 200)["items"]
        actions = [a["id"] for a in batch["items"]] + self.sent
        now = datetime.now(UTC).isoformat()
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        self.hints = {name: st.sampled_from(values) for name, values in {
            "key_id": [self.spare_key["id"]],
            "program_id": [w.program_id],
            "partner_id": [w.partner_id],
            "event_type_id": [w.event_type_id],
            "event_type_ids": [[w.event_type_id]],
            "account_id": [w.brand_id, w.partner_id],
            "item_id": ["ITEM-1", "ITEM-2"],
            "action_id": actions,
            "sample_id": actions[:1] + inquiries[:1],
            "inquiry_id": inquiries,
            # the newest (pending) and the oldest (sent by the engine, with attempts)
            "delivery_id": deliveries[:3] + deliveries[-3:],
            "setting_id": [s["id"] for s in event_level + brand_made],
            "slug": ["action-lifecycle", "action-lifecycle", "action-inquiry",
                     "product-data-change", "action-clearing"],
            "url": [f"{RECEIVER.url}/pb", f"{RECEIVER.url}/pb?oid={{ActionId}}"],
            "body": ["", '{"id": "{ActionId}"}'],
            "headers": [{}, {"X-Token": "s3cret"}],
            "currency": ["USD", "USD", "JPY", "KWD"],
            "reason": ["ORDER_UPDATE", "REJECTED"],
            "reject_reason": list(REJECT_REASONS[:1]),
            "until": [tomorrow, None],
        }.items()}
        money = st.from_regex(r"[0-9]{1,13}(\.[0-9]{1,2})?", fullmatch=True)
        dates = st.one_of(st.just(now), st.datetimes(
            datetime(1900, 1, 2), datetime(8999, 12, 30), timezones=st.just(UTC)).map(
            datetime.isoformat))
        self.hints.update({name: money for name in (
            "amount", "payout", "transaction_amount", "expected_payout", "current_price",
            "original_price", "max_expected_payout", "monthly_cap")})
        self.hints.update({name: dates for name in (
            "event_date", "referring_date", "transaction_date", "since")})


#: the world of the database whose run is under way (the hooks read its hints)
ACTIVE: list[Seeded] = []
WORLDS: dict[str, Seeded] = {}


# -- hints: about half the generated values are replaced with the world's ---------------

def _plant(value: Any, real: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: real[k] if k in real else _plant(v, real) for k, v in value.items()}
    if isinstance(value, list):
        return [_plant(v, real) for v in value]
    return value


def _names(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_names(v) for v in value))
    return set()


def _hinted(value: Any) -> st.SearchStrategy[Any]:
    hints = ACTIVE[0].hints if ACTIVE else {}
    names = sorted(_names(value) & hints.keys())
    if not names:
        return st.just(value)
    real = st.fixed_dictionaries({name: hints[name] for name in names})
    return st.one_of(st.just(value), real.map(lambda r: _plant(value, r)))


def flatmap_path_parameters(_: Any, path_parameters: dict[str, Any]) -> Any:
    return _hinted(path_parameters)


def flatmap_query(_: Any, query: dict[str, Any]) -> Any:
    return _hinted(query)


def flatmap_body(_: Any, body: Any) -> Any:
    return _hinted(body)


for _schema in SCHEMAS.values():
    for _hook in (flatmap_path_parameters, flatmap_query, flatmap_body):
        _schema.hook(_hook)


# -- which role each operation is for ------------------------------------------------------

def _callers(route: APIRoute) -> frozenset[str]:
    """The roles whose keys a route takes (``deps.role``), every role for ``deps.principal``,
    and anyone (no key too) for a route without either."""
    for dependency in route.dependant.dependencies:
        if dependency.call is principal:
            return frozenset(ROLES) - {"nobody"}
        if dependency.call is not None and inspect.isfunction(dependency.call):
            allowed = inspect.getclosurevars(dependency.call).nonlocals.get("allowed")
            if allowed:
                return frozenset(allowed)
    return frozenset(ROLES)


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        else:  # an included router (FastAPI keeps them whole), or a mount
            inner = getattr(route, "original_router", route)
            yield from _routes(getattr(inner, "routes", []))


CALLERS = {(method, route.path_format): _callers(route)
           for route in _routes(APPS["sqlite"].routes) for method in route.methods}


# -- the runs -------------------------------------------------------------------------------

#: (database, role) -> operation -> status -> count; and the time each run took
SEEN: dict[tuple[str, str], dict[str, Counter[int]]] = {}
TIMES: Counter[tuple[str, str]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """What each run got, printed at the end."""
    yield
    for (db, role), operations in SEEN.items():
        total = sum(operations.values(), Counter[int]())
        print(f"\n{db}, {role}: {sum(total.values())} calls to {len(operations)} operations "
              f"in {TIMES[db, role]:.1f} s: "
              + ", ".join(f"{status}: {n}" for status, n in sorted(total.items())))
        own = [op for op in operations if role in CALLERS.get(tuple(op.split(" ", 1)), ())]
        print(f"  its own operations ({len(own)}) that never answered 2xx: "
              f"{sorted(op for op in own if not any(200 <= s < 300 for s in operations[op]))}")


@pytest.fixture(scope="module")
def postgresql() -> Iterator[None]:
    """The PostgreSQL database of these runs, dropped after them (they skip without a
    server, except on CI)."""
    if not _pg_reachable():
        if IN_CI:
            pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER} (CI never skips it)")
        pytest.skip(f"PostgreSQL is not reachable at {PG_SERVER}")
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{PG_NAME}"')
    try:
        yield
    finally:
        APPS["postgresql"].state.db.dispose()
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)')


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Iterator[Seeded]:
    """The world of the test's database (seeded at its first test), made ready for the
    test's role and operation before any case is generated."""
    started = time.monotonic()
    db, _, role = request.node.originalname.removeprefix("test_").partition("_as_")
    if db not in WORLDS:
        if db == "postgresql":
            request.getfixturevalue("postgresql")
        upgrade(URLS[db])
        WORLDS[db] = Seeded(APPS[db])
    WORLDS[db].start(role)
    ACTIVE[:] = [WORLDS[db]]
    yield WORLDS[db]
    TIMES[db, role] += time.monotonic() - started


def _run(case: Any, world: Seeded, db: str, role: str) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    if case.meta.phase.name == "coverage" and role not in CALLERS.get(operation, ROLES):
        return  # its edge cases would all be the same 401 or 403: generated cases suffice
    key = world.keys[role]
    # /readyz answers its documented 503 while no engine and no scheduler heartbeat
    checks = [c for c in CHECKS if c is not not_a_server_error or case.path != "/readyz"]
    response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"} if key
                                      else {}, checks=checks)
    SEEN.setdefault((db, role), {}).setdefault(" ".join(operation), Counter())[
        response.status_code] += 1


def _run_test(db: str, role: str) -> Callable[..., None]:
    """The run of ``role`` on ``db``: a test per operation."""

    def test(case: Any, world: Seeded) -> None:
        _run(case, world, db, role)

    test.__name__ = test.__qualname__ = f"test_{db}_as_{role}"
    phases = (list(Phase) if db == "sqlite"  # the generated cases only, on PostgreSQL:
              else [Phase.reuse, Phase.generate, Phase.target, Phase.shrink])
    hypothesis = settings(max_examples=EXAMPLES[db], deadline=None, phases=phases,
                          suppress_health_check=list(HealthCheck))
    wrapped: Callable[..., None] = SCHEMAS[db].parametrize()(hypothesis(test))
    return wrapped


test_sqlite_as_operator = _run_test("sqlite", "operator")
test_sqlite_as_brand = _run_test("sqlite", "brand")
test_sqlite_as_partner = _run_test("sqlite", "partner")
test_sqlite_as_nobody = _run_test("sqlite", "nobody")
test_postgresql_as_operator = _run_test("postgresql", "operator")
test_postgresql_as_brand = _run_test("postgresql", "brand")
test_postgresql_as_partner = _run_test("postgresql", "partner")
test_postgresql_as_nobody = _run_test("postgresql", "nobody")


# -- what the runs rely on the document for ---------------------------------------------------

def test_every_answer_is_a_documented_model() -> None:
    """Each status an operation documents has its model (204 has no body), none is
    FastAPI's default 422 (our refusals are ``ErrorOut``), and each model names every field
    (no extra field passes the conformance check unseen)."""
    spec = APPS["sqlite"].openapi()
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for status, answer in op["responses"].items():
                if status == "204":
                    assert "content" not in answer, (method, path)
                    continue
                if "application/json" not in answer["content"]:  # a file: its bytes
                    assert status == "200" and path.endswith(("/file", "/feed-files/{token}")), (
                        method, path, status)
                    continue
                ref = answer["content"]["application/json"]["schema"].get("$ref", "")
                assert ref.startswith("#/components/schemas/"), (method, path, status)
                assert not ref.endswith("HTTPValidationError"), (method, path, status)
    for name, model in spec["components"]["schemas"].items():
        if name.endswith("Out") or name.endswith(("List", "Page")):
            assert model.get("additionalProperties") is False, name


def test_secrets_are_documented_only_in_the_answers_that_show_them() -> None:
    """An API key and a signing secret appear once, in the answer that makes them (and a
    test's own test secret in a test's answer); with no other model carrying them, the
    conformance check keeps them out of every other answer."""
    spec = APPS["sqlite"].openapi()
    carrying = {(name, field) for name, model in spec["components"]["schemas"].items()
                if name.endswith("Out") for field in model.get("properties", {})
                if field == "key" or field.endswith("secret")}
    assert carrying == {("IssuedKeyOut", "key"), ("SavedSettingOut", "signing_secret"),
                        ("RotatedOut", "signing_secret"),
                        ("TestResultOut", "test_signing_secret")}
