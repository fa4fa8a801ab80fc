"""No tenant learns of another (#12 item 5).

Two full worlds, A and B (brand, program, event types, cashback partner, contract, settings
of every scope, inquiry settings, an action, an inquiry, a delivery, a catalog item). Every
route of ``/openapi.json`` (all methods; path parameters, id query parameters and body fields
filled from the schema) and every web route that takes an id is called as B, once with A's
real ids and once with made-up ids, and the two answers must be the same: same status, same
body (the made-up id read as A's). An id B may not see is exactly an id that does not exist.

Each id slot is tried three ways: all of a route's ids A's, and each one alone A's with the
others B's own (so a check that runs after a visible id's check is reached too).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, Service
from tests.test_web import csrf, sign_in

FAKE = 987_654_000  # made-up ids are FAKE + n: far above anything a test creates
URL = "http://127.0.0.1:9/pb?a={ActionId}"  # an IP literal: saving it looks nothing up
DATE = "2026-11-02T18:04:05+00:00"
#: a URL only a later check refuses (not the schema): a refusal of the body must not come
#: before an id's check, or differ with it
UNKNOWN_TOKEN_URL = "http://127.0.0.1:9/pb?a={NoSuchToken}"

#: which kind of id a parameter or body field names
KINDS = {
    "program_id": "program", "partner_id": "partner", "event_type_id": "event_type",
    "event_type_ids": "event_type", "action_id": "action", "inquiry_id": "inquiry",
    "delivery_id": "delivery", "setting_id": "setting", "key_id": "key",
    "sample_id": "sample", "account_id": "account", "item_id": "item", "oid": "oid",
    "replay_id": "replay", "feed_id": "feed", "run_id": "run",
}
#: ids that only mean something under another id of the same request (a catalog item under
#: its program): tried as A's only together with A's other ids, B's own otherwise
SCOPED = {"item", "run"}
#: parameters that are not ids: a fixed value
FIXED = {"slug": "action-lifecycle", "change": "approve", "code": "en",
         "token": "1.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}  # a feed file's link
#: parameters that are positions, not references (a page cursor): left out
POSITIONS = {"cursor"}
#: field values that a schema alone cannot tell (money is a decimal string, dates need an
#: offset, an enum's first value is not always the useful one)
VALUES: dict[str, Any] = {
    "name": "Thing", "currency": "USD", "action_type": "SALE", "url": URL,
    "amount": "1.00", "payout": "1.00", "transaction_amount": "10.00",
    "expected_payout": "1.00", "event_date": DATE, "transaction_date": DATE, "since": DATE,
    "reason": "ORDER_UPDATE", "resolution_status": "VALID", "inquiry_type": "UNTRACKED",
    "partner_type": "cashback", "account_type": "brand", "sku": "SKU-1",
    "oid": "OID-WALK",  # a brand's own order id in a body; a filter in a query
    "columns": ["ActionId"],  # a feed's: token names
}
#: the one place a brand names a partner it does not see yet: contracting it is how a
#: brand comes to see a partner, so there the answer must differ (a made-up one is a 404)
CONTRACTING = {("PUT", "/v1/programs/{program_id}/contracts/{partner_id}", "path.partner_id"),
               ("POST", "/brand/programs/{program_id}/contracts", "form.partner_id")}


@dataclass
class Tenant:
    tag: str
    brand_key: str
    partner_key: str
    partner_name: str
    ids: dict[str, list[Any]] = field(default_factory=dict)

    def own(self, kind: str) -> Any:
        return self.ids[kind][0]


def build_tenant(service: Service, tag: str) -> Tenant:
    """A world with one of everything a route can name."""
    def call(method: str, path: str, key: str, expect: int, **kw: Any) -> Any:
        return service.call(method, path, key, expect, **kw)

    brand = call("POST", "/v1/brands", ADMIN, 201, json={"name": f"Brand {tag}"})
    partner_name = f"Partner-{tag}-{FAKE}"
    partner = call("POST", "/v1/partners", ADMIN, 201,
                   json={"name": partner_name, "partner_type": "cashback"})
    keys = [call("POST", "/v1/api-keys", ADMIN, 201,
                 json={"account_type": kind, "account_id": account["id"]})
            for kind, account in (("brand", brand), ("partner", partner))]
    t = Tenant(tag, keys[0]["key"], keys[1]["key"], partner_name)
    program = call("POST", "/v1/programs", t.brand_key, 201,
                   json={"name": f"Program {tag}", "currency": "USD"})
    pid = program["id"]
    sale, lead = (call("POST", f"/v1/programs/{pid}/event-types", t.brand_key, 201,
                       json={"name": name, "action_type": name.upper()})["id"]
                  for name in ("Sale", "Lead"))
    call("PUT", f"/v1/programs/{pid}/contracts/{partner['id']}", t.brand_key, 200,
         json={"event_type_ids": [sale], "locking": {"rule": "days_after_event", "days": 30},
               "clearing": {"rule": "days_after_locking", "days": 20}})
    call("PUT", f"/v1/programs/{pid}/inquiry-settings", t.brand_key, 200,
         json={"auto_approval": {"mode": "off", "event_type_id": sale}})
    call("PUT", "/v1/event-notifications/action-lifecycle", t.partner_key, 200,
         json={"url": URL})
    level = call("POST", "/v1/event-notifications/action-lifecycle/event-level",
                 t.partner_key, 201, json={"program_id": pid, "event_type_id": sale, "url": URL})
    made = call("POST", f"/v1/partners/{partner['id']}/postbacks", t.brand_key, 201,
                json={"event_type_id": sale, "url": URL})
    action = call("POST", "/v1/actions", t.brand_key, 201, json={
        "program_id": pid, "event_type_id": sale, "partner_id": partner["id"],
        "oid": f"OID-{tag}", "amount": "100.00", "payout": "7.50", "event_date": DATE})
    inquiry = call("POST", "/v1/inquiries", t.partner_key, 201, json={
        "program_id": pid, "inquiry_type": "UNTRACKED", "oid": f"INQ-{tag}",
        "transaction_date": DATE, "transaction_amount": "10.00", "expected_payout": "1.00"})
    call("PUT", f"/v1/programs/{pid}/catalog/items/ITEM-{tag}", t.brand_key, 200,
         json={"name": "Shoe"})
    settings = call("GET", "/v1/event-notifications", t.partner_key, 200)["items"]
    global_id = next(s["setting"]["id"] for s in settings if s["setting"])
    deliveries = call("GET", "/v1/deliveries", t.partner_key, 200)["items"]
    assert deliveries, "the world needs a delivery"
    replayed = call("POST", "/v1/deliveries/replay", t.partner_key, 200,
                    json={"since": "2000-01-01T00:00:00Z"})
    feed = call("POST", "/v1/feeds", t.partner_key, 201, json={
        "content": "actions", "schedule": {"every": "daily", "at": "06:00"},
        "format": "csv", "columns": ["ActionId"], "destination": {"kind": "hosted"}})
    run = call("POST", f"/v1/feeds/{feed['id']}/run", t.partner_key, 202)
    key_ids = [k["id"] for k in keys]
    t.ids = {
        "program": [pid], "event_type": [sale, lead], "partner": [partner["id"]],
        "action": [action["id"]], "inquiry": [inquiry["id"]],
        "delivery": [d["id"] for d in deliveries],
        "setting": [made["id"], level["id"], global_id], "key": key_ids,
        "sample": [action["id"], inquiry["id"]], "account": [brand["id"], partner["id"]],
        "item": [f"ITEM-{tag}"], "oid": [f"OID-{tag}"], "replay": [replayed["id"]],
        "feed": [feed["id"]], "run": [run["run_id"]],
    }
    return t


@pytest.fixture
def tenants(make_service: Any) -> tuple[Service, Tenant, Tenant]:
    service: Service = make_service(start_engine=False)  # deliveries stay pending: no sends
    return service, build_tenant(service, "A"), build_tenant(service, "B")


# -- requests with id slots -------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """Where a request names an id: ``path.program_id``, ``body.actions[0].partner_id``."""

    where: str
    kind: str
    many: bool = False  # a list of ids (event_type_ids)


def _fake(slot_index: int, kind: str) -> Any:
    n = FAKE + slot_index + 1
    return f"MADE-UP-{n}" if kind in ("item", "oid") else n


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for union in ("anyOf", "oneOf"):  # the first choice that is not null (a feed's
        if union in schema:          # destination: hosted)
            return _resolve(spec, next(s for s in schema[union] if s.get("type") != "null"))
    return schema


def _template(spec: dict[str, Any], schema: dict[str, Any], where: str,
              slots: list[Slot], name: str = "") -> tuple[Any, bool]:
    """A body for ``schema``: required fields filled, every id field (required or not) a
    slot. Returns the value and whether it holds a slot."""
    if name in KINDS and name not in VALUES:
        item = _resolve(spec, schema)
        slot = Slot(where, KINDS[name], item.get("type") == "array")
        slots.append(slot)
        return slot, True
    schema = _resolve(spec, schema)
    if name in VALUES:
        return VALUES[name], False
    if "enum" in schema:
        return schema["enum"][0], False
    if "const" in schema:
        return schema["const"], False
    kind = schema.get("type")
    if kind == "object":
        out, any_slot = {}, False
        for prop, sub in schema.get("properties", {}).items():
            value, has = _template(spec, sub, f"{where}.{prop}", slots, prop)
            if has or prop in schema.get("required", ()):
                out[prop] = value
                any_slot |= has
        return out, any_slot
    if kind == "array":
        value, has = _template(spec, schema["items"], f"{where}[0]", slots)
        return [value], has
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1))), False
    if kind == "boolean":
        return False, False
    if kind == "number":
        return 1.0, False
    return "x", False


def _fill(value: Any, assignment: dict[Slot, Any]) -> Any:
    if isinstance(value, Slot):
        chosen = assignment[value]
        return [chosen] if value.many else chosen
    if isinstance(value, dict):
        return {k: _fill(v, assignment) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, assignment) for v in value]
    if isinstance(value, tuple):  # a web form value made of pieces ("program:event type")
        return "".join(str(_fill(v, assignment)) for v in value)
    return value


def variants(slots: list[Slot], a: Tenant, b: Tenant, route: tuple[str, str]
             ) -> Iterator[tuple[str, dict[Slot, Any], dict[Slot, Any], dict[Any, Any]]]:
    """(label, A's ids, made-up ids, made-up → A's) for each way of trying the slots."""
    fakes = {s: _fake(i, s.kind) for i, s in enumerate(slots)}
    own = {s: b.own(s.kind) for s in slots}
    yield ("all A's", {s: a.own(s.kind) for s in slots}, dict(fakes),
           {fakes[s]: a.own(s.kind) for s in slots})
    alone = slots if len(slots) < 2 else [s for s in slots if s.kind not in SCOPED]
    for s in alone:
        if (*route, s.where) in CONTRACTING:
            continue
        for real in a.ids[s.kind] if len(slots) > 1 or len(a.ids[s.kind]) > 1 else []:
            yield (f"{s.where} A's", {**own, s: real}, {**own, s: fakes[s]},
                   {fakes[s]: real})


def _main(text: str) -> str:
    """What a page says (its <main>), or the whole answer."""
    found = re.search(r"<main.*?</main>", text, re.S)
    return re.sub(r"\s+", " ", found.group(0)) if found else text


def _unclocked(text: str) -> str:
    """An answer without the deliveries chart, whose hours move with the clock."""
    return re.sub(r"<svg.*?</svg>", "<svg/>", text, flags=re.S)


def differs(real: Any, fake: Any, swap: dict[Any, Any], context: str) -> str | None:
    """None when the answer to A's ids and the one to made-up ids are the same (the
    made-up id read as A's) and a 404 names no id; else what differs."""
    real_text, fake_text = (_unclocked(r.text) for r in (real, fake))
    if fake.status_code == 404 and fake.headers.get("content-type", "").startswith(
            "application/json"):
        for made_up in swap:
            if str(made_up) in fake_text:
                return f"{context}: a 404 names the id: {fake_text}"
    for made_up, a_id in swap.items():
        fake_text = re.sub(rf"(?<![0-9A-Za-z-]){re.escape(str(made_up))}(?![0-9])",
                           str(a_id), fake_text)
    if (real.status_code, real_text) == (fake.status_code, fake_text):
        return None
    return (f"{context}: another tenant's id is told apart from a made-up one:\n"
            f"  A's ids:  {real.status_code} {_main(real_text)[:700]}\n"
            f"  made up:  {fake.status_code} {_main(fake_text)[:700]}")


# -- the API ----------------------------------------------------------------------------------


def api_routes(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            yield method.upper(), path, op


def api_request(spec: dict[str, Any], path: str, op: dict[str, Any]
                ) -> tuple[list[Slot], Any]:
    """The slots of one operation and a function of an assignment giving the request."""
    slots: list[Slot] = []
    path_values: dict[str, Any] = {}
    query: dict[str, Any] = {}
    for param in op.get("parameters", []):
        name, where = param["name"], param["in"]
        if name in POSITIONS:
            continue
        if name in FIXED:
            path_values[name] = FIXED[name]
        elif name in KINDS:
            slot = Slot(f"{where}.{name}", KINDS[name])
            slots.append(slot)
            (path_values if where == "path" else query)[name] = slot
        else:
            assert where != "path" and not param.get("required"), (
                f"{path}: say what kind of id the parameter {name} is (KINDS or FIXED)")
    body = None
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get(
        "schema")
    if schema is not None:
        body, _ = _template(spec, schema, "body", slots)

    def build(assignment: dict[Slot, Any]) -> tuple[str, dict[str, Any], Any]:
        url = path.format(**{k: _fill(v, assignment) for k, v in path_values.items()})
        return url, {k: _fill(v, assignment) for k, v in query.items()}, _fill(body, assignment)

    return slots, build


def api_send(service: Service, method: str, build: Any, key: str, bad_url: bool,
             assignment: dict[Slot, Any]) -> Any:
    url, params, body = build(assignment)
    if bad_url:
        body = {**body, "url": UNKNOWN_TOKEN_URL}
    return service.client.request(method, url, params=params,
                                  headers={"Authorization": f"Bearer {key}"},
                                  **({"json": body} if body is not None else {}))


def test_every_api_route_answers_another_tenants_ids_as_made_up_ones(
        tenants: tuple[Service, Tenant, Tenant]) -> None:
    service, a, b = tenants
    spec = service.client.get("/openapi.json").json()
    walked: set[tuple[str, str]] = set()
    compared = 0
    oracles: list[str] = []
    for method, path, op in api_routes(spec):
        slots, build = api_request(spec, path, op)
        if not slots:
            continue
        walked.add((method, path))
        _, _, sample = build({s: b.own(s.kind) for s in slots})
        with_url = (False, True) if isinstance(sample, dict) and "url" in sample else (False,)
        for key, bad_url in itertools.product((b.brand_key, b.partner_key), with_url):
            send = partial(api_send, service, method, build, key, bad_url)
            probe = send({s: _fake(i, s.kind) for i, s in enumerate(slots)})
            if probe.status_code == 403:
                continue  # not this role's route: nothing reaches an id
            assert "errors" not in probe.json(), (
                f"{method} {path}: the walk's body does not pass the schema: {probe.text}")
            for label, real, fake, swap in variants(slots, a, b, (method, path)):
                label += ", a url with an unknown token" if bad_url else ""
                found = differs(send(real), send(fake), swap, f"{method} {path} ({label})")
                oracles += [found] if found else []
                compared += 1
            for s in slots:  # contracting: a made-up partner is a plain 404
                if (method, path, s.where) in CONTRACTING and not bad_url:
                    own = {x: b.own(x.kind) for x in slots}
                    answer = send({**own, s: _fake(0, s.kind)})
                    assert answer.status_code == 404, answer.text
                    assert answer.json()["message"] == "partner not found"
    # the walk saw the routes that name ids (a new one is walked without being listed here)
    assert {("POST", "/v1/partners/{partner_id}/postbacks"), ("POST", "/v1/actions/batch"),
            ("POST", "/v1/event-notifications/action-lifecycle/event-level"),
            ("POST", "/v1/inquiries/{inquiry_id}/resolve"),
            ("PUT", "/v1/programs/{program_id}/inquiry-settings"),
            ("POST", "/v1/event-notifications/{slug}/test"),
            ("GET", "/v1/deliveries"), ("GET", "/v1/actions")} <= walked
    assert not oracles, "\n\n".join(oracles)
    assert compared > 60


# -- the web app ------------------------------------------------------------------------------


def _s(name: str, kind: str | None = None, many: bool = False) -> Slot:
    return Slot(f"form.{name}", kind or KINDS[name], many)


#: what each id-taking web form sends (the routes' own path ids are filled by name)
WEB_FORMS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/brand/programs/{program_id}/event-types"): {"name": "Web", "action_type": "SALE"},
    ("POST", "/brand/programs/{program_id}/contracts"): {
        "partner_id": _s("partner_id"), "event_type_ids": _s("event_type_ids"),
        "locking_rule": "days_after_event", "locking_days": "30",
        "clearing_rule": "days_after_locking", "clearing_days": "20"},
    ("POST", "/brand/actions"): {
        "event_type": (_s("program_id"), ":", _s("event_type_id")),
        "partner_id": _s("partner_id"), "oid": "WEB-1", "amount": "1.00", "payout": "1.00"},
    ("POST", "/brand/catalog/{program_id}/items"): {"item_id": "WEB-ITEM", "name": "Shoe"},
    ("POST", "/brand/catalog/upload"): {"program_id": _s("program_id")},
    ("POST", "/brand/inquiries/{inquiry_id}/resolve"): {
        "resolution_status": "VALID", "event_type_id": _s("event_type_id")},
    ("POST", "/brand/postbacks"): {
        "partner_id": _s("partner_id"), "event_type_id": _s("event_type_id"), "url": URL,
        "method": "GET", "body_format": "json"},
    ("POST", "/partner/event-notifications/event-level"): {
        "event_type": (_s("program_id"), ":", _s("event_type_id")), "url": URL,
        "method": "GET", "body_format": "json", "enabled": "on"},
    ("POST", "/partner/inquiries"): {
        "program_id": _s("program_id"), "inquiry_type": "UNTRACKED", "oid": "WEB-INQ",
        "transaction_date": "2026-11-02T18:04", "transaction_amount": "10.00",
        "expected_payout": "1.00"},
}
WEB_QUERIES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/brand/catalog"): {"program_id": Slot("query.program_id", "program")},
    ("GET", "/partner/deliveries"): {"action_id": Slot("query.action_id", "action")},
}
UPLOADS = {"/brand/catalog/upload", "/brand/catalog/{program_id}/upload"}


def web_routes(app: Any) -> Iterator[tuple[str, str]]:
    def flat(routes: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI's included router
                yield from flat(r.original_router.routes, prefix + r.include_context.prefix)
            else:
                yield prefix + r.path, r
    for path, route in flat(app.routes):
        if path.startswith(("/brand", "/partner", "/operator", "/language")):
            for method in sorted(getattr(route, "methods", ()) - {"HEAD"}):
                yield method, path


def _slots_of(value: Any) -> list[Slot]:
    if isinstance(value, Slot):
        return [value]
    if isinstance(value, tuple):
        return [v for v in value if isinstance(v, Slot)]
    return []


def web_send(client: TestClient, token: str, method: str, path: str,
             path_slots: dict[str, Slot], form: dict[str, Any], query: dict[str, Any],
             bad_url: bool, assignment: dict[Slot, Any]) -> Any:
    url = path.format(**FIXED | {n: assignment[s] for n, s in path_slots.items()})
    params = {k: _fill(v, assignment) for k, v in query.items()}
    if method == "GET":
        return client.get(url, params=params)
    data = {"csrf_token": token, **{k: _fill(v, assignment) for k, v in form.items()}}
    if bad_url:
        data["url"] = UNKNOWN_TOKEN_URL
    files = ({"file": ("items.csv", b"item_id,name\nWEB-UP,Shoe\n", "text/csv")}
             if path in UPLOADS else None)
    return client.post(url, params=params, data=data, files=files)


def test_every_web_route_answers_another_tenants_ids_as_made_up_ones(
        tenants: tuple[Service, Tenant, Tenant]) -> None:
    service, a, b = tenants
    app = service.client.app
    sessions = []
    for key in (b.brand_key, b.partner_key):
        client = TestClient(app, base_url="http://testserver")
        sessions.append((client, sign_in(client, key)))
    walked = 0
    oracles: list[str] = []
    for method, path in web_routes(app):
        names = re.findall(r"{(\w+)}", path)
        path_slots = {n: Slot(f"path.{n}", KINDS[n]) for n in names if n not in FIXED}
        for n in names:
            assert n in FIXED or n in KINDS, f"{path}: what kind of id is {n}?"
        form = WEB_FORMS.get((method, path), {})
        query = WEB_QUERIES.get((method, path), {})
        slots = [*path_slots.values(), *(s for v in form.values() for s in _slots_of(v)),
                 *query.values()]
        if not slots:
            continue
        walked += 1
        with_url = (False, True) if "url" in form else (False,)
        for (client, token), bad_url in itertools.product(sessions, with_url):
            send = partial(web_send, client, token, method, path, path_slots, form, query,
                           bad_url)
            for label, real, fake, swap in variants(slots, a, b, (method, path)):
                label += ", a url with an unknown token" if bad_url else ""
                found = differs(send(real), send(fake), swap, f"web {method} {path} ({label})")
                oracles += [found] if found else []
            for s in slots:
                if (method, path, s.where) in CONTRACTING and token == sessions[0][1] and (
                        not bad_url):
                    own = {x: b.own(x.kind) for x in slots}
                    answer = send({**own, s: _fake(0, s.kind)})
                    assert answer.status_code == 422 and "no partner has the ID" in answer.text
    assert not oracles, "\n\n".join(oracles)
    assert walked >= 15


def test_brands_see_only_the_partners_they_contract(
        tenants: tuple[Service, Tenant, Tenant]) -> None:
    service, a, b = tenants
    client = TestClient(service.client.app, base_url="http://testserver")
    sign_in(client, b.brand_key)
    for page in ("/brand", "/brand/actions", "/brand/postbacks"):
        html = client.get(page)
        assert html.status_code == 200
        assert b.partner_name in html.text, page
        assert a.partner_name not in html.text, page
    # the API refuses brands the partner list; the operator sees every partner
    assert service.call("GET", "/v1/partners", b.brand_key)["error"] == "forbidden"
    operator = TestClient(service.client.app, base_url="http://testserver")
    signin = operator.get("/signin")
    operator.post("/signin", data={"api_key": ADMIN, "csrf_token": csrf(signin.text)})
    listed = operator.get("/operator").text
    assert a.partner_name in listed and b.partner_name in listed
    # contracting a partner is how a brand comes to see it
    program = b.own("program")
    service.call("PUT", f"/v1/programs/{program}/contracts/{a.own('partner')}", b.brand_key,
                 200, json={"event_type_ids": [b.own("event_type")],
                            "locking": {"rule": "days_after_event", "days": 30},
                            "clearing": {"rule": "days_after_locking", "days": 20}})
    assert a.partner_name in client.get("/brand/postbacks").text


def test_the_walk_fills_every_slot_kind(tenants: tuple[Service, Tenant, Tenant]) -> None:
    """Every kind of id the walk names exists in both worlds, and no two are alike."""
    _, a, b = tenants
    for kind in set(KINDS.values()):
        assert a.ids[kind] and b.ids[kind], kind
        assert not set(a.ids[kind]) & set(b.ids[kind]), kind
    assert all(v < FAKE for v in itertools.chain(*a.ids.values(), *b.ids.values())
               if isinstance(v, int))


def test_nothing_of_another_tenant_shows_in_what_b_reads(
        tenants: tuple[Service, Tenant, Tenant]) -> None:
    """Every read (each API GET and web page, path ids B's own) as B's brand and B's
    partner: nothing names A's accounts, programs, orders, inquiries or items."""
    service, a, b = tenants
    marks = [a.partner_name, "Brand A", "Program A", "OID-A", "INQ-A", "ITEM-A"]
    spec = service.client.get("/openapi.json").json()
    pages: list[tuple[str, str, dict[str, Any]]] = []  # (key, path, query)
    for method, path, op in api_routes(spec):
        if method == "GET":
            slots, build = api_request(spec, path, op)
            url, params, _ = build({s: b.own(s.kind) for s in slots})
            pages += [(key, url, params) for key in (b.brand_key, b.partner_key)]
    read = 0
    for key, url, params in pages:
        answer = service.client.get(url, params=params,
                                    headers={"Authorization": f"Bearer {key}"})
        read += answer.status_code == 200
        for mark in marks:
            assert mark not in answer.text, f"GET {url} names {mark}: {answer.text[:300]}"
    for key in (b.brand_key, b.partner_key):
        client = TestClient(service.client.app, base_url="http://testserver")
        sign_in(client, key)
        for method, path in web_routes(service.client.app):
            if method != "GET":
                continue
            url = path.format(**FIXED | {n: b.own(KINDS[n]) for n in re.findall(r"{(\w+)}", path)
                                         if n not in FIXED})
            answer = client.get(url, follow_redirects=False)
            read += answer.status_code == 200
            for mark in marks:
                assert mark not in answer.text, f"web {url} names {mark}"
    assert read > 20
