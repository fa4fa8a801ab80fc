"""The Data Feeds screen in a real browser (headless chromium): a partner creates a daily
CSV feed, runs it, sees it delivered and downloads its file; the form shows the controls
that apply to what is chosen; the pages in Chinese; nothing wider than a 390 px phone.

Screenshots land in the test's folder, or in docs/screenshots with ``make screenshots``.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import LiveServer, shots_dir
from tests.conftest import World
from tests.test_browser import browser, labelled, site  # noqa: F401 (fixtures)
from tests.test_web_feeds import work

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect
SIGN_IN = {"en-US": ("API key", "Sign in"), "zh-CN": ("API 密钥", "登录")}
WIDER = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def signed_in(browser: Any, server: LiveServer, key: str, path: str, lang: str = "en-US",
              width: int = 1280) -> Any:
    page = browser.new_context(locale=lang, viewport={"width": width, "height": 900}
                               ).new_page()
    page.goto(f"{server.url}{path}")
    label, button = SIGN_IN[lang]
    page.get_by_label(label).fill(key)
    page.get_by_role("button", name=button).click()
    page.wait_for_url(re.compile(re.escape(path) + "$"))
    return page


def test_a_partner_creates_runs_and_downloads_a_daily_csv_feed(
        browser: Any, site: tuple[LiveServer, World], tmp_path: Path) -> None:
    server, world = site
    shots = shots_dir(tmp_path)
    page = signed_in(browser, server, world.partner_key, "/partner/feeds")
    expect(page.locator("h1")).to_have_text("Data Feeds")
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Data Feeds")
    page.get_by_role("link", name="New data feed").click()
    expect(page.locator("h1")).to_have_text("New data feed")
    labelled(page)
    # the form shows what applies to the choices: hourly has a minute, daily a time
    minute = page.get_by_label("Minute past the hour (hourly)")
    at = page.get_by_label("Time of day (daily, weekly, monthly)")
    expect(minute).to_be_hidden()
    expect(at).to_be_visible()
    page.get_by_label("Every", exact=True).select_option("hourly")
    expect(minute).to_be_visible()
    expect(at).to_be_hidden()
    page.get_by_label("Every", exact=True).select_option("daily")
    host = page.get_by_label("Host", exact=True)
    expect(host).to_be_hidden()
    page.get_by_label("Upload to my SFTP server").check()
    expect(host).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    page.get_by_label("Log in with a private key").check()
    expect(page.get_by_label("Password", exact=True)).to_be_hidden()
    page.get_by_label("Keep it here to download (for 30 days)").check()
    page.get_by_label("Name (optional)").fill("Daily books")
    at.fill("06:00")
    page.get_by_label("Time zone").select_option("Asia/Shanghai")
    page.get_by_label("Format").select_option("csv")
    assert page.get_by_label("ActionId").is_checked()
    page.screenshot(path=str(shots / "feed-new.png"), full_page=True)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".notice")).to_contain_text("created.")
    row = page.locator("#feeds tbody tr").first
    expect(row).to_contain_text("Daily at 06:00 (Asia/Shanghai)")
    expect(row).to_contain_text("Kept here for 30 days")
    expect(row).to_contain_text("Not run yet")
    feed_id = int(row.get_attribute("data-feed") or 0)

    world.report(oid="ORD-BROWSER-1", amount="55.00", payout="4.40")
    page.get_by_role("button", name=f"Run data feed {feed_id} now").click()
    page.wait_for_url(re.compile(rf"/partner/feeds/{feed_id}/runs$"))
    expect(page.locator(".notice")).to_contain_text("is queued")
    expect(page.locator("#runs tbody tr").first).to_contain_text("Queued")
    work(world.service)
    page.get_by_role("link", name="Reload").click()
    first = page.locator("#runs tbody tr").first
    expect(first).to_contain_text("Delivered")
    page.screenshot(path=str(shots / "feed-runs.png"), full_page=True)
    with page.expect_download() as downloaded:
        first.get_by_role("link", name=re.compile("Download the file of run")).click()
    data = Path(downloaded.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(data)))
    assert [(r["Oid"], r["Amount"], r["Payout"]) for r in rows] == [
        ("ORD-BROWSER-1", "55.00", "4.40")]
    page.get_by_role("link", name="Data Feeds").first.click()
    expect(page.locator("#feeds tbody tr").first).to_contain_text("Delivered")
    page.screenshot(path=str(shots / "feeds.png"), full_page=True)
    page.context.close()

    # in Chinese, and on a 390 px phone in both languages: nothing wider than the screen
    for lang, width in (("zh-CN", 1280), ("zh-CN", 390), ("en-US", 390)):
        page = signed_in(browser, server, world.partner_key, "/partner/feeds", lang, width)
        if lang == "zh-CN":
            expect(page.locator("h1")).to_have_text("数据源")
        for path, name in (("/partner/feeds", "feeds"), (f"/partner/feeds/{feed_id}", "edit"),
                           (f"/partner/feeds/{feed_id}/runs", "runs"),
                           (f"/partner/feeds/{feed_id}/delete", "delete")):
            page.goto(f"{server.url}{path}")
            labelled(page)
            assert page.evaluate(WIDER) <= 0, (lang, width, path)
            page.screenshot(path=str(shots / f"feed-{name}-{lang}-{width}.png"),
                            full_page=True)
        page.context.close()
