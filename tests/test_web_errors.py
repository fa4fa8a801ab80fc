"""Errors in words, forms that keep what was typed, Post/Redirect/Get (#12 item 6), over
HTTP against the real service: a refusal reads as a person would say it, beside its field,
in English and in Chinese (the API's in the caller's language too); a refused form comes
back as it was sent; every form that changes something redirects, so a reload repeats
nothing and what is shown once (a key, a test's result) is shown once; a browser gets the
app's own error page, never the API's JSON."""

from __future__ import annotations

import html
import re
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from postback.core.messages import KNOWN, TEXTS, known
from postback.db.schema import action, delivery_attempt, web_session
from postback.web.i18n import translations
from tests.conftest import ADMIN, World
from tests.receiver import Receiver
from tests.test_web import browser, csrf, sign_in, wait_until

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def error_beside(page: str, element_id: str) -> str:
    """The text of the error shown beside the form field ``element_id``."""
    found = re.search(rf'<p class="error field-error" id="{re.escape(element_id)}-error"'
                      rf'[^>]*>(.*?)</p>', page, re.S)
    assert found, f"no error beside #{element_id}"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def value_of(page: str, element_id: str) -> str:
    found = re.search(rf'<input id="{re.escape(element_id)}"[^>]*\bvalue="([^"]*)"', page)
    assert found, f"no value in #{element_id}"
    return html.unescape(found.group(1))


def count(world: World, table: Any) -> int:
    with world.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# -- the words --------------------------------------------------------------------------------

def test_every_known_message_gives_back_its_english_and_has_a_chinese_translation() -> None:
    zh = translations("zh")
    for entry in KNOWN:
        sample = {name: f"v{i}" for i, name in enumerate(
            re.findall(r"%\((\w+)\)s", entry.msgid))}
        for name, shape in entry.shapes.items():
            sample[name] = {r"\d+": "42", r"\S+": "x.example", r"\w+": "url",
                            r"[a-z-]+": "action-lifecycle", r"[A-Z_]+": "CLOSED"}.get(
                shape, "127.0.0.1" if "0-9A-F" in shape else "program")
        english = entry.msgid % sample
        found = known(english)
        assert found.english() == english, entry.msgid
        assert zh.gettext(entry.msgid) != entry.msgid, entry.msgid
    for text in TEXTS:
        assert known(text).english() == text
        assert zh.gettext(text) != text or text.isascii() is False, text


def test_a_lower_case_action_type_is_said_plainly_beside_the_field_and_the_form_kept(
        world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.brand_key)
    path = f"/brand/programs/{world.program_id}/event-types"
    field = f"et-type-{world.program_id}"
    for headers, expected in (({}, "Action type: use capital letters, digits and _"),
                              (ZH, "操作类型：请使用大写字母、数字和 _")):
        page = client.post(path, data={"csrf_token": token, "name": "Lead form",
                                       "action_type": "lead"}, headers=headers)
        assert page.status_code == 422
        said = error_beside(page.text, field)
        assert said.startswith(expected), said
        assert "SALE" in said and "should match" not in page.text and "^[A-Z]" not in page.text
        assert value_of(page.text, field) == "lead"
        assert value_of(page.text, f"et-name-{world.program_id}") == "Lead form"
        assert f'aria-describedby="{field}-error"' in page.text
    assert len(world.brand("GET", f"/v1/programs/{world.program_id}", 200)["event_types"]) == 1


def test_an_empty_url_asks_for_the_servers_address(world: World) -> None:
    partner = browser(world)
    token = sign_in(partner, world.partner_key)
    for path in ("/partner/event-notifications/action-lifecycle",
                 "/partner/event-notifications/action-lifecycle/test"):
        page = partner.post(path, data={"csrf_token": token, "url": "", "method": "GET",
                                        "body_format": "json", "enabled": "on"})
        assert page.status_code == 422, path
        assert "URL: enter the address of your server, e.g. https://example.com/postback" in (
            page.text), path
        assert "at least 1 item" not in page.text and "pass url" not in page.text
    brand = browser(world)
    token = sign_in(brand, world.brand_key)
    page = brand.post("/brand/postbacks", data={
        "csrf_token": token, "partner_id": str(world.partner_id),
        "event_type_id": str(world.event_type_id), "url": "", "method": "POST",
        "body_format": "json", "body": '{"id": "{ActionId}"}'}, headers=ZH)
    assert page.status_code == 422
    assert error_beside(page.text, "b-url").startswith("URL：请输入您服务器的地址")
    assert '{&#34;id&#34;: &#34;{ActionId}&#34;}' in page.text  # the body as typed


def test_a_duplicate_order_id_keeps_the_form_and_says_why_beside_it(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.brand_key)
    form = {"csrf_token": token, "event_type": f"{world.program_id}:{world.event_type_id}",
            "partner_id": str(world.partner_id), "oid": "ORD-7", "amount": "100.00",
            "payout": "8.00", "sub_id1": "member-7"}
    first = client.post("/brand/actions", data=form, follow_redirects=False)
    assert first.status_code == 303
    again = client.post("/brand/actions", data={**form, "amount": "12.34", "payout": "1.23"})
    assert again.status_code == 422
    said = error_beside(again.text, "r-oid")
    assert said.startswith("Order ID: 'ORD-7' is already used by an action of event type"), said
    for element, typed in (("r-oid", "ORD-7"), ("r-amount", "12.34"), ("r-payout", "1.23"),
                           ("r-sub", "member-7")):
        assert value_of(again.text, element) == typed
    assert f'value="{world.program_id}:{world.event_type_id}" selected' in again.text
    zh = client.post("/brand/actions", data=form, headers=ZH)
    assert error_beside(zh.text, "r-oid").startswith("订单号：'ORD-7' 已被事件类型")
    assert count(world, action) == 1


def test_money_and_required_fields_read_plainly_and_keep_the_inquiry_form(
        world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    sent = {"csrf_token": token, "program_id": str(world.program_id),
            "inquiry_type": "INCORRECT", "oid": "MISS-1", "transaction_date": "2026-11-20T10:00",
            "transaction_amount": "80,00", "expected_payout": "", "notes": "said on the phone"}
    page = client.post("/partner/inquiries", data=sent)
    assert page.status_code == 422
    assert error_beside(page.text, "i-amount") == (
        "Transaction amount: enter an amount such as 10.50: digits, a point and at most 2 "
        "decimals, no spaces")
    assert error_beside(page.text, "i-payout").startswith("Expected payout: ")
    assert value_of(page.text, "i-amount") == "80,00"
    assert value_of(page.text, "i-oid") == "MISS-1"
    assert "<option selected>INCORRECT</option>" in page.text
    assert "said on the phone</textarea>" in page.text
    assert world.partner("GET", "/v1/inquiries", 200)["items"] == []


def test_operator_forms_keep_what_was_typed(world: World) -> None:
    client = browser(world)
    token = sign_in(client, ADMIN)
    page = client.post("/operator/partners", data={"csrf_token": token, "name": " ",
                                                   "partner_type": "coupon"}, headers=ZH)
    assert page.status_code == 422
    assert error_beside(page.text, "partner-name") == "名称：请输入名称"
    assert "<option selected>coupon</option>" in page.text
    page = client.post("/operator/brands", data={"csrf_token": token, "name": "x" * 201})
    assert error_beside(page.text, "brand-name") == "Name: use at most 200 characters"
    assert value_of(page.text, "brand-name") == "x" * 201


def test_service_refusals_are_in_the_readers_language(world: World) -> None:
    partner = browser(world)
    token = sign_in(partner, world.partner_key)
    partner.post("/partner/inquiries", data={
        "csrf_token": token, "program_id": str(world.program_id), "inquiry_type": "UNTRACKED",
        "oid": "MISSING-1", "transaction_date": "2026-11-20T10:00",
        "transaction_amount": "80.00", "expected_payout": "4.00"})
    inquiry_id = world.partner("GET", "/v1/inquiries", 200)["items"][0]["id"]
    brand = browser(world)
    brand_token = sign_in(brand, world.brand_key)
    wrong = brand.post(f"/brand/inquiries/{inquiry_id}/resolve", data={
        "csrf_token": brand_token, "resolution_status": "DECLINED",
        "reject_reason": "Because"}, headers=ZH)
    assert wrong.status_code == 422
    said = error_beside(wrong.text, f"d-reason-{inquiry_id}")
    assert said.startswith("拒绝原因：") and "needs" not in said, said
    partner.post(f"/partner/inquiries/{inquiry_id}/close", data={"csrf_token": token})
    closed = partner.post(f"/partner/inquiries/{inquiry_id}/close",
                          data={"csrf_token": token}, headers=ZH)
    assert closed.status_code == 409
    assert f"询问 {inquiry_id} 的状态为 CLOSED" in closed.text


# -- the API's words --------------------------------------------------------------------------

def test_the_api_says_it_plainly_in_the_callers_language(world: World) -> None:
    path = f"/v1/programs/{world.program_id}/event-types"
    body = {"name": "Lead", "action_type": "lead"}
    english = world.brand("POST", path, 422, json=body)
    assert english["error"] == "invalid" and english["field"] == "action_type"
    assert english["message"] == ("action_type: use capital letters, digits and _, starting "
                                  "with a letter, e.g. SALE")
    assert english["errors"] == [{"field": "action_type", "message": english["message"][13:]}]
    zh = world.service.client.post(path, json=body, headers={
        "Authorization": f"Bearer {world.brand_key}", "Accept-Language": "zh-CN"}).json()
    assert zh["message"].startswith("action_type：请使用大写字母") and zh["field"] == "action_type"
    assert zh["errors"][0]["message"].startswith("请使用大写字母")
    # the services' refusals too, and a 404 names its field
    world.report(oid="DUP")
    headers = {"Authorization": f"Bearer {world.brand_key}", "Accept-Language": "zh"}
    dup = world.service.client.post("/v1/actions", json=world.action(oid="DUP"),
                                    headers=headers)
    assert dup.status_code == 409
    assert dup.json()["message"].startswith("oid：订单号 'DUP' 已被") and dup.json()[
        "field"] == "oid"
    gone = world.service.client.get("/v1/actions/999999", headers=headers).json()
    assert gone == {"error": "not_found", "message": "未找到操作"}
    english_dup = world.brand("POST", "/v1/actions", 409, json=world.action(oid="DUP"))
    assert english_dup["message"] == ("oid: oid 'DUP' is already used by an action of event "
                                      f"type {world.event_type_id}")


def test_every_api_4xx_is_error_message_field(world: World) -> None:
    client = world.service.client
    for response in (client.get("/v1/me"),
                     client.get("/v1/nope", headers={"Accept-Language": "zh"}),
                     client.post("/v1/actions", content=b"{", headers={
                         "Authorization": f"Bearer {world.brand_key}",
                         "Content-Type": "application/json"}),
                     client.delete("/v1/brands", headers={"Accept-Language": "zh"})):
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"].startswith("application/json")
        got = response.json()
        assert {"error", "message"} <= set(got) and set(got) <= {
            "error", "message", "field", "errors", "rule", "problems", "allowed"}, got
    assert client.get("/v1/nope", headers={"Accept-Language": "zh"}).json()["message"] == "未找到"


# -- Post/Redirect/Get ------------------------------------------------------------------------

def test_resend_then_reload_resends_nothing(world: World, receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb?id={{ActionId}}")
    world.report()
    receiver.wait_for(1)
    delivery_id = world.partner("GET", "/v1/deliveries", 200)["items"][0]["id"]
    wait_until(lambda: count(world, delivery_attempt) == 1)
    client = browser(world)
    token = sign_in(client, world.partner_key)
    sent = client.post(f"/partner/deliveries/{delivery_id}/resend",
                       data={"csrf_token": token}, follow_redirects=False)
    assert sent.status_code == 303
    assert sent.headers["location"] == f"/partner/deliveries/{delivery_id}"
    shown = client.get(sent.headers["location"])
    assert f"Delivery {delivery_id} queued again" in shown.text
    receiver.wait_for(2)
    wait_until(lambda: count(world, delivery_attempt) == 2)
    reloaded = client.get(sent.headers["location"])
    assert reloaded.status_code == 200 and "queued again" not in reloaded.text
    time.sleep(0.5)
    assert len(receiver.requests) == 2 and count(world, delivery_attempt) == 2
    # the form's address opened as a page: the app's page, with the way back; not JSON
    opened = client.get(f"/partner/deliveries/{delivery_id}/resend")
    assert opened.status_code == 405 and opened.headers["content-type"].startswith("text/html")
    assert f'href="/partner/deliveries/{delivery_id}"' in opened.text
    assert len(receiver.requests) == 2


def test_issue_key_then_reload_shows_no_key(world: World) -> None:
    client = browser(world)
    token = sign_in(client, ADMIN)
    sent = client.post("/operator/keys", data={"csrf_token": token, "account_type": "partner",
                                               "account_id": str(world.partner_id)},
                       follow_redirects=False)
    assert sent.status_code == 303 and sent.headers["location"] == "/operator#issued"
    with world.service.db.connect() as conn:  # waiting for its page: sealed, never plain
        waiting = "".join(f or "" for f in conn.execute(select(web_session.c.flash)).scalars())
    assert "pbk_" not in waiting and "enc1:" in waiting
    shown = client.get("/operator")
    key = re.search(r'<code id="issued-key">([^<]+)</code>', shown.text)
    assert key and key.group(1).startswith("pbk_")
    assert world.service.call("GET", "/v1/me", key.group(1), 200)["account_id"] == \
        world.partner_id
    again = client.get("/operator")
    assert key.group(1) not in again.text and 'id="issued-key"' not in again.text
    keys = [k for k in world.service.call("GET", "/v1/api-keys", ADMIN, 200)["items"]
            if k["account_type"] == "partner"]
    assert len(keys) == 2  # the world's key and this one: the reload issued none
    with world.service.db.connect() as conn:
        assert all(f is None for f in conn.execute(select(web_session.c.flash)).scalars())


def test_a_test_shows_its_result_once_with_the_form_as_tested(world: World,
                                                              receiver: Receiver) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    url = f"{receiver.url}/pb?id={{ActionId}}&t=unsaved"
    sent = client.post("/partner/event-notifications/action-lifecycle/test", data={
        "csrf_token": token, "url": url, "method": "GET", "body_format": "json",
        "enabled": "on", "header_name": ["X-Typed", ""], "header_value": ["typed-value", ""]},
        follow_redirects=False, headers=ZH)
    assert sent.status_code == 303
    page = client.get("/partner/event-notifications/action-lifecycle", headers=ZH)
    assert 'id="test-result"' in page.text and "已送达：您的服务器返回了 200。" in page.text
    assert value_of(page.text, "url") == url  # the form as tested, though never saved
    assert 'value="X-Typed"' in page.text and 'value="typed-value"' in page.text
    assert receiver.wait_for(1)[0].query["t"] == "unsaved"
    again = client.get("/partner/event-notifications/action-lifecycle")
    assert 'id="test-result"' not in again.text and value_of(again.text, "url") == ""
    time.sleep(0.3)
    assert len(receiver.requests) == 1


def test_save_redirects_and_its_notice_shows_once(world: World) -> None:
    client = browser(world)
    token = sign_in(client, world.partner_key)
    sent = client.post("/partner/event-notifications/action-lifecycle", data={
        "csrf_token": token, "url": "https://example.com/pb?id={ActionId}", "method": "GET",
        "body_format": "json", "enabled": "on"}, follow_redirects=False)
    assert sent.status_code == 303
    assert "Saved." in client.get(sent.headers["location"]).text
    assert "Saved." not in client.get(sent.headers["location"]).text


def test_every_form_that_changes_something_redirects(world: World) -> None:
    brand = browser(world)
    token = sign_in(brand, world.brand_key)
    p, e = world.program_id, world.event_type_id
    for path, data in (
            ("/brand/programs", {"name": "Acme EU", "currency": "EUR"}),
            (f"/brand/programs/{p}/event-types", {"name": "Lead", "action_type": "LEAD"}),
            (f"/brand/programs/{p}/contracts", {
                "partner_id": str(world.partner_id), "event_type_ids": str(e),
                "locking_rule": "days_after_event", "locking_days": "30",
                "clearing_rule": "days_after_locking", "clearing_days": "20"}),
            ("/brand/actions", {"event_type": f"{p}:{e}", "partner_id": str(world.partner_id),
                                "oid": "PRG-1", "amount": "10.00", "payout": "1.00"}),
            (f"/brand/catalog/{p}/items", {"item_id": "SKU-1", "name": "Shoe"}),
            ("/brand/postbacks", {"partner_id": str(world.partner_id), "event_type_id": str(e),
                                  "url": "https://example.com/b", "method": "GET"})):
        sent = brand.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
        assert sent.status_code == 303, (path, sent.text)
        assert not sent.headers["location"].startswith(path + "/"), path
        shown = brand.get(sent.headers["location"])
        assert shown.status_code == 200 and 'class="notice"' in shown.text, path
        assert 'class="notice"' not in brand.get(sent.headers["location"]).text, path
    action_id = world.brand("GET", "/v1/actions", 200)["items"][0]["id"]
    sent = brand.post(f"/brand/actions/{action_id}/approve", data={"csrf_token": token},
                      follow_redirects=False)
    assert sent.status_code == 303
    upload = brand.post("/brand/catalog/upload", data={"csrf_token": token, "program_id": str(p)},
                        files={"file": ("c.csv", b"item_id,name\nSKU-2,Boot\n")},
                        follow_redirects=False)
    assert upload.status_code == 303
    assert upload.headers["location"] == f"/brand/catalog?program_id={p}"


# -- the app's own error page -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["/partner/nope", "/brand/actions/1", "/nowhere",
                                  "/partner/deliveries/abc",
                                  "/partner/deliveries/99999999999999999999999",
                                  "/partner/event-notifications/scoped/0/test"])
def test_a_browser_gets_the_apps_error_page(world: World, path: str) -> None:
    client = browser(world)
    sign_in(client, world.partner_key)
    for headers, title, back in (({}, "Not found", "Back to the start page"),
                                 (ZH, "未找到", "返回首页")):
        page = client.get(path, headers=headers)
        assert page.status_code == 404, (path, page.text[:300])
        assert page.headers["content-type"].startswith("text/html")
        assert f"<h1>{title}</h1>" in page.text and back in page.text
        assert 'href="/partner/event-notifications"' in page.text  # still signed in: the menu
    anonymous = TestClient(world.service.client.app, base_url="http://testserver")
    assert anonymous.get("/nowhere").headers["content-type"].startswith("text/html")
    api = client.get("/v1/nowhere")
    assert api.status_code == 404 and api.json()["error"] == "not_found"
    assert client.get("/v1/deliveries/abc", headers={
        "Authorization": f"Bearer {world.partner_key}"}).json()["field"] == "delivery_id"


def test_the_sign_in_page_still_works_after_a_stale_cookie(world: World) -> None:
    client = browser(world)
    client.cookies.set("pb_session", "stale")
    page = client.get("/signin")
    assert page.status_code == 200 and csrf(page.text)
