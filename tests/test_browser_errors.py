"""Errors in words, forms that keep what was typed, Post/Redirect/Get (#12 item 6), in a
real browser (headless chromium): the plain message beside the field in English and in
Chinese with what was typed still there, a duplicate order id that keeps the form, Resend
and Issue key that a reload does not repeat, the app's own page for an unknown address.

Screenshots land in the test's folder (``POSTBACK_SCREENSHOTS`` to keep them elsewhere).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import LiveServer, shots_dir
from tests.conftest import ADMIN, World
from tests.receiver import Receiver
from tests.test_browser import browser, site  # noqa: F401 (fixtures)

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect
SIGN_IN = {"en-US": ("API key", "Sign in"), "zh-CN": ("API 密钥", "登录")}


def signed_in(browser: Any, server: LiveServer, key: str, path: str,
              lang: str = "en-US") -> Any:
    page = browser.new_context(locale=lang, viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{server.url}{path}")
    label, button = SIGN_IN[lang]
    page.get_by_label(label).fill(key)
    page.get_by_role("button", name=button).click()
    page.wait_for_url(re.compile(re.escape(path) + "$"))
    return page


@pytest.mark.parametrize(("lang", "says"), [
    ("en-US", "Action type: use capital letters, digits and _, starting with a letter, "
              "e.g. SALE"),
    ("zh-CN", "操作类型：请使用大写字母、数字和 _，并以字母开头，例如 SALE"),
])
def test_a_lower_case_action_type_is_said_plainly_beside_the_field(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path, lang: str,
        says: str) -> None:
    server, world = site
    page = signed_in(browser, server, world.brand_key, "/brand", lang)
    program = world.program_id
    page.locator(f"#et-name-{program}").fill("Lead form")
    page.locator(f"#et-type-{program}").fill("lead")
    page.locator(f"#event-type-form-{program} button[type=submit]").click()
    beside = page.locator(f"#et-type-{program}-error")
    expect(beside).to_have_text(says)
    field = page.locator(f"#et-type-{program}")
    expect(field).to_have_value("lead")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_attribute("aria-describedby", f"et-type-{program}-error")
    expect(page.locator(f"#et-name-{program}")).to_have_value("Lead form")
    assert "should match" not in page.content() and "^[A-Z]" not in page.content()
    page.screenshot(path=str(shots_dir(tmp_path) / f"action-type-error-{lang}.png"),
                    full_page=True)
    # fixed as the message says, it is added, and a reload adds nothing more
    field.fill("LEAD")
    page.locator(f"#event-type-form-{program} button[type=submit]").click()
    expect(page.locator(".notice")).to_be_visible()
    page.reload()
    expect(page.locator(".notice")).to_have_count(0)
    types = world.brand("GET", f"/v1/programs/{program}", 200)["event_types"]
    assert [t["action_type"] for t in types] == ["SALE", "LEAD"]
    page.context.close()


def test_a_duplicate_order_id_keeps_the_form(browser: Any, site: tuple[LiveServer, World],
                                            tmp_path: Path) -> None:
    server, world = site
    page = signed_in(browser, server, world.brand_key, "/brand/actions")
    for amount in ("100.00", "55.10"):
        if not page.locator("#r-oid").is_visible():  # folded once there are actions
            page.get_by_text("Report an action").click()
        form = page.locator("#report-form")
        form.get_by_label("Order ID").fill("ORD-7")
        form.get_by_label("Amount", exact=True).fill(amount)
        form.get_by_label("Payout", exact=True).fill("4.40")
        form.get_by_label("SubId1").fill("member-7")
        page.get_by_role("button", name="Report", exact=True).click()
        if amount == "100.00":
            expect(page.locator(".notice")).to_contain_text("reported")
            assert page.url.endswith("/brand/actions")
    expect(page.locator("#r-oid-error")).to_contain_text(
        "Order ID: 'ORD-7' is already used by an action of event type")
    form = page.locator("#report-form")
    for label, typed in (("Order ID", "ORD-7"), ("Amount", "55.10"), ("Payout", "4.40"),
                         ("SubId1", "member-7")):
        expect(form.get_by_label(label, exact=True)).to_have_value(typed)
    page.screenshot(path=str(shots_dir(tmp_path) / "duplicate-order-id.png"), full_page=True)
    assert [a["oid"] for a in world.brand("GET", "/v1/actions", 200)["items"]] == ["ORD-7"]
    page.context.close()


def test_resend_then_reload_does_not_resend(browser: Any, site: tuple[LiveServer, World],
                                           receiver: Receiver, tmp_path: Path) -> None:
    server, world = site
    world.subscribe(f"{receiver.url}/pb?id={{ActionId}}")
    world.report()
    receiver.wait_for(1)
    delivery_id = world.partner("GET", "/v1/deliveries", 200)["items"][0]["id"]
    page = signed_in(browser, server, world.partner_key, f"/partner/deliveries/{delivery_id}")
    expect(page.locator("h2", has_text="Attempts")).to_contain_text("(1)")
    page.get_by_role("button", name="Resend").click()
    expect(page.locator(".notice")).to_have_text(
        f"Delivery {delivery_id} queued again: it is sent now, with the same event id.")
    assert page.url == f"{server.url}/partner/deliveries/{delivery_id}"  # not the POST's
    receiver.wait_for(2)
    page.screenshot(path=str(shots_dir(tmp_path) / "resent.png"), full_page=True)
    page.reload()
    expect(page.locator(".notice")).to_have_count(0)
    expect(page.locator("h2", has_text="Attempts")).to_contain_text("(2)")
    page.wait_for_timeout(500)
    assert len(receiver.requests) == 2
    got = world.partner("GET", f"/v1/deliveries/{delivery_id}", 200)
    assert len(got["attempts"]) == 2
    page.context.close()


def test_issue_key_then_reload_shows_no_key(browser: Any, site: tuple[LiveServer, World],
                                           tmp_path: Path) -> None:
    server, world = site
    page = signed_in(browser, server, ADMIN, "/operator")
    page.get_by_role("button", name="Issue a key for Cashback World").click()
    key = page.locator("#issued-key").inner_text()
    assert key.startswith("pbk_")
    assert page.url.endswith("/operator#issued")
    page.screenshot(path=str(shots_dir(tmp_path) / "issued-key.png"), full_page=True)
    page.reload()
    expect(page.locator("h1")).to_have_text("Accounts")
    expect(page.locator("#issued-key")).to_have_count(0)
    assert key not in page.content()
    partners = [k for k in world.service.call("GET", "/v1/api-keys", ADMIN, 200)["items"]
                if k["account_type"] == "partner"]
    assert len(partners) == 2  # the world's and the one issued: the reload issued none
    page.context.close()


def test_a_test_result_shows_once(browser: Any, site: tuple[LiveServer, World],
                                  receiver: Receiver, tmp_path: Path) -> None:
    server, world = site
    page = signed_in(browser, server, world.partner_key,
                     "/partner/event-notifications/action-lifecycle", "zh-CN")
    page.locator("#url").fill(f"{receiver.url}/pb?id={{ActionId}}")
    page.get_by_role("button", name="测试", exact=True).click()
    expect(page.locator("#test-result .diagnosis")).to_have_text("已送达：您的服务器返回了 200。")
    expect(page.locator("#url")).to_have_value(f"{receiver.url}/pb?id={{ActionId}}")
    assert "/test" not in page.url
    page.screenshot(path=str(shots_dir(tmp_path) / "test-result-zh.png"), full_page=True)
    page.reload()
    expect(page.locator("#test-result")).to_have_count(0)
    page.wait_for_timeout(300)
    assert len(receiver.requests) == 1
    page.context.close()


@pytest.mark.parametrize(("lang", "title", "back"), [
    ("en-US", "Not found", "Go to the page above"), ("zh-CN", "未找到", "前往上一级页面")])
def test_an_unknown_page_is_the_apps_error_page(browser: Any, site: tuple[LiveServer, World],
                                                tmp_path: Path, lang: str, title: str,
                                                back: str) -> None:
    server, world = site
    page = signed_in(browser, server, world.partner_key, "/partner/deliveries", lang)
    for path in ("/partner/deliveries/no-such-one", "/partner/deliveries/4242"):
        response = page.goto(f"{server.url}{path}")
        assert response is not None and response.status == 404
        expect(page.locator("h1")).to_have_text(title)
        assert '{"error"' not in page.content()  # never the API's JSON
    page.screenshot(path=str(shots_dir(tmp_path) / f"not-found-{lang}.png"), full_page=True)
    page.get_by_role("link", name=back).click()
    page.wait_for_url(re.compile(r"/partner/deliveries$"))
    page.goto(f"{server.url}/nowhere/at/all")
    expect(page.locator("h1")).to_have_text(title)
    # a form's address opened as a page: the app's page too, leading back to the form's page
    response = page.goto(f"{server.url}/partner/deliveries/recover")
    assert response is not None and response.status in (404, 405)
    assert '{"error"' not in page.content()
    page.context.close()
