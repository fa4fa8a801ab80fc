"""A broken body in a real browser: the live preview says where before Save, and Save keeps
what was typed with the problem marked beside the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import LiveServer, shots_dir
from tests.conftest import World
from tests.test_browser import browser, labelled, sign_in, site  # noqa: F401 (fixtures)

playwright_sync = pytest.importorskip("playwright.sync_api")


def test_the_preview_and_save_show_where_a_json_body_is_broken(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path) -> None:
    server, world = site
    page = browser.new_context(viewport={"width": 1280, "height": 900},
                               locale="en-US").new_page()
    sign_in(page, f"{server.url}/partner/event-notifications/action-lifecycle", world.partner_key)
    page.wait_for_url(re.compile(r"/partner/event-notifications/action-lifecycle$"))
    labelled(page)
    page.get_by_label("URL", exact=True).fill("http://127.0.0.1:9/pb")
    page.get_by_label("Method").select_option("POST")
    page.get_by_label("Body format").select_option("json")
    body = page.locator("textarea#body")
    typed = '{"id": "{ActionId}",\n "payout": {Payout},\n "sub": "x\\{SubId1}"}'
    body.fill(typed)
    preview = page.locator("#preview-request")
    playwright_sync.expect(preview).to_contain_text(
        "line 3, column 11: the backslash just before {SubId1} would let its value end the "
        "string; remove the backslash")
    page.get_by_role("button", name="Save").click()
    playwright_sync.expect(page.locator("#body-error")).to_contain_text("line 3, column 11")
    playwright_sync.expect(page.locator("#body-marked mark")).to_have_text("\\{SubId1}")
    assert page.locator("textarea#body").input_value() == typed
    page.screenshot(path=str(shots_dir(tmp_path) / "broken-body.png"), full_page=True)

    body = page.locator("textarea#body")
    body.fill('{"id": "{ActionId}",\n "payout": {Payout},\n "sub": "x{SubId1}"}')
    playwright_sync.expect(preview).to_contain_text('"sub": "xmember-8812"')
    page.get_by_role("button", name="Save").click()
    playwright_sync.expect(page.locator(".notice")).to_have_text("Saved.")
