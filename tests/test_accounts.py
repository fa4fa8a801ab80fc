"""Accounts, keys and isolation: every account sees only its own data; others' is 404."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update

from postback.db.engine import make_engine
from postback.db.schema import api_key, operator_credential
from postback.services.accounts import Principal, authenticate, ensure_operator_token, hash_key
from postback.services.key_cache import TTL_SECONDS, KeyCache
from tests.conftest import ADMIN, Service, World, build_world


def test_everything_but_healthz_needs_a_key(service: Service) -> None:
    assert service.client.get("/healthz").json()["status"] == "ok"
    for method, path in (("GET", "/v1/actions"), ("POST", "/v1/brands"),
                         ("GET", "/v1/deliveries"), ("GET", "/v1/event-notifications")):
        response = service.client.request(method, path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["message"]
    assert service.call("GET", "/v1/actions", "pbk_wrong", 401)["error"] == "unauthorized"


def test_keys_are_shown_once_stored_hashed_and_revocable(world: World) -> None:
    service = world.service
    with service.db.connect() as conn:
        stored = conn.execute(select(api_key.c.key_hash)).scalars().all()
    assert hash_key(world.partner_key) in stored
    assert world.partner_key not in stored
    assert service.call("GET", "/v1/me", world.partner_key, 200) == {
        "role": "partner", "account_id": world.partner_id}
    key = service.call("POST", "/v1/api-keys", ADMIN, 201,
                       json={"account_type": "partner", "account_id": world.partner_id})
    service.call("GET", "/v1/me", key["key"], 200)
    service.call("DELETE", f"/v1/api-keys/{key['id']}", ADMIN, 204)
    assert service.call("GET", "/v1/me", key["key"], 401)["message"] == "unknown or revoked API key"
    service.call("DELETE", "/v1/api-keys/99999", ADMIN, 404)
    service.call("POST", "/v1/api-keys", ADMIN, 404,
                 json={"account_type": "brand", "account_id": 99999})


def test_a_key_revoked_by_another_process_is_refused_within_the_cache_s_second(
        world: World) -> None:
    """Keys that signed in are remembered for ``TTL_SECONDS``: a revocation this process
    made is refused at once (above); one another API process made (here: written to the
    database directly) within that second."""
    service = world.service
    key = service.call("POST", "/v1/api-keys", ADMIN, 201,
                       json={"account_type": "partner", "account_id": world.partner_id})
    service.call("GET", "/v1/me", key["key"], 200)
    with service.db.begin() as conn:
        conn.execute(update(api_key).where(api_key.c.id == key["id"]).values(
            revoked_at=api_key.c.created_at))
    deadline = time.monotonic() + TTL_SECONDS + 0.5
    while service.client.get("/v1/me", headers={
            "Authorization": f"Bearer {key['key']}"}).status_code == 200:
        assert time.monotonic() < deadline, "the revoked key was still accepted"
        time.sleep(0.05)
    assert service.call("GET", "/v1/me", key["key"], 401)["message"] == \
        "unknown or revoked API key"


def test_the_key_cache_keeps_digests_forgets_on_revocation_and_ignores_raced_lookups() -> None:
    cache = KeyCache(ttl=60)
    who = Principal("brand", 7, 3)
    before = cache.generation
    cache.remember("pbk_secret", who, before)
    assert cache.get("pbk_secret") == who and cache.get("pbk_other") is None
    assert "pbk_secret" not in repr(vars(cache))  # only its digest is kept
    cache.forget_all()
    assert cache.get("pbk_secret") is None
    cache.remember("pbk_secret", who, before)  # its lookup began before the revocation
    assert cache.get("pbk_secret") is None
    small = KeyCache(ttl=60, max_keys=2)
    for n in range(3):
        small.remember(f"pbk_{n}", who, small.generation)
    assert [small.get(f"pbk_{n}") for n in range(3)] == [None, who, who]


def test_roles_are_enforced(world: World) -> None:
    service = world.service
    body = {"name": "x"}
    msg = service.call("POST", "/v1/brands", world.brand_key, 403, json=body)["message"]
    assert "operator" in msg
    service.call("POST", "/v1/actions", world.partner_key, 403, json=world.action())
    service.call("PUT", "/v1/event-notifications/action-lifecycle", world.brand_key, 403,
                 json={"url": "https://x.example/"})
    service.call("POST", "/v1/actions", ADMIN, 403, json=world.action())


def test_partners_and_brands_see_only_their_own(service: Service) -> None:
    a = build_world(service)
    b = build_world(service)
    a.subscribe("http://127.0.0.1:9/a?id={ActionId}")  # nothing listens: refused
    action = a.report()
    # partner B and brand B: 404 on A's action, never its data
    for call in (b.partner, b.brand):
        assert call("GET", f"/v1/actions/{action['id']}", 404)["error"] == "not_found"
    assert b.partner("GET", "/v1/actions", 200)["items"] == []
    assert b.brand("GET", "/v1/actions", 200)["items"] == []
    b.brand("PATCH", f"/v1/actions/{action['id']}", 404, json={"payout": "1.00",
                                                                "reason": "ORDER_UPDATE"})
    b.brand("POST", f"/v1/actions/{action['id']}/reverse", 404, json={"reason": "REJECTED"})
    b.brand("POST", f"/v1/actions/{action['id']}/approve", 404)
    b.brand("GET", f"/v1/programs/{a.program_id}", 404)
    b.brand("POST", f"/v1/programs/{a.program_id}/event-types", 404,
            json={"name": "Lead", "action_type": "LEAD"})
    b.brand("PUT", f"/v1/programs/{a.program_id}/contracts/{b.partner_id}", 404,
            json={"event_type_ids": [a.event_type_id], "locking": {"rule": "open_ended"},
                  "clearing": {"rule": "days_after_locking", "days": 1}})
    # brand B cannot report into A's program
    b.brand("POST", "/v1/actions", 404, json=a.action())
    # deliveries: A's partner has one; B's partner cannot see it
    delivery = a.partner("GET", "/v1/deliveries", 200)["items"][0]
    b.partner("GET", f"/v1/deliveries/{delivery['id']}", 404)
    b.partner("POST", f"/v1/deliveries/{delivery['id']}/resend", 404)
    assert b.partner("GET", "/v1/deliveries", 200)["items"] == []
    assert b.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"] is None
    # the partner may read its own action
    assert a.partner("GET", f"/v1/actions/{action['id']}", 200)["oid"] == action["oid"]


def test_operator_token_is_generated_once_and_stored_hashed(db_url: str) -> None:
    db = make_engine(db_url)
    try:
        token = ensure_operator_token(db, None)
        assert token is not None and token.startswith("pbo_")
        assert ensure_operator_token(db, None) is None  # printed once only
        with db.connect() as conn:
            stored = conn.execute(select(operator_credential.c.token_hash)).scalars().all()
            assert stored == [hash_key(token)]
            who: Any = authenticate(conn, token, None)
            assert who.role == "operator"
            assert authenticate(conn, token, "another-configured-token") is None
    finally:
        db.dispose()


def test_api_docs_and_openapi_are_served_without_a_cdn(service: Service) -> None:
    page = service.client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text
    assert service.client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = service.client.get("/openapi.json").json()
    assert "/v1/actions/batch" in spec["paths"]
    assert "/v1/event-notifications/{slug}" in spec["paths"]
