"""The Data Feeds screen over HTTP (no browser), on SQLite and PostgreSQL: a feed made with
every control, a refused form shown again as typed with each problem beside its field, a
secret kept when the edit form leaves it empty (and never shown), Run now and the runs
page, the download of a hosted file with the session, Test connection, another partner's
feed as a 404 page, delete after its confirmation. The browser walk is in
``test_browser_feeds.py``."""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from postback.services.feed_runs import run_feeds
from tests.conftest import ADMIN, Service, World, build_world
from tests.feed_servers import (  # noqa: F401
    SftpServer,
    SmtpServer,
    make_sftp_server,
    sftp_server,
    smtp_server,
)
from tests.test_updates_feed import settle
from tests.test_web import browser, sign_in


@pytest.fixture
def w(make_service: Callable[..., Service], smtp_server: SmtpServer) -> World:
    """The API and web app without a delivery engine (feeds need none), with a mail relay
    so that every destination can be chosen."""
    return build_world(make_service(start_engine=False, smtp_host=smtp_server.host,
                                    smtp_port=smtp_server.port, smtp_tls="none",
                                    smtp_from="Feeds <feeds@postback.test>",
                                    destination_connect_timeout=10.0,
                                    destination_idle_timeout=15.0))


def work(service: Service) -> None:
    """What the scheduler does: make due runs and work them."""
    settle(service)
    run_feeds(service.db, service.settings, lease_seconds=30.0, retry_schedule=(0.0,))


def errors_of(page: str) -> dict[str, str]:
    """{element id: message} of each problem shown beside its field."""
    return {m[0]: html.unescape(m[1]) for m in re.findall(
        r'<p class="error field-error" id="([^"]+)-error" role="alert">(.*?)</p>', page)}


def value_of(page: str, name: str) -> str | None:
    found = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


def base_form(token: str, **over: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf_token": token, "name": "", "content": "actions", "program_id": "",
        "every": "daily", "minute": "0", "at": "06:00", "weekday": "monday",
        "month_day": "1", "time_zone": "Asia/Shanghai", "window": "since_last_run",
        "window_days": "7", "format": "csv", "header": "on",
        "columns": ["ActionId", "Oid", "Status", "Amount", "Payout", "Sequence"],
        "columns_catalog": ["CatalogItemId", "Name"], "kind": "hosted",
        "sftp_host": "", "sftp_port": "22", "sftp_username": "", "sftp_auth": "password",
        "sftp_password": "", "sftp_private_key": "", "sftp_directory": ".",
        "sftp_host_key": "", "email_to": "", "email_attach": "attach", "enabled": "on"}
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def signed_in(w: World) -> tuple[TestClient, str]:
    client = browser(w)
    return client, sign_in(client, w.partner_key)


def feeds_of(w: World) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = w.partner("GET", "/v1/feeds", 200)["items"]
    return items


def test_the_form_offers_what_a_cashback_site_reconciles_by(w: World) -> None:
    client, _ = signed_in(w)
    page = client.get("/partner/feeds/new").text
    ticked = re.findall(r'name="columns" value="(\w+)" checked', page)
    assert ticked == ["ActionId", "Oid", "Status", "Amount", "Payout", "Currency",
                      "EventDate", "SubId1", "Trigger", "Sequence", "ChangeId"]
    assert "EventId" not in re.findall(r'name="columns" value="(\w+)"', page)
    assert "Partner commission" in page  # Payout's meaning, from the token registry
    assert '<option value="' + str(w.program_id) + '" >Acme Shoes US</option>' in page
    assert "<option selected>UTC</option>" in page and "<option >Asia/Shanghai</option>" in page
    # in Chinese the zone chosen at first is China's
    client.cookies.set("pb_lang", "zh")
    zh = client.get("/partner/feeds/new").text
    assert "<option selected>Asia/Shanghai</option>" in zh and "新建数据源" in zh
    assert client.get("/partner/feeds").text.count('href="/partner/feeds"') >= 1  # the nav


def test_create_with_every_control(w: World, sftp_server: SftpServer) -> None:
    client, token = signed_in(w)
    made = [
        base_form(token, name="Hourly actions", every="hourly", minute="15",
                  time_zone="Europe/Paris", format="tab", gzip="on", header=None),
        base_form(token, content="catalog", program_id=str(w.program_id), every="monthly",
                  at="23:30", month_day="last", time_zone="America/New_York", format="jsonl",
                  kind="email", email_to="a@b.example, books@b.example",
                  email_attach="link", enabled=None),
        base_form(token, every="weekly", weekday="tuesday", at="07:45",
                  program_id=str(w.program_id), window="days", window_days="14",
                  format="pipe", kind="sftp", sftp_host=sftp_server.host,
                  sftp_port=str(sftp_server.port), sftp_username=sftp_server.username,
                  sftp_password=sftp_server.password, sftp_directory="."),
        base_form(token, every="monthly", at="00:05", month_day="28", format="xml",
                  kind="sftp", sftp_host=sftp_server.host, sftp_port=str(sftp_server.port),
                  sftp_username=sftp_server.username, sftp_auth="key",
                  sftp_private_key=sftp_server.client_key, sftp_password="ignored"),
    ]
    for form in made:
        r = client.post("/partner/feeds", data=form)
        assert r.status_code == 200 and "created." in r.text, errors_of(r.text) or r.text
    got = feeds_of(w)
    assert [f["schedule"] for f in got] == [
        {"every": "hourly", "at": ":15", "day": None, "time_zone": "Europe/Paris"},
        {"every": "monthly", "at": "23:30", "day": "last", "time_zone": "America/New_York"},
        {"every": "weekly", "at": "07:45", "day": "tuesday", "time_zone": "Asia/Shanghai"},
        {"every": "monthly", "at": "00:05", "day": 28, "time_zone": "Asia/Shanghai"}]
    assert [(f["content"], f["program_id"], f["window"], f["format"], f["gzip"], f["header"],
             f["enabled"]) for f in got] == [
        ("actions", None, "since_last_run", "tab", True, False, True),
        ("catalog", w.program_id, None, "jsonl", False, True, False),
        ("actions", w.program_id, {"days": 14}, "pipe", False, True, True),
        ("actions", None, "since_last_run", "xml", False, True, True)]
    assert got[0]["name"] == "Hourly actions"
    assert got[0]["columns"] == ["ActionId", "Oid", "Status", "Amount", "Payout", "Sequence"]
    assert got[1]["columns"] == ["CatalogItemId", "Name"]
    assert got[1]["destination"] == {"kind": "email", "to": ["a@b.example", "books@b.example"],
                                     "attach": False}
    sftp, keyed = got[2]["destination"], got[3]["destination"]
    assert (sftp["host"], sftp["port"], sftp["password_set"], sftp["private_key_set"]) == (
        sftp_server.host, sftp_server.port, True, False)
    assert (keyed["password_set"], keyed["private_key_set"]) == (False, True)
    # the list says each in words
    listed = html.unescape(client.get("/partner/feeds").text)
    for words in ("Every hour at 15 minutes past (Europe/Paris)", "TAB (tab-separated), gzipped",
                  "Monthly on the last day at 23:30 (America/New_York)",
                  "Catalog of Acme Shoes US",
                  "Email to a@b.example, books@b.example, as a download link",
                  "Weekly on Tuesday at 07:45 (Asia/Shanghai)", "Actions of Acme Shoes US",
                  "each action changed in the last 14 days",
                  f"SFTP to {sftp_server.host}:{sftp_server.port} .",
                  "Monthly on day 28 at 00:05 (Asia/Shanghai)", "XML",
                  "Off: runs only when you run it", "Not run yet"):
        assert words in listed, words
    assert sftp_server.password not in listed and "PRIVATE KEY" not in listed


def test_a_refused_form_keeps_what_was_typed_with_each_problem_beside_its_field(
        w: World) -> None:
    client, token = signed_in(w)
    r = client.post("/partner/feeds", data=base_form(
        token, name="My books", every="hourly", minute="75", time_zone="Europe/Pariss",
        window="days", window_days="120", kind="sftp", sftp_host="files.example.com",
        sftp_port="99999", sftp_username="", sftp_password="typed-secret-1"))
    assert r.status_code == 422
    said = errors_of(r.text)
    assert said["fd-minute"].startswith("Minute past the hour: enter a whole number from 0")
    assert said["fd-zone"].startswith("Time zone: 'Europe/Pariss' is not a known time zone")
    assert said["fd-days"] == "Days: must be 90 or less"
    assert said["fd-port"] == "Port: must be 65535 or less"
    assert said["fd-username"] == "Username: enter a value"
    assert 'id="fd-minute" name="minute" inputmode="numeric" value="75" aria-invalid="true"' \
        in r.text
    assert value_of(r.text, "name") == "My books"
    assert value_of(r.text, "sftp_host") == "files.example.com"
    assert value_of(r.text, "window_days") == "120"
    assert "<option selected>Europe/Pariss</option>" in r.text  # as typed
    assert "typed-secret-1" not in r.text  # a secret is never put back in a page
    assert "type it again" in r.text
    # what only the service sees is beside its field too: no column, a catalog without
    # its program, a program the partner is not contracted on
    r = client.post("/partner/feeds", data=base_form(token, columns=None))
    assert r.status_code == 422
    assert errors_of(r.text)["fd-columns"].startswith("Columns: choose at least one column")
    r = client.post("/partner/feeds", data=base_form(token, content="catalog", program_id=""))
    assert errors_of(r.text)["fd-program"].startswith("Program: a catalog feed is one")
    assert 'id="content-catalog" checked' in r.text
    r = client.post("/partner/feeds", data=base_form(token, program_id="2147483647"))
    assert errors_of(r.text)["fd-program"] == "Program: program not found"
    r = client.post("/partner/feeds", data=base_form(
        token, kind="sftp", sftp_host="10.1.2.3", sftp_username="u", sftp_password="pw"))
    assert r.status_code == 422
    assert "public addresses only" in errors_of(r.text)["fd-host"]
    r = client.post("/partner/feeds", data=base_form(
        token, kind="sftp", sftp_host="127.0.0.1", sftp_username="u"))
    assert errors_of(r.text)["fd-password"].startswith("Password: an SFTP destination needs")
    r = client.post("/partner/feeds", data=base_form(token, kind="email", email_to=""))
    assert errors_of(r.text)["fd-to"].startswith("Email to: enter at least one address")
    # hostile values: never a 500, nothing saved
    for junk in ({"every": "yearly"}, {"format": "docx"}, {"content": "passwords"},
                 {"kind": "ftp"}, {"program_id": "-1"}, {"month_day": "31", "every": "monthly"},
                 {"at": "25:00"}, {"columns": ["EventId"]}, {"columns": ["Nope"]},
                 {"sftp_port": "x", "kind": "sftp"}, {"time_zone": "\x00"}):
        r = client.post("/partner/feeds", data=base_form(token, **junk))
        assert r.status_code == 422, (junk, r.text)
        assert errors_of(r.text) or '<p class="error" role="alert">' in r.text, junk
    assert feeds_of(w) == []


def test_edit_keeps_the_secret_when_left_empty_and_the_host_key_shown_and_forgotten(
        w: World, sftp_server: SftpServer) -> None:
    client, token = signed_in(w)
    sftp = {"kind": "sftp", "sftp_host": sftp_server.host, "sftp_port": str(sftp_server.port),
            "sftp_username": sftp_server.username, "sftp_directory": "."}
    assert client.post("/partner/feeds", data=base_form(
        token, sftp_password=sftp_server.password, **sftp)).status_code == 200
    feed_id = feeds_of(w)[0]["id"]
    page = client.get(f"/partner/feeds/{feed_id}").text
    assert "A password is set; leave this empty to keep it." in page
    assert sftp_server.password not in page
    assert value_of(page, "sftp_host") == sftp_server.host
    # Test connection: connects with the stored password and pins the server's key
    r = client.post(f"/partner/feeds/{feed_id}/test", data={"csrf_token": token})
    assert r.status_code == 200 and "Connected: logged in" in r.text
    fingerprint = w.partner("GET", f"/v1/feeds/{feed_id}", 200)["destination"][
        "host_key_fingerprint"]
    assert fingerprint.startswith("SHA256:") and fingerprint in r.text
    assert "Forget the host key" in r.text
    # saved again with the password left empty: kept (a run logs in with it), pin kept
    r = client.post(f"/partner/feeds/{feed_id}", data=base_form(
        token, name="Renamed", format="csv", **sftp))
    assert r.status_code == 200 and f"Data feed {feed_id} saved." in r.text, errors_of(r.text)
    stored = w.partner("GET", f"/v1/feeds/{feed_id}", 200)
    assert stored["name"] == "Renamed" and stored["destination"]["password_set"]
    assert stored["destination"]["host_key"] == sftp_server.host_key
    w.report(oid="ORD-SFTP")
    client.post(f"/partner/feeds/{feed_id}/run", data={"csrf_token": token})
    work(w.service)
    run = w.partner("GET", f"/v1/feeds/{feed_id}/runs", 200)["items"][0]
    assert run["status"] == "succeeded", run
    assert b"ORD-SFTP" in (sftp_server.root / run["file_name"]).read_bytes()
    # another server without the password: refused beside the password, nothing changed
    r = client.post(f"/partner/feeds/{feed_id}", data=base_form(
        token, **{**sftp, "sftp_port": str(sftp_server.port + 1)}))
    assert r.status_code == 422
    assert "never sent to another server" in errors_of(r.text)["fd-password"]
    # forget the host key
    r = client.post(f"/partner/feeds/{feed_id}", data=base_form(
        token, forget_host_key="on", **sftp))
    assert r.status_code == 200
    assert w.partner("GET", f"/v1/feeds/{feed_id}", 200)["destination"]["host_key"] is None
    assert "Not pinned yet" in client.get(f"/partner/feeds/{feed_id}").text
    # a wrong password: the test says why, in words
    r = client.post(f"/partner/feeds/{feed_id}", data=base_form(
        token, sftp_password="not-the-password", **sftp))
    assert r.status_code == 200
    r = client.post(f"/partner/feeds/{feed_id}/test", data={"csrf_token": token})
    assert "The connection failed." in r.text
    assert "not-the-password" not in r.text


def test_run_now_then_the_runs_page_and_the_download_of_the_hosted_file(w: World) -> None:
    client, token = signed_in(w)
    assert client.post("/partner/feeds", data=base_form(
        token, format="csv", gzip="on")).status_code == 200
    feed_id = feeds_of(w)[0]["id"]
    empty = client.get(f"/partner/feeds/{feed_id}/runs").text
    assert "No runs yet." in empty
    action = w.report(oid="ORD-WEB-1", amount="120.00", payout="9.60")
    r = client.post(f"/partner/feeds/{feed_id}/run", data={"csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/partner/feeds/{feed_id}/runs"
    page = client.get(r.headers["location"]).text
    assert "is queued: it starts within a minute." in page
    assert '<span class="status run-queued">Queued</span>' in page
    again = client.post(f"/partner/feeds/{feed_id}/run", data={"csrf_token": token})
    assert "was already waiting to start" in again.text  # one run waits, not two
    work(w.service)
    page = client.get(f"/partner/feeds/{feed_id}/runs").text
    assert '<span class="status run-succeeded">Delivered</span>' in page
    assert "Times are in the feed's time zone, Asia/Shanghai." in page
    run = w.partner("GET", f"/v1/feeds/{feed_id}/runs", 200)["items"][0]
    row = page.split(f'data-run="{run["id"]}"')[1].split("</tr>")[0]
    assert "<td>1</td>" in row and (" B</td>" in row or " KB</td>" in row)
    link = f"/partner/feeds/{feed_id}/runs/{run['id']}/file"
    assert f'href="{link}"' in row and run["file_name"] in row
    got = client.get(link)
    assert got.status_code == 200
    assert got.headers["content-disposition"] == f'attachment; filename="{run["file_name"]}"'
    assert got.headers["content-type"] == "application/gzip"
    by_key = w.service.client.get(f"/v1/feeds/{feed_id}/runs/{run['id']}/file",
                                  headers={"Authorization": f"Bearer {w.partner_key}"})
    assert got.content == by_key.content
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(got.content).decode())))
    assert [(r["ActionId"], r["Oid"], r["Amount"], r["Payout"]) for r in rows] == [
        (str(action["id"]), "ORD-WEB-1", "120.00", "9.60")]
    listed = client.get("/partner/feeds").text
    assert '<span class="status run-succeeded">Delivered</span>' in listed
    # the file needs the session: no cookie, no file
    assert browser(w).get(link, follow_redirects=False).status_code == 303


def test_another_partners_feed_is_a_404_page(w: World) -> None:
    client, token = signed_in(w)
    client.post("/partner/feeds", data=base_form(token))
    feed_id = feeds_of(w)[0]["id"]
    client.post(f"/partner/feeds/{feed_id}/run", data={"csrf_token": token})
    work(w.service)
    run_id = w.partner("GET", f"/v1/feeds/{feed_id}/runs", 200)["items"][0]["id"]
    other = w.service.call("POST", "/v1/partners", ADMIN, 201,
                           json={"name": "Other Partner", "partner_type": "cashback"})
    key = w.service.call("POST", "/v1/api-keys", ADMIN, 201, json={
        "account_type": "partner", "account_id": other["id"]})["key"]
    stranger = browser(w)
    theirs = sign_in(stranger, key)
    for path in (f"/partner/feeds/{feed_id}", f"/partner/feeds/{feed_id}/runs",
                 f"/partner/feeds/{feed_id}/delete",
                 f"/partner/feeds/{feed_id}/runs/{run_id}/file",
                 "/partner/feeds/2147483647", "/partner/feeds/2147483648",
                 "/partner/feeds/0/runs"):
        r = stranger.get(path)
        assert r.status_code == 404, path
        assert "Not found" in r.text, path
    for path in (f"/partner/feeds/{feed_id}", f"/partner/feeds/{feed_id}/run",
                 f"/partner/feeds/{feed_id}/delete", f"/partner/feeds/{feed_id}/test"):
        r = stranger.post(path, data=base_form(theirs))
        assert r.status_code == 404, path
    assert "No data feeds yet." in stranger.get("/partner/feeds").text
    assert len(w.partner("GET", f"/v1/feeds/{feed_id}/runs", 200)["items"]) == 1
    assert feeds_of(w)[0]["name"] == ""


def test_delete_after_its_confirmation(w: World) -> None:
    client, token = signed_in(w)
    client.post("/partner/feeds", data=base_form(token, name="Old books"))
    feed_id = feeds_of(w)[0]["id"]
    listed = client.get("/partner/feeds").text
    assert f'href="/partner/feeds/{feed_id}/delete"' in listed  # a link to the question
    confirm = client.get(f"/partner/feeds/{feed_id}/delete")
    assert confirm.status_code == 200 and "Old books" in confirm.text
    assert "Yes, delete this data feed" in confirm.text
    assert len(feeds_of(w)) == 1  # asking deletes nothing
    r = client.post(f"/partner/feeds/{feed_id}/delete", data={"csrf_token": "forged"})
    assert r.status_code == 403 and len(feeds_of(w)) == 1
    r = client.post(f"/partner/feeds/{feed_id}/delete", data={"csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/partner/feeds"
    page = client.get("/partner/feeds").text
    assert f"Data feed {feed_id} deleted" in page and "No data feeds yet." in page
    assert feeds_of(w) == []
    assert client.get(f"/partner/feeds/{feed_id}").status_code == 404


def test_the_screen_in_chinese(w: World) -> None:
    client, token = signed_in(w)
    client.cookies.set("pb_lang", "zh")
    client.post("/partner/feeds", data=base_form(token, every="weekly", weekday="friday"))
    page = html.unescape(client.get("/partner/feeds").text)
    assert "<h1>数据源</h1>" in page
    for words in ("每星期五 06:00（Asia/Shanghai）", "在此保留 30 天", "立即运行"):
        assert words in page, words
    r = client.post("/partner/feeds", data=base_form(token, minute="75", every="hourly",
                                                     window="days", window_days="0"))
    said = errors_of(r.text)
    assert said["fd-minute"].startswith("每小时的第几分钟")
    assert said["fd-days"].startswith("天数：")
    assert json.dumps(said, ensure_ascii=False).count("Minute") == 0
