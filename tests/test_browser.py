"""The web app in a real browser (headless chromium): a partner sets up, tests and watches
postbacks; the operator issues a key; the page in Chinese; labels and keyboard use.

Screenshots land in the test's folder, or in docs/screenshots with ``make screenshots``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import LiveServer, chromium, shots_dir
from tests.conftest import ADMIN, IN_CI, World, build_world
from tests.receiver import Receiver

playwright_sync = pytest.importorskip("playwright.sync_api")

UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea')]
  .filter(el => !el.closest('[hidden]') && el.labels.length === 0
                && !el.getAttribute('aria-label'))
  .map(el => el.outerHTML)"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser for this module; Playwright's sync API keeps an event loop running in
    this thread while it is open, so it must be closed before other modules'
    ``asyncio.run``."""
    path = chromium()
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with playwright_sync.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def site(make_service: Any) -> Iterator[tuple[LiveServer, World]]:
    service = make_service()
    server = LiveServer(service.client.app)
    try:
        yield server, build_world(service)
    finally:
        server.stop()


def labelled(page: Any) -> None:
    """Every form field on the page has a label (or an aria-label)."""
    assert page.evaluate(UNLABELLED) == []


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url)
    assert "/signin" in page.url
    labelled(page)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_partner_sets_up_tests_and_resends_a_postback(
        browser: Any, site: tuple[LiveServer, World], receiver: Receiver,
        tmp_path: Path) -> None:
    server, world = site
    shots = shots_dir(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    sign_in(page, f"{server.url}/partner/event-notifications", world.partner_key)
    page.wait_for_url(re.compile(r"/partner/event-notifications$"))
    assert page.locator("h1").inner_text() == "Event Notifications"
    page.screenshot(path=str(shots / "event-notifications.png"), full_page=True)

    page.get_by_role("link", name="Edit Action Life Cycle Events").click()
    labelled(page)
    url = page.get_by_label("URL", exact=True)
    url.fill(f"{receiver.url}/pb?id=")
    url.press("End")
    # the picker: search, then insert at the cursor (by mouse, then by keyboard)
    page.get_by_label("Search tokens").fill("actionid")
    page.get_by_role("button", name="{ActionId}", exact=True).click()
    url.press("End")
    url.type("&sub=")
    page.get_by_label("Search tokens").fill("subid1")
    page.get_by_role("button", name="{SubId1}", exact=True).focus()
    page.keyboard.press("Enter")
    assert url.input_value() == f"{receiver.url}/pb?id={{ActionId}}&sub={{SubId1}}"
    # a mistyped token: the live preview and Save both say where and what is meant
    url.press("End")
    url.type("&pay={Payuot}")
    preview = page.locator("#preview-request")
    playwright_sync.expect(preview).to_contain_text("unknown token {Payuot}")
    page.get_by_role("button", name="Save").click()
    playwright_sync.expect(page.locator("#url-marked mark")).to_have_text("{Payuot}")
    playwright_sync.expect(page.locator(".problems")).to_contain_text("{Payout}")
    page.screenshot(path=str(shots / "unknown-token.png"), full_page=True)

    url = page.get_by_label("URL", exact=True)
    url.fill(f"{receiver.url}/pb?id={{ActionId}}&sub={{SubId1}}&pay={{Payout}}")
    playwright_sync.expect(preview).to_contain_text("pay=27.75")  # the sample payout
    page.get_by_role("button", name="Save").click()
    playwright_sync.expect(page.locator(".notice")).to_have_text("Saved.")
    page.screenshot(path=str(shots / "edit-postback.png"), full_page=True)

    page.get_by_role("button", name="Test").click()
    result = page.locator("#test-result")
    playwright_sync.expect(result).to_contain_text("HTTP 200")
    playwright_sync.expect(page.locator("#sent-request")).to_contain_text("pay=27.75")
    tested = receiver.wait_for(1)[0]
    assert tested.query["pay"] == "27.75"
    page.screenshot(path=str(shots / "test-result.png"), full_page=True)

    # the brand reports an action on its Actions page ...
    brand = browser.new_context(locale="en-US").new_page()
    sign_in(brand, f"{server.url}/brand/actions", world.brand_key)
    brand.get_by_label("Order ID").fill("ORD-42")
    brand.get_by_label("Amount").fill("100.00")
    brand.get_by_label("Payout").fill("7.50")
    brand.get_by_label("SubId1").fill("member-42")
    brand.get_by_role("button", name="Report", exact=True).click()
    playwright_sync.expect(brand.locator(".notice")).to_contain_text("reported")
    action = {"id": int(brand.locator("#brand-actions tbody tr td").first.inner_text())}
    brand.context.close()
    receiver.wait_for(2)
    # ... and the partner finds its delivery, opens it and resends it
    page.get_by_role("link", name="Deliveries").click()
    labelled(page)
    page.get_by_label("Action ID").fill(str(action["id"]))
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#deliveries tbody tr")
    playwright_sync.expect(rows).to_have_count(1)
    playwright_sync.expect(rows.first).to_contain_text("succeeded")
    page.screenshot(path=str(shots / "deliveries.png"), full_page=True)
    rows.first.get_by_role("link").click()
    playwright_sync.expect(page.locator(".attempt-response").first).to_contain_text("HTTP 200")
    page.get_by_role("button", name="Resend").click()
    playwright_sync.expect(page.locator(".notice")).to_contain_text("queued again")
    again = receiver.wait_for(3)
    assert again[2].query == again[1].query == {"id": str(action["id"]), "sub": "member-42",
                                                "pay": "7.50"}
    assert again[2].header("webhook-id") == again[1].header("webhook-id")
    page.screenshot(path=str(shots / "delivery.png"), full_page=True)
    context.close()


def test_event_notifications_in_chinese(browser: Any, site: tuple[LiveServer, World],
                                        tmp_path: Path) -> None:
    server, world = site
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{server.url}/signin")
    page.get_by_label("API 密钥").fill(world.partner_key)
    page.get_by_role("button", name="登录").click()
    playwright_sync.expect(page.locator("h1")).to_have_text("事件通知")
    row = page.locator('tr[data-type="action-lifecycle"]')
    playwright_sync.expect(row).to_contain_text("操作生命周期事件")
    playwright_sync.expect(row).to_contain_text("未设置")
    page.screenshot(path=str(shots_dir(tmp_path) / "event-notifications-zh.png"),
                    full_page=True)
    # the switch in the page turns it back to English, and the choice is kept
    page.get_by_role("link", name="English").click()
    playwright_sync.expect(page.locator("h1")).to_have_text("Event Notifications")
    page.reload()
    playwright_sync.expect(page.locator("h1")).to_have_text("Event Notifications")
    context.close()


def test_operator_issues_a_key_that_signs_in(browser: Any, site: tuple[LiveServer, World],
                                             tmp_path: Path) -> None:
    server, _ = site
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    sign_in(page, f"{server.url}/operator", ADMIN)
    playwright_sync.expect(page.locator("h1")).to_have_text("Accounts")
    labelled(page)
    page.get_by_role("button", name="Issue a key for Cashback World").click()
    key = page.locator("#issued-key").inner_text()
    assert key.startswith("pbk_")
    page.screenshot(path=str(shots_dir(tmp_path) / "operator-accounts.png"), full_page=True)
    page.goto(f"{server.url}/operator")  # shown once: never again
    assert key not in page.content()

    partner = browser.new_context(locale="en-US").new_page()
    sign_in(partner, f"{server.url}/", key)
    playwright_sync.expect(partner.locator("h1")).to_have_text("Event Notifications")
    partner.context.close()
    context.close()


def test_brand_uploads_a_catalog_file(browser: Any, site: tuple[LiveServer, World],
                                      receiver: Receiver, tmp_path: Path) -> None:
    server, world = site
    world.partner("PUT", "/v1/event-notifications/product-data-change", 200,
                  json={"url": f"{receiver.url}/p?item={{CatalogItemId}}&n={{Name}}"})
    rows = ["item_id,name,current_price,currency,stock_availability"]
    rows += [f"SKU-{i},Shoe {i},{10 + i}.00,USD,InStock" for i in range(300)]
    upload = tmp_path / "catalog.csv"
    upload.write_text("\n".join(rows) + "\n")
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, f"{server.url}/brand/catalog", world.brand_key)
    playwright_sync.expect(page.locator("h1")).to_have_text("Catalog")
    labelled(page)
    page.get_by_label("CSV or JSON file").set_input_files(str(upload))
    page.get_by_role("button", name="Upload", exact=True).click()
    playwright_sync.expect(page.locator("#catalog-notice")).to_have_text(
        "300 rows read: 300 added, 0 updated, 0 removed, 0 unchanged.")
    playwright_sync.expect(page.locator("#catalog-items")).to_contain_text("Shoe 0")
    page.screenshot(path=str(shots_dir(tmp_path) / "brand-catalog.png"))
    got = receiver.wait_for(300)
    assert {r.query["item"] for r in got} == {f"SKU-{i}" for i in range(300)}
    # a bad row is named, and nothing of the file is kept
    upload.write_text("item_id,name,current_price\nSKU-1,Shoe,12.00\nSKU-2,,oops\n")
    page.get_by_label("CSV or JSON file").set_input_files(str(upload))
    page.get_by_role("button", name="Upload", exact=True).click()
    playwright_sync.expect(page.locator("#catalog-error")).to_contain_text("row 2")
    assert world.brand("GET", f"/v1/programs/{world.program_id}/catalog/items/SKU-1",
                       200)["current_price"] == "11.00"
    context.close()


def test_every_page_has_labels_and_works_by_keyboard(browser: Any,
                                                     site: tuple[LiveServer, World]) -> None:
    """Each main page: every field labelled; the first form control reachable with Tab."""
    server, world = site
    pages = {world.partner_key: ["/partner/event-notifications",
                                 "/partner/event-notifications/action-lifecycle",
                                 "/partner/deliveries", "/partner/actions",
                                 "/partner/inquiries"],
             world.brand_key: ["/brand", "/brand/actions", "/brand/catalog",
                               "/brand/inquiries", "/brand/postbacks"],
             ADMIN: ["/operator", "/operator/health"]}
    for key, paths in pages.items():
        context = browser.new_context(locale="en-US")
        page = context.new_page()
        sign_in(page, f"{server.url}{paths[0]}", key)
        for path in paths:
            page.goto(f"{server.url}{path}")
            assert page.locator("h1").count() == 1, path
            labelled(page)
            page.keyboard.press("Tab")  # the skip link comes first, and goes to the content
            assert page.evaluate("document.activeElement.className") == "skip", path
        context.close()


def test_no_page_without_a_session_and_no_other_accounts_data(
        browser: Any, site: tuple[LiveServer, World], receiver: Receiver) -> None:
    server, world = site
    world.subscribe(f"{receiver.url}/pb?id={{ActionId}}")
    world.report()
    receiver.wait_for(1)
    mine = world.partner("GET", "/v1/deliveries", 200)["items"][0]["id"]
    stranger = browser.new_context(locale="en-US").new_page()
    for path in ("/partner/event-notifications", f"/partner/deliveries/{mine}", "/brand",
                 "/operator/health"):
        stranger.goto(f"{server.url}{path}")
        playwright_sync.expect(stranger.locator("h1")).to_have_text("Sign in")
    other = world.service.call("POST", "/v1/partners", ADMIN, 201,
                               json={"name": "Other Partner", "partner_type": "cashback"})
    other_key = world.service.call("POST", "/v1/api-keys", ADMIN, 201, json={
        "account_type": "partner", "account_id": other["id"]})["key"]
    sign_in(stranger, f"{server.url}/partner/deliveries", other_key)
    playwright_sync.expect(stranger.locator("#deliveries")).to_contain_text(
        "No deliveries match.")
    stranger.goto(f"{server.url}/partner/deliveries/{mine}")
    playwright_sync.expect(stranger.locator("h1")).to_have_text("Not found")
    stranger.goto(f"{server.url}/brand")
    playwright_sync.expect(stranger.locator("h1")).to_have_text("Not allowed")
    stranger.context.close()


@pytest.mark.parametrize("lang", ["en-US", "zh-CN"])
def test_a_paused_postback_shows_what_it_holds_and_discards_it(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path, lang: str) -> None:
    """Held deliveries are named on both pages, in the partner's language; Discard is a
    POST that lands back on the list (reload repeats nothing)."""
    server, world = site
    shots = shots_dir(tmp_path)
    body = {"url": "http://127.0.0.1:9/pb?e={EventId}", "method": "GET",
            "body_format": "json", "body": "", "enabled": True}
    world.partner("PUT", "/v1/event-notifications/action-lifecycle", 200, json=body)
    if world.service.engine is not None:
        world.service.engine.stop()  # keep them queued
    world.report()
    world.report()
    world.partner("PUT", "/v1/event-notifications/action-lifecycle", 200,
                  json={**body, "enabled": False})
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang)
    page = context.new_page()
    sign_in_as = "API key" if lang == "en-US" else "API 密钥"
    page.goto(f"{server.url}/partner/event-notifications")
    page.get_by_label(sign_in_as).fill(world.partner_key)
    page.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/partner/event-notifications$"))
    held = page.locator("tr[data-type=action-lifecycle] .held-count")
    expected = ("2 deliveries held until it is on again" if lang == "en-US"
                else "2 个投递已暂缓，待重新开启后发送")
    playwright_sync.expect(held).to_contain_text(expected)
    page.screenshot(path=str(shots / f"held-{lang}.png"), full_page=True)

    held.get_by_role("link").click()
    page.wait_for_url(re.compile(r"status=held"))
    rows = page.locator("table tbody tr")
    playwright_sync.expect(rows).to_have_count(2)
    rows.first.locator("a").first.click()
    notice = page.locator("#held-reason")
    playwright_sync.expect(notice).to_contain_text(
        "you turned this postback off" if lang == "en-US" else "您已关闭此回传")
    assert page.get_by_role("button", name="Resend").count() == 0
    page.screenshot(path=str(shots / f"held-delivery-{lang}.png"), full_page=True)

    page.goto(f"{server.url}/partner/event-notifications")
    page.locator("tr[data-type=action-lifecycle] .held-count button").click()
    page.wait_for_url(re.compile(r"/partner/event-notifications$"))
    assert page.locator("tr[data-type=action-lifecycle] .held-count").count() == 0
    statuses = {d["status"] for d in world.partner("GET", "/v1/deliveries", 200)["items"]}
    assert statuses == {"failed"}
    context.close()


def _inquiry(world: World, oid: str) -> int:
    made: dict[str, Any] = world.partner("POST", "/v1/inquiries", 201, json={
        "program_id": world.program_id, "inquiry_type": "UNTRACKED", "oid": oid,
        "transaction_date": "2026-11-20T10:00:00+00:00", "transaction_amount": "80.00",
        "expected_payout": "4.00"})
    return int(made["id"])


def test_brand_accepts_an_inquiry_with_an_event_type(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path) -> None:
    """The Accept form names the event type of the action it creates, chosen at first as
    the program's auto-approval event type; either choice creates the action."""
    server, world = site
    bonus = world.brand("POST", f"/v1/programs/{world.program_id}/event-types", 201,
                        json={"name": "Inquiry Sale", "action_type": "SALE"})["id"]
    world.brand("PUT", f"/v1/programs/{world.program_id}/contracts/{world.partner_id}", 200,
                json={"event_type_ids": [world.event_type_id, bonus],
                      "locking": {"rule": "days_after_event", "days": 30},
                      "clearing": {"rule": "days_after_locking", "days": 20}})
    world.brand("PUT", f"/v1/programs/{world.program_id}/inquiry-settings", 200,
                json={"auto_approval": {"mode": "off", "event_type_id": bonus}})
    kept, picked = _inquiry(world, "MISSING-1"), _inquiry(world, "MISSING-2")
    for lang in ("zh-CN", "en-US"):  # the Chinese page first: a look, nothing changed
        context = browser.new_context(locale=lang, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{server.url}/brand/inquiries")
        page.locator("#api_key").fill(world.brand_key)
        page.locator("button[type=submit]").click()
        page.wait_for_url(re.compile(r"/brand/inquiries$"))
        labelled(page)
        page.screenshot(path=str(shots_dir(tmp_path) / f"brand-inquiries-{lang}.png"),
                        full_page=True)
        if lang == "zh-CN":
            context.close()
    row = page.locator("#brand-inquiries tbody tr", has_text="MISSING-1")
    choice = row.get_by_label("Event type of the action")
    assert choice.locator("option:checked").inner_text() == f"Inquiry Sale (#{bonus})"
    row.get_by_role("button", name="Accept (creates the action)").click()
    row = page.locator("#brand-inquiries tbody tr", has_text="MISSING-1")
    playwright_sync.expect(row).to_contain_text("RESOLVED · VALID")
    other = page.locator("#brand-inquiries tbody tr", has_text="MISSING-2")
    other.get_by_label("Event type of the action").select_option(str(world.event_type_id))
    other.get_by_role("button", name="Accept (creates the action)").click()
    playwright_sync.expect(page.locator("#brand-inquiries tbody tr", has_text="MISSING-2")
                           ).to_contain_text("RESOLVED · VALID")
    assert page.locator(".error").count() == 0
    for inquiry_id, event_type in ((kept, bonus), (picked, world.event_type_id)):
        got = world.partner("GET", f"/v1/inquiries/{inquiry_id}", 200)
        assert (got["state"], got["resolution_status"]) == ("RESOLVED", "VALID")
        action = world.brand("GET", f"/v1/actions/{got['action_id']}", 200)
        assert (action["event_type_id"], action["payout"]) == (event_type, "4.00")
    context.close()


def test_token_search_shows_only_the_matching_tokens(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path) -> None:
    server, world = site
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, f"{server.url}/partner/event-notifications/action-lifecycle",
            world.partner_key)
    page.wait_for_url(re.compile(r"/action-lifecycle$"))
    tokens = page.locator("#token-list button.token")
    before = [b.inner_text() for b in tokens.all() if b.is_visible()]
    assert "{ActionId}" in before and "{SubId1}" in before
    page.get_by_label("Search tokens").fill("subid")
    playwright_sync.expect(page.get_by_role("button", name="{ActionId}", exact=True)
                           ).to_be_hidden()
    after = [b.inner_text() for b in tokens.all() if b.is_visible()]
    assert 0 < len(after) < len(before)
    assert all("subid" in t.lower() for t in after), after
    page.screenshot(path=str(shots_dir(tmp_path) / "token-search.png"), full_page=True)
    page.get_by_label("Search tokens").fill("")
    playwright_sync.expect(tokens).to_have_count(len(before))
    assert len([b for b in tokens.all() if b.is_visible()]) == len(before)
    context.close()


def test_catalog_upload_goes_into_the_program_selected(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path) -> None:
    """With two programs, the one chosen beside Show (not yet shown) is the one named
    beside Upload and the one the file goes into."""
    server, world = site
    second = world.brand("POST", "/v1/programs", 201,
                         json={"name": "Acme Shoes EU", "currency": "EUR"})["id"]
    upload = tmp_path / "eu.csv"
    upload.write_text("item_id,name,current_price,currency\nEU-1,Boot,40.00,EUR\n"
                      "EU-2,Sandal,25.00,EUR\n")
    for lang in ("zh-CN", "en-US"):
        context = browser.new_context(locale=lang, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{server.url}/brand/catalog")
        page.locator("#api_key").fill(world.brand_key)
        page.locator("button[type=submit]").click()
        page.wait_for_url(re.compile(r"/brand/catalog$"))
        labelled(page)
        page.locator("#c-program").select_option(str(second))
        playwright_sync.expect(page.locator("#u-target")).to_contain_text("Acme Shoes EU")
        page.screenshot(path=str(shots_dir(tmp_path) / f"catalog-two-programs-{lang}.png"),
                        full_page=True)
        if lang == "zh-CN":
            context.close()
    assert page.get_by_label("Upload into program").locator("option:checked").inner_text() \
        == "Acme Shoes EU"
    page.get_by_label("CSV or JSON file").set_input_files(str(upload))
    page.get_by_role("button", name="Upload", exact=True).click()
    playwright_sync.expect(page.locator("#catalog-notice")).to_have_text(
        "2 rows read: 2 added, 0 updated, 0 removed, 0 unchanged.")
    playwright_sync.expect(page.locator("#catalog-items")).to_contain_text("Sandal")
    assert page.locator("#c-program option:checked").inner_text() == "Acme Shoes EU"
    items = world.brand("GET", f"/v1/programs/{second}/catalog/items", 200)["items"]
    assert sorted(i["item_id"] for i in items) == ["EU-1", "EU-2"]
    assert world.brand("GET", f"/v1/programs/{world.program_id}/catalog/items",
                       200)["items"] == []
    context.close()


def test_api_docs_render_the_operations_offline(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path) -> None:
    """/docs reads the service's OpenAPI 3.1 with assets served here, none from elsewhere."""
    server, _ = site
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(server.url) or r.url.startswith(
        "data:") else elsewhere.append(r.url))
    page.goto(f"{server.url}/docs")
    operation = page.locator(".opblock-post", has_text="/v1/actions").first
    # Swagger UI renders ~70 operations: on a busy 2-core machine that is seconds, not one
    playwright_sync.expect(operation).to_be_visible(timeout=30_000)
    playwright_sync.expect(operation.locator(".opblock-summary-method")).to_have_text("POST")
    assert page.locator(".errors-wrapper, .loading-container .errors").count() == 0
    page.screenshot(path=str(shots_dir(tmp_path) / "api-docs.png"))
    assert elsewhere == []
    context.close()
