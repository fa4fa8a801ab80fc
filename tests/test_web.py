"""The web app over HTTP (no browser): sessions, CSRF, isolation, what a page shows and
what it keeps. The browser walk-throughs are in ``test_browser.py``."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, World, build_world
from tests.receiver import Receiver

PAGES = ["/", "/partner/event-notifications", "/partner/event-notifications/action-lifecycle",
         "/partner/deliveries", "/partner/deliveries/1"]


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Sign in through the form; returns the session's CSRF token (from the next page)."""
    form = client.get("/signin")
    response = client.post("/signin", data={"api_key": key, "csrf_token": csrf(form.text),
                                            "next": "/"})
    assert response.status_code == 200, response.text
    return csrf(response.text)


def browser(world: World) -> TestClient:
    return TestClient(world.service.client.app, base_url="http://testserver")


def test_no_page_without_a_session(world: World) -> None:
    client = browser(world)
    for path in PAGES:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/signin?next=")
    # a form sent without a session changes nothing
    response = client.post("/partner/event-notifications/action-lifecycle",
                           data={"url": "http://127.0.0.1:1/x", "method": "GET"},
                           follow_redirects=False)
    assert response.status_code == 303
    assert world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"] is None


def test_sign_in_sets_a_strict_http_only_cookie_and_never_echoes_the_key(world: World) -> None:
    client = browser(world)
    page = client.get("/signin")
    wrong = client.post("/signin", data={"api_key": "pbk_not-a-key",
                                         "csrf_token": csrf(page.text)})
    assert wrong.status_code == 401
    assert "unknown or has been revoked" in wrong.text
    assert "pbk_not-a-key" not in wrong.text
    page = client.get("/signin")
    response = client.post("/signin", data={"api_key": world.partner_key,
                                            "csrf_token": csrf(page.text)},
                           follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/partner/event-notifications"
    cookie = next(c for c in response.headers.get_list("set-cookie")
                  if c.startswith("pb_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert world.partner_key not in cookie
    home = client.get("/partner/event-notifications")
    assert home.status_code == 200
    assert world.partner_key not in home.text
    assert "default-src 'self'" in home.headers["content-security-policy"]


def test_sign_in_needs_the_form_token(world: World) -> None:
    client = browser(world)
    response = client.post("/signin", data={"api_key": world.partner_key,
                                            "csrf_token": "forged"}, follow_redirects=False)
    assert response.status_code == 401
    assert "pb_session" not in response.headers.get("set-cookie", "")


def test_forms_refuse_a_missing_or_wrong_csrf_token(world: World) -> None:
    client = browser(world)
    sign_in(client, world.partner_key)
    for token in (None, "wrong"):
        data = {"url": "http://127.0.0.1:1/x?id={ActionId}", "method": "GET",
                "body_format": "json", "enabled": "on"}
        if token:
            data["csrf_token"] = token
        response = client.post("/partner/event-notifications/action-lifecycle", data=data)
        assert response.status_code == 403
        assert "reload the page" in response.text
    assert world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"] is None


def test_save_shows_an_unknown_token_where_it_stands_and_saves_nothing(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    response = client.post("/partner/event-notifications/action-lifecycle", data={
        "csrf_token": token, "url": "http://127.0.0.1:9/pb?id={ActonId}&p={Payout}",
        "method": "GET", "body_format": "json", "enabled": "on"})
    assert response.status_code == 422
    assert "<mark>{ActonId}</mark>" in response.text
    assert "<code>{ActionId}</code>" in response.text  # the closest valid name
    assert 'value="http://127.0.0.1:9/pb?id={ActonId}&amp;p={Payout}"' in response.text
    assert world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"] is None


def test_save_then_a_delivery_keeps_a_masked_header(world: World, receiver: Receiver) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    form = {"csrf_token": token, "url": f"{receiver.url}/pb?id={{ActionId}}", "method": "GET",
            "body_format": "json", "enabled": "on",
            "header_name": ["X-Api-Key", ""], "header_value": ["s3cret-value", ""]}
    saved = client.post("/partner/event-notifications/action-lifecycle", data=form)
    assert saved.status_code == 200, saved.text
    assert "Saved." in saved.text
    assert "s3cret-value" not in saved.text and "********" in saved.text
    # saving the form again as shown (the header value still masked) keeps the value
    again = {**form, "header_value": ["********", ""], "url": form["url"] + "&again=1"}
    assert client.post("/partner/event-notifications/action-lifecycle",
                       data=again).status_code == 200
    action = world.report()
    got = receiver.wait_for(1)[0]
    assert got.query == {"id": str(action["id"]), "again": "1"}
    assert got.header("X-Api-Key") == "s3cret-value"
    wait_until(lambda: world.partner("GET", "/v1/deliveries", 200)["items"][0]["status"]
               == "succeeded")
    listed = client.get("/partner/event-notifications").text
    row = listed.split('data-type="action-lifecycle"')[1].split("</tr>")[0]
    assert "Enabled" in row and "succeeded" in row and "HTTP 200" in row


def test_partners_see_only_their_own_deliveries(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb?id={{ActionId}}")
    world.report()
    receiver.wait_for(1)
    mine = world.partner("GET", "/v1/deliveries", 200)["items"][0]
    other = world.service.call("POST", "/v1/partners", ADMIN, 201,
                               json={"name": "Other", "partner_type": "loyalty"})
    other_key = world.service.call("POST", "/v1/api-keys", ADMIN, 201, json={
        "account_type": "partner", "account_id": other["id"]})["key"]
    client = browser(world)
    token = sign_in(client, other_key)
    assert client.get(f"/partner/deliveries/{mine['id']}").status_code == 404
    listing = client.get("/partner/deliveries")
    assert f"/partner/deliveries/{mine['id']}" not in listing.text
    assert "No deliveries match." in listing.text
    resend = client.post(f"/partner/deliveries/{mine['id']}/resend", data={"csrf_token": token})
    assert resend.status_code == 404
    # and the owner sees it, with its attempt
    owner = browser(world)
    sign_in(owner, world.partner_key)
    page = owner.get(f"/partner/deliveries/{mine['id']}")
    assert page.status_code == 200 and "HTTP 200" in page.text


def test_a_brand_key_cannot_open_partner_pages(world: World) -> None:
    client = browser(world)
    page = client.get("/signin")
    client.post("/signin", data={"api_key": world.brand_key, "csrf_token": csrf(page.text)},
                follow_redirects=False)
    response = client.get("/partner/event-notifications")
    assert response.status_code == 403


def test_revoking_the_key_ends_its_sessions(world: World) -> None:
    key = world.service.call("POST", "/v1/api-keys", ADMIN, 201, json={
        "account_type": "partner", "account_id": world.partner_id})
    client, other = browser(world), browser(world)
    sign_in(client, key["key"])
    sign_in(other, world.partner_key)
    world.service.call("DELETE", f"/v1/api-keys/{key['id']}", ADMIN, 204)
    assert client.get("/partner/event-notifications", follow_redirects=False).status_code == 303
    assert other.get("/partner/event-notifications").status_code == 200  # another key's


def test_sign_out_ends_the_session(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    cookie = client.cookies.get("pb_session")
    client.post("/signout", data={"csrf_token": token})
    stale = browser(world)
    stale.cookies.set("pb_session", cookie or "")
    assert stale.get("/partner/event-notifications", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("header,cookie,expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", None, "事件通知"),
    ("en-US,en;q=0.9", None, "Event Notifications"),
    ("en-US", "zh", "事件通知"),
])
def test_language_from_the_browser_or_the_switch(world: World, header: str, cookie: str | None,
                                                 expected: str) -> None:
    client = browser(world)
    sign_in(client, world.partner_key)
    if cookie:
        client.get(f"/language/{cookie}?next=/")
    page = client.get("/partner/event-notifications", headers={"Accept-Language": header})
    assert f"<h1>{expected}</h1>" in page.text


def test_language_switch_only_redirects_on_this_site(world: World) -> None:
    client = browser(world)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = client.get(f"/language/zh?next={target}", follow_redirects=False)
        assert response.headers["location"] == "/"


def test_inquiry_type_is_unavailable_to_other_partner_types(make_service: Any) -> None:
    world = build_world(make_service(), partner_type="content")
    client = browser(world)
    sign_in(client, world.partner_key)
    page = client.get("/partner/event-notifications")
    row = page.text.split('data-type="action-inquiry"')[1].split("</tr>")[0]
    assert "Unavailable" in row and "only for" in row
    assert "/partner/event-notifications/action-inquiry" not in row


ROLE_PAGES = {
    "partner": ["/partner/event-notifications", "/partner/deliveries", "/partner/actions",
                "/partner/inquiries"],
    "brand": ["/brand", "/brand/actions", "/brand/catalog", "/brand/inquiries",
              "/brand/postbacks"],
    "operator": ["/operator", "/operator/health"],
}


def test_every_page_needs_a_session_of_its_own_role(world: World) -> None:
    keys = {"partner": world.partner_key, "brand": world.brand_key, "operator": ADMIN}
    anonymous = browser(world)
    for paths in ROLE_PAGES.values():
        for path in paths:
            assert anonymous.get(path, follow_redirects=False).status_code == 303, path
    for role, key in keys.items():
        client = browser(world)
        sign_in(client, key)
        for owner, paths in ROLE_PAGES.items():
            for path in paths:
                expected = 200 if owner == role else 403
                assert client.get(path).status_code == expected, (role, path)


def test_brand_reports_modifies_and_reverses_through_its_pages(world: World,
                                                               receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb?id={{ActionId}}&s={{Status}}&p={{Payout}}")
    client = browser(world)
    token = sign_in(client, world.brand_key)
    page = client.post("/brand/actions", data={
        "csrf_token": token, "event_type": f"{world.program_id}:{world.event_type_id}",
        "partner_id": str(world.partner_id), "oid": "ORD-1", "amount": "100.00",
        "payout": "8.00"})
    assert page.status_code == 200 and "reported." in page.text
    action_id = int(re.search(r"Action (\d+) reported", page.text).group(1))  # type: ignore[union-attr]
    assert receiver.wait_for(1)[0].query == {"id": str(action_id), "s": "PENDING", "p": "8.00"}
    bad = client.post(f"/brand/actions/{action_id}/modify", data={
        "csrf_token": token, "payout": "-1", "reason": "ORDER_UPDATE"})
    assert bad.status_code == 422
    assert world.brand("GET", f"/v1/actions/{action_id}", 200)["payout"] == "8.00"
    client.post(f"/brand/actions/{action_id}/modify", data={
        "csrf_token": token, "payout": "6.00", "reason": "ORDER_UPDATE"})
    assert receiver.wait_for(2)[1].query["p"] == "6.00"
    client.post(f"/brand/actions/{action_id}/reverse", data={
        "csrf_token": token, "reason": "ITEM_RETURNED"})
    assert receiver.wait_for(3)[2].query["s"] == "REVERSED"
    # another brand neither sees nor changes it
    other = world.service.call("POST", "/v1/brands", ADMIN, 201, json={"name": "Other"})
    other_key = world.service.call("POST", "/v1/api-keys", ADMIN, 201, json={
        "account_type": "brand", "account_id": other["id"]})["key"]
    intruder = browser(world)
    other_token = sign_in(intruder, other_key)
    assert "ORD-1" not in intruder.get("/brand/actions").text
    refused = intruder.post(f"/brand/actions/{action_id}/approve",
                            data={"csrf_token": other_token})
    assert refused.status_code == 422 and "not found" in refused.text
    assert world.brand("GET", f"/v1/actions/{action_id}", 200)["status"] == "REVERSED"


def test_an_inquiry_from_the_partner_page_declined_with_an_exact_reason(world: World) -> None:
    partner = browser(world)
    token = sign_in(partner, world.partner_key)
    sent = partner.post("/partner/inquiries", data={
        "csrf_token": token, "program_id": str(world.program_id), "inquiry_type": "UNTRACKED",
        "oid": "MISSING-1", "transaction_date": "2026-11-20T10:00",
        "transaction_amount": "80.00", "expected_payout": "4.00"})
    assert sent.status_code == 200 and "MISSING-1" in sent.text
    inquiry_id = world.partner("GET", "/v1/inquiries", 200)["items"][0]["id"]
    brand = browser(world)
    brand_token = sign_in(brand, world.brand_key)
    wrong = brand.post(f"/brand/inquiries/{inquiry_id}/resolve", data={
        "csrf_token": brand_token, "resolution_status": "DECLINED",
        "reject_reason": "Because"})
    assert wrong.status_code == 422 and "exact reject reasons" in wrong.text
    reason = "Transaction cannot be traced"
    brand.post(f"/brand/inquiries/{inquiry_id}/resolve", data={
        "csrf_token": brand_token, "resolution_status": "DECLINED", "reject_reason": reason})
    assert f"DECLINED: {reason}" in partner.get("/partner/inquiries").text


def test_operator_adds_accounts_and_issues_a_key_shown_once(world: World) -> None:
    client = browser(world)
    token = sign_in(client, ADMIN)
    client.post("/operator/partners", data={"csrf_token": token, "name": "Loyalty Land",
                                            "partner_type": "loyalty"})
    bad = client.post("/operator/partners", data={"csrf_token": token, "name": "",
                                                  "partner_type": "loyalty"})
    assert bad.status_code == 422
    partners = world.service.call("GET", "/v1/partners", ADMIN, 200)["items"]
    assert [p["name"] for p in partners] == ["Cashback World", "Loyalty Land"]
    issued = client.post("/operator/keys", data={"csrf_token": token,
                                                 "account_type": "partner",
                                                 "account_id": str(partners[1]["id"])})
    key = re.search(r'<code id="issued-key">([^<]+)</code>', issued.text).group(1)  # type: ignore[union-attr]
    assert key not in client.get("/operator").text
    assert world.service.call("GET", "/v1/me", key, 200)["account_id"] == partners[1]["id"]
    listed = world.service.call("GET", "/v1/api-keys", ADMIN, 200,
                                params={"account_id": partners[1]["id"]})["items"]
    assert len(listed) == 1 and "key" not in listed[0] and key.startswith(listed[0]["prefix"])
    client.post(f"/operator/keys/{listed[0]['id']}/revoke", data={"csrf_token": token})
    assert world.service.call("GET", "/v1/me", key, 401)
    health = client.get("/operator/health")
    assert health.status_code == 200 and 'id="due-backlog">0<' in health.text


def test_a_json_catalog_upload_is_all_or_nothing(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.brand_key)
    good = b'[{"item_id": "A", "name": "Alpha", "current_price": "5.00"}]'
    page = client.post(f"/brand/catalog/{world.program_id}/upload",
                       data={"csrf_token": token}, files={"file": ("items.json", good)})
    assert "1 rows read: 1 added" in page.text
    bad = b'{"items": [{"item_id": "B", "name": "Beta"}, {"item_id": "C"}]}'
    page = client.post(f"/brand/catalog/{world.program_id}/upload",
                       data={"csrf_token": token}, files={"file": ("items.json", bad)})
    assert page.status_code == 422 and "row 2, name" in page.text
    items = world.brand("GET", f"/v1/programs/{world.program_id}/catalog/items", 200)
    assert [i["item_id"] for i in items["items"]] == ["A"]
    for junk in (b"\xff\xfe", b"item_id,name\nA,\x00x\n", b"[1, 2]", b"{bad json"):
        page = client.post(f"/brand/catalog/{world.program_id}/upload",
                           data={"csrf_token": token}, files={"file": ("x.csv", junk)})
        assert page.status_code == 422, junk


def test_signing_secret_is_shown_once_and_rotates(world: World, receiver: Receiver) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    form = {"csrf_token": token, "url": f"{receiver.url}/pb?id={{ActionId}}", "method": "GET",
            "body_format": "json", "enabled": "on", "signed": "on", "signing_scheme": "v1"}
    saved = client.post("/partner/event-notifications/action-lifecycle", data=form)
    first = re.search(r'<code id="signing-secret">([^<]+)</code>', saved.text)
    assert first and first.group(1).startswith("whsec_")
    page = client.get("/partner/event-notifications/action-lifecycle")
    assert first.group(1) not in page.text and "Rotate signing secret" in page.text
    rotated = client.post("/partner/event-notifications/action-lifecycle/signing-secret/rotate",
                          data={"csrf_token": token})
    second = re.search(r'<code id="signing-secret">([^<]+)</code>', rotated.text)
    assert second and second.group(1) != first.group(1)
    # saving the form again keeps the current secret (nothing new to reveal)
    again = client.post("/partner/event-notifications/action-lifecycle", data=form)
    assert 'id="signing-secret"' not in again.text


def test_event_level_postbacks_are_added_and_deleted(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    page = client.get("/partner/event-notifications")
    assert f'value="{world.program_id}:{world.event_type_id}"' in page.text
    client.post("/partner/event-notifications/event-level", data={
        "csrf_token": token, "event_type": f"{world.program_id}:{world.event_type_id}",
        "url": "http://127.0.0.1:9/el?id={ActionId}", "method": "GET", "enabled": "on"})
    made = world.partner("GET", "/v1/event-notifications/action-lifecycle/event-level",
                         200)["items"]
    assert [m["url"] for m in made] == ["http://127.0.0.1:9/el?id={ActionId}"]
    refused = client.post("/partner/event-notifications/event-level", data={
        "csrf_token": token, "event_type": f"{world.program_id}:{world.event_type_id}",
        "url": "http://127.0.0.1:9/el?id={Nope}", "method": "GET", "enabled": "on"})
    # refused beside the field, the form as it was sent (opened, the URL still typed)
    assert refused.status_code == 422 and "unknown token {Nope}" in refused.text
    assert 'value="http://127.0.0.1:9/el?id={Nope}"' in refused.text
    client.post(f"/partner/event-notifications/event-level/{made[0]['id']}/delete",
                data={"csrf_token": token})
    assert world.partner("GET", "/v1/event-notifications/action-lifecycle/event-level",
                         200)["items"] == []


def test_a_missing_thing_is_a_404_page(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    for response in (client.get("/partner/event-notifications/no-such-type"),
                     client.post("/partner/event-notifications/no-such-type",
                                 data={"csrf_token": token, "url": "http://127.0.0.1:9/"}),
                     client.get("/partner/deliveries/999999")):
        assert response.status_code == 404
        assert "<h1>Not found</h1>" in response.text


def test_the_preview_renders_sample_values_and_refuses_bad_calls(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    path = "/partner/event-notifications/action-lifecycle/preview"
    ok = client.post(path, headers={"X-CSRF-Token": token}, json={
        "url": "https://example.com/pb?id={ActionId}", "method": "POST",
        "body_format": "json", "body": '{"payout": {Payout}, "sub": "{SubId1}"}'})
    assert ok.json()["request"] == {
        "method": "POST", "url": "https://example.com/pb?id=1042",
        "headers": {"Content-Type": "application/json; charset=utf-8"},
        "body": '{"payout": 27.75, "sub": "member-8812"}'}
    wrong = client.post(path, headers={"X-CSRF-Token": token},
                        json={"url": "https://example.com/?x={Nope}"}).json()
    assert wrong["problems"][0]["token"] == "Nope"
    assert client.post(path, json={"url": "x"}).status_code == 403  # no CSRF header
    for junk in (b"not json", b"[1]"):
        response = client.post(path, headers={"X-CSRF-Token": token,
                                              "Content-Type": "application/json"},
                               content=junk)
        assert response.status_code == 400


def test_an_operator_session_ends_when_its_token_is_replaced(make_service: Any) -> None:
    before = make_service(start_engine=False)
    client = TestClient(before.client.app)
    sign_in(client, ADMIN)
    assert client.get("/operator").status_code == 200
    after = make_service(start_engine=False, admin_token="a-new-operator-token")
    moved = TestClient(after.client.app)
    moved.cookies.set("pb_session", client.cookies.get("pb_session") or "")
    assert moved.get("/operator", follow_redirects=False).status_code == 303
