"""Scheduled data feeds, end to end on SQLite and PostgreSQL: feeds saved and refused over
HTTP, runs worked by the real executor, files read back with their own parsers and compared
with the ledger, hosted downloads by key and by signed link, SFTP and email to real servers
on loopback, two executors racing, a run killed between its phases, retention."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
import io
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from postback.config import Settings
from postback.db.engine import make_engine
from postback.db.schema import feed, feed_file_chunk, feed_run
from postback.sealing import new_key
from postback.services import feed_runs
from postback.services.feed_runs import run_feeds
from postback.services.scheduler import run_due
from tests.conftest import Service, World, build_world
from tests.feed_crasher import crash_at
from tests.feed_servers import (  # noqa: F401
    SftpServer,
    SmtpServer,
    make_sftp_server,
    sftp_server,
    smtp_server,
)
from tests.test_updates_feed import settle
from tests.test_web import sign_in

COLUMNS = ["ActionId", "Oid", "Status", "StatusDetail", "Amount", "Payout", "Sequence",
           "Trigger", "ClearedDate", "Items", "SubId1"]


@pytest.fixture
def quiet(make_service: Callable[..., Service]) -> Service:
    """The API without a delivery engine: feeds need none."""
    return make_service(start_engine=False)


@pytest.fixture
def w(quiet: Service) -> World:
    return build_world(quiet)


def feed_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Daily actions", "content": "actions",
        "schedule": {"every": "daily", "at": "06:00", "time_zone": "Europe/Paris"},
        "window": "since_last_run", "format": "csv", "columns": COLUMNS,
        "destination": {"kind": "hosted"}}
    body.update(over)
    return body


def work(service: Service, **kw: Any) -> dict[str, int]:
    settle(service)
    kw.setdefault("lease_seconds", 30.0)
    kw.setdefault("retry_schedule", (0.0, 0.0, 0.0))
    return run_feeds(service.db, service.settings, **kw)


def run_now(w: World, feed_id: int) -> dict[str, Any]:
    queued = w.partner("POST", f"/v1/feeds/{feed_id}/run", 202)
    work(w.service)
    run: dict[str, Any] = w.partner("GET", f"/v1/feeds/{feed_id}/runs/{queued['run_id']}", 200)
    return run


def download(w: World, run: dict[str, Any]) -> bytes:
    r = w.service.client.get(f"/v1/feeds/{run['feed_id']}/runs/{run['id']}/file",
                             headers={"Authorization": f"Bearer {w.partner_key}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == f'attachment; filename="{run["file_name"]}"'
    return r.content


def ledger(w: World) -> dict[str, dict[str, str]]:
    """The brand's ledger, as the columns the feeds carry."""
    out: dict[str, dict[str, str]] = {}
    cursor = None
    while True:
        page = w.brand("GET", "/v1/actions", 200,
                       params={"limit": 1000, **({"cursor": cursor} if cursor else {})})
        for a in page["items"]:
            out[str(a["id"])] = {"Oid": a["oid"], "Status": a["status"],
                                 "StatusDetail": a["status_detail"], "Amount": a["amount"],
                                 "Payout": a["payout"], "Sequence": str(a["sequence"]),
                                 "ClearedDate": a["cleared_at"] or ""}
        cursor = page["next_cursor"]
        if not cursor:
            return out


def apply(books: dict[str, dict[str, str]], rows: list[dict[str, str]]) -> None:
    """What a partner does with each row: keep the highest Sequence of each action."""
    for row in rows:
        have = books.get(row["ActionId"])
        if have is None or int(row["Sequence"]) >= int(have["Sequence"]):
            books[row["ActionId"]] = {k: row[k] for k in ("Oid", "Status", "StatusDetail",
                                                           "Amount", "Payout", "Sequence",
                                                           "ClearedDate")}


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def churn(w: World) -> list[int]:
    """Creates, a modification and a reversal."""
    ids = [w.report(oid=f"ORD-{i}", amount="100.00", payout="7.50",
                    sub_id1=f'member,"{i}"\nline')["id"] for i in range(3)]
    w.brand("PATCH", f"/v1/actions/{ids[0]}", 200,
            json={"amount": "80.00", "payout": "6.00", "reason": "ORDER_UPDATE"})
    w.brand("POST", f"/v1/actions/{ids[1]}/reverse", 200, json={"reason": "ITEM_RETURNED"})
    return ids


# -- saving ----------------------------------------------------------------------------------

def test_a_feed_is_saved_read_listed_replaced_and_deleted(w: World) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body())
    assert made["warnings"] == [] and made["window"] == "since_last_run"
    assert made["schedule"] == {"every": "daily", "at": "06:00", "day": None,
                                "time_zone": "Europe/Paris"}
    assert made["destination"] == {"kind": "hosted", "retention_days": 30}
    assert made["next_run_at"].endswith(("T04:00:00+00:00", "T05:00:00+00:00"))
    got = w.partner("GET", f"/v1/feeds/{made['id']}", 200)
    assert got == {k: v for k, v in made.items() if k != "warnings"}
    assert [f["id"] for f in w.partner("GET", "/v1/feeds", 200)["items"]] == [made["id"]]
    put = w.partner("PUT", f"/v1/feeds/{made['id']}", 200, json=feed_body(
        schedule={"every": "monthly", "at": "23:30", "day": "last"}, window={"days": 7},
        format="jsonl", gzip=True))
    assert put["schedule"]["day"] == "last" and put["window"] == {"days": 7}
    assert put["gzip"] is True and put["format"] == "jsonl"
    w.partner("DELETE", f"/v1/feeds/{made['id']}", 204)
    w.partner("GET", f"/v1/feeds/{made['id']}", 404)
    cols = w.partner("GET", "/v1/feeds/columns", 200, params={"content": "catalog"})
    assert "CatalogItemId" in cols["columns"] and "EventId" not in cols["columns"]


REFUSALS: list[tuple[dict[str, Any], str, str]] = [
    ({"columns": []}, "columns", "at least one column"),
    ({"columns": ["ActionId", "Payot"]}, "columns[1]", "did you mean Payout"),
    ({"columns": ["ActionId", "ActionId"]}, "columns[1]", "already column 1"),
    ({"columns": ["EventId"]}, "columns[0]", "ChangeId"),
    ({"columns": ["CatalogItemId"]}, "columns[0]", "not a column of an actions feed"),
    ({"schedule": {"every": "weekly", "at": "06:00"}}, "schedule.day", "weekday"),
    ({"schedule": {"every": "monthly", "day": 31}}, "schedule.day", "last"),
    ({"schedule": {"every": "daily", "at": "6am"}}, "schedule.at", "HH:MM"),
    ({"schedule": {"every": "hourly", "at": "06:15"}}, "schedule.at", ":MM"),
    ({"schedule": {"every": "daily", "time_zone": "Europe/Pari"}}, "schedule.time_zone",
     "Europe/Paris"),
    ({"window": {"days": 91}}, "window", "90"),
    ({"window": "forever"}, "window", ""),
    ({"format": "xlsx"}, "format", ""),
    ({"content": "catalog", "columns": ["CatalogItemId"]}, "program_id", "program_id"),
    ({"destination": {"kind": "ftp"}}, "destination", ""),
    ({"destination": {"kind": "sftp", "host": "127.0.0.1", "username": "u"}},
     "destination.password", "password or a private_key"),
    ({"destination": {"kind": "sftp", "host": "10.1.2.3", "username": "u", "password": "p"}},
     "destination.host", "public addresses only"),
    ({"destination": {"kind": "sftp", "host": "127.0.0.1", "username": "u",
                      "private_key": "not a key"}}, "destination.private_key",
     "not an OpenSSH or PEM private key"),
    ({"destination": {"kind": "email", "to": ["a@example.com"]}}, "destination.kind",
     "POSTBACK_SMTP_HOST"),
]


def test_every_refusal_names_the_field_and_the_fix(w: World) -> None:
    for change, field, words in REFUSALS:
        r = w.service.client.post("/v1/feeds", json=feed_body(**change),
                                  headers={"Authorization": f"Bearer {w.partner_key}"})
        assert r.status_code == 422, (change, r.text)
        body = r.json()
        assert body["field"].startswith(field), (change, body)
        assert words in body["message"], (change, body)
    assert w.partner("GET", "/v1/feeds", 200)["items"] == []  # nothing half-written


def test_refusals_in_chinese(w: World) -> None:
    """The refusals carry their values into the reader's language, hints included."""
    for change, expected in (
            ({"columns": ["Payot"]},
             "columns[0]：'Payot' 不是操作数据源的列；您是否想用 Payout, DeltaPayout？"),
            ({"schedule": {"every": "daily", "at": "06:00", "time_zone": "Europe/Pari"}},
             "schedule.time_zone：'Europe/Pari' 不是已知的时区；您是否想用 Europe/Paris"),
            ({"columns": ["Payout", "Payout"]}, "columns[1]：Payout 已是第 1 列；每列只列一次")):
        r = w.service.client.post("/v1/feeds", json=feed_body(**change), headers={
            "Authorization": f"Bearer {w.partner_key}", "Accept-Language": "zh-CN"})
        assert r.status_code == 422 and r.json()["message"].startswith(expected), r.json()


def test_another_partners_feed_or_program_is_not_found(w: World) -> None:
    other = build_world(w.service)
    theirs = other.partner("POST", "/v1/feeds", 201, json=feed_body())
    for method, path in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/run"),
                         ("GET", "/runs"), ("GET", "/runs/1"), ("GET", "/runs/1/file")):
        kw = {"json": feed_body()} if method == "PUT" else {}
        r = w.partner(method, f"/v1/feeds/{theirs['id']}{path}", 404, **kw)
        assert r["error"] == "not_found"
    r = w.partner("POST", "/v1/feeds", 404, json=feed_body(
        content="catalog", program_id=other.program_id, columns=["CatalogItemId"]))
    assert r["field"] == "program_id"
    w.brand("GET", "/v1/feeds", 403)


# -- runs and formats ----------------------------------------------------------------------

def test_a_csv_feed_since_the_last_run_holds_each_change_once(w: World) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body())
    ids = churn(w)
    first = run_now(w, made["id"])
    assert first["status"] == "succeeded" and first["phase"] == "succeeded"
    assert first["rows"] == 5 and first["bytes"] > 0 and first["attempts"] == 0
    assert first["file_name"].startswith("actions-") and first["file_name"].endswith(
        f"-run{first['id']}.csv")
    assert first["content_type"] == "text/csv; charset=utf-8"
    rows = csv_rows(download(w, first))
    assert [(r["ActionId"], r["Trigger"]) for r in rows] == [
        (str(ids[0]), "TRACKED"), (str(ids[1]), "TRACKED"), (str(ids[2]), "TRACKED"),
        (str(ids[0]), "MODIFIED"), (str(ids[1]), "REVERSED")]
    assert rows[2]["SubId1"] == 'member,"2"\nline'  # exactly as sent, through CSV quoting
    assert json.loads(rows[0]["Items"]) == []
    books: dict[str, dict[str, str]] = {}
    apply(books, rows)
    assert books == ledger(w)
    # the next run holds only what changed since, and an empty run is an empty file
    w.brand("PATCH", f"/v1/actions/{ids[2]}", 200,
            json={"amount": "50.00", "payout": "3.00", "reason": "ORDER_UPDATE"})
    second = run_now(w, made["id"])
    assert [r["Trigger"] for r in csv_rows(download(w, second))] == ["MODIFIED"]
    third = run_now(w, made["id"])
    assert third["rows"] == 0 and csv_rows(download(w, third)) == []


@pytest.mark.parametrize("fmt", ["tab", "pipe", "xml", "jsonl"])
def test_each_format_read_back_with_its_parser_matches_the_ledger(w: World, fmt: str) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(format=fmt, gzip=True))
    churn(w)
    run = run_now(w, made["id"])
    assert run["content_type"] == "application/gzip" and run["file_name"].endswith(".gz")
    data = gzip.decompress(download(w, run)).decode()
    if fmt in ("tab", "pipe"):
        reader = csv.DictReader(io.StringIO(data, newline=""),
                                **({"dialect": csv.excel_tab} if fmt == "tab"
                                   else {"delimiter": "|"}))
        rows = list(reader)
    elif fmt == "xml":
        root = ET.fromstring(data)
        assert root.tag == "Actions" and {el.tag for el in root} == {"Action"}
        rows = [{c.tag: c.text or "" for c in el} for el in root]
    else:
        rows = [json.loads(line) for line in data.splitlines()]
        assert all(isinstance(r["Items"], list) for r in rows)
    assert len(rows) == 5
    books: dict[str, dict[str, str]] = {}
    apply(books, rows)
    assert books == ledger(w)


def test_a_rolling_window_is_each_action_once_as_it_is_now(w: World) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(window={"days": 3}))
    ids = churn(w)
    run = run_now(w, made["id"])
    rows = csv_rows(download(w, run))
    assert sorted(r["ActionId"] for r in rows) == sorted(str(i) for i in ids)
    books: dict[str, dict[str, str]] = {}
    apply(books, rows)
    assert books == ledger(w)
    again = run_now(w, made["id"])  # a snapshot: the same rows again, not "what is new"
    assert again["rows"] == 3


def test_a_catalog_feed_is_the_programs_current_catalog(w: World) -> None:
    for item, price in (("SH-1", "89.00"), ("SH-2", "19.50"), ("SH-3", "5.00")):
        w.brand("PUT", f"/v1/programs/{w.program_id}/catalog/items/{item}", 200,
                json={"name": f"Shoe <{item}> & co", "current_price": price,
                      "currency": "USD"})
    w.brand("DELETE", f"/v1/programs/{w.program_id}/catalog/items/SH-3", 204)
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(
        content="catalog", program_id=w.program_id, window=None, format="xml",
        columns=["CatalogItemId", "Name", "CurrentPrice", "Currency", "CampaignId"]))
    assert made["window"] is None
    run = run_now(w, made["id"])
    root = ET.fromstring(download(w, run))
    assert root.tag == "CatalogItems"
    assert [{c.tag: c.text or "" for c in el} for el in root] == [
        {"CatalogItemId": "SH-1", "Name": "Shoe <SH-1> & co", "CurrentPrice": "89.00",
         "Currency": "USD", "CampaignId": str(w.program_id)},
        {"CatalogItemId": "SH-2", "Name": "Shoe <SH-2> & co", "CurrentPrice": "19.50",
         "Currency": "USD", "CampaignId": str(w.program_id)}]


# -- hosted files ------------------------------------------------------------------------------

def test_a_hosted_file_by_key_and_by_signed_link_expired_or_tampered_refused(w: World) -> None:
    from postback.services.feeds import link_token

    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(gzip=True))
    churn(w)
    run = run_now(w, made["id"])
    by_key = download(w, run)
    assert run["download_url"].startswith("http://127.0.0.1:8000/v1/feed-files/")
    path = run["download_url"].removeprefix("http://127.0.0.1:8000")
    r = w.service.client.get(path)  # no key: the link is the credential
    assert r.status_code == 200 and r.content == by_key
    assert r.headers["content-type"] == "application/gzip"
    assert r.headers["content-length"] == str(run["bytes"])
    token = path.rsplit("/", 1)[1]
    run_id, expires, sig = token.split(".")
    for forged in (f"{int(run_id) + 1}.{expires}.{sig}", f"{run_id}.{int(expires) + 1}.{sig}",
                   f"{run_id}.{expires}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}", "x"):
        assert w.service.client.get(f"/v1/feed-files/{forged}").status_code == 404
    old = link_token(w.service.settings, run["id"], datetime.now(UTC) - timedelta(seconds=1))
    r = w.service.client.get(f"/v1/feed-files/{old}")
    assert r.status_code == 410 and "expired" in r.json()["message"]
    # another partner's key cannot read it by its ids
    other = build_world(w.service)
    other.partner("GET", f"/v1/feeds/{made['id']}/runs/{run['id']}/file", 404)


def test_retention_deletes_old_files_and_keeps_the_runs(w: World) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body())
    churn(w)
    run = run_now(w, made["id"])
    keep = run_now(w, made["id"])
    with w.service.db.begin() as conn:
        conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
            file_expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    assert work(w.service)["files_deleted"] == 1
    gone = w.partner("GET", f"/v1/feeds/{made['id']}/runs/{run['id']}", 200)
    assert gone["file_deleted"] is True and gone["download_url"] is None
    r = w.partner("GET", f"/v1/feeds/{made['id']}/runs/{run['id']}/file", 410)
    assert "retention" in r["message"]
    with w.service.db.connect() as conn:
        left = conn.execute(select(feed_file_chunk.c.run_id).distinct()).scalars().all()
    assert left == [keep["id"]]
    assert len(w.partner("GET", f"/v1/feeds/{made['id']}/runs", 200)["items"]) == 2


# -- scheduling --------------------------------------------------------------------------------

def test_due_slots_make_one_run_each_even_with_two_schedulers(w: World) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(
        schedule={"every": "hourly", "at": ":00"}))
    slot = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with w.service.db.begin() as conn:  # as if the scheduler had been stopped for a day
        conn.execute(update(feed).where(feed.c.id == made["id"]).values(
            next_run_at=slot - timedelta(days=1)))
    other = make_engine(w.service.settings.database_url)
    try:
        made_runs: list[int] = []
        threads = [threading.Thread(target=lambda e=e: made_runs.append(
            feed_runs.schedule_due(e))) for e in (w.service.db, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.dispose()
    assert sum(made_runs) == 1
    runs = w.partner("GET", f"/v1/feeds/{made['id']}/runs", 200)["items"]
    assert [(r["trigger"], r["scheduled_for"]) for r in runs] == [
        ("schedule", slot.isoformat())]  # the latest missed slot, once
    feed_now = w.partner("GET", f"/v1/feeds/{made['id']}", 200)
    assert feed_now["next_run_at"] == (slot + timedelta(hours=1)).isoformat()
    # run now while that run waits to start: it is the answer, nothing more is queued
    again = w.partner("POST", f"/v1/feeds/{made['id']}/run", 202)
    assert again == {"run_id": runs[0]["id"], "created": False}
    work(w.service)
    assert w.partner("GET", f"/v1/feeds/{made['id']}/runs/{runs[0]['id']}", 200)[
        "status"] == "succeeded"
    assert w.partner("POST", f"/v1/feeds/{made['id']}/run", 202)["created"] is True


def test_turning_a_feed_off_stops_its_schedule_and_cancels_what_has_not_started(
        w: World) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body())
    queued = w.partner("POST", f"/v1/feeds/{made['id']}/run", 202)
    off = w.partner("PUT", f"/v1/feeds/{made['id']}", 200, json=feed_body(enabled=False))
    assert off["enabled"] is False and off["next_run_at"] is None
    run = w.partner("GET", f"/v1/feeds/{made['id']}/runs/{queued['run_id']}", 200)
    assert run["status"] == "failed" and "turned off" in run["error"]


# -- SFTP and email ----------------------------------------------------------------------------

def sftp_destination(server: SftpServer, **over: Any) -> dict[str, Any]:
    dest = {"kind": "sftp", "host": server.host, "port": server.port,
            "username": server.username, "password": server.password, "directory": "."}
    dest.update(over)
    return dest


def renames(server: SftpServer) -> list[str]:
    return [op[2] for op in server.ops if op[0] in ("rename", "posix_rename")]


def test_sftp_pins_the_host_key_keeps_the_secret_and_never_shows_it(
        w: World, sftp_server: SftpServer) -> None:
    r = w.service.client.post("/v1/feeds", json=feed_body(
        destination=sftp_destination(sftp_server)),
        headers={"Authorization": f"Bearer {w.partner_key}"})
    assert r.status_code == 201, r.text
    assert sftp_server.password not in r.text
    made = r.json()
    assert made["destination"]["password_set"] is True
    assert made["destination"]["host_key"] is None
    churn(w)
    run = run_now(w, made["id"])
    assert run["status"] == "succeeded", run
    assert "uploaded" in run["answer"] and sftp_server.password not in json.dumps(run)
    sent = (sftp_server.root / run["file_name"]).read_bytes()
    assert sent == download(w, run) and len(csv_rows(sent)) == 5
    pinned = w.partner("GET", f"/v1/feeds/{made['id']}", 200)["destination"]
    assert pinned["host_key"] == sftp_server.host_key
    assert pinned["host_key_fingerprint"].startswith("SHA256:")
    # the same server without the password: the stored one is kept, the pin too
    same = {k: v for k, v in sftp_destination(sftp_server).items() if k != "password"}
    kept = w.partner("PUT", f"/v1/feeds/{made['id']}", 200, json=feed_body(destination=same))
    assert kept["destination"]["password_set"] and kept["destination"]["host_key"]
    # another server needs the secret again: the stored one never goes elsewhere
    moved = {**same, "port": sftp_server.port + 1}
    r2 = w.partner("PUT", f"/v1/feeds/{made['id']}", 422, json=feed_body(destination=moved))
    assert r2["field"] == "destination.password" and "never sent" in r2["message"]
    # a wrong pin fails the run at once (permanent), a cleared pin is pinned again
    wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    w.partner("PUT", f"/v1/feeds/{made['id']}", 200,
              json=feed_body(destination={**same, "host_key": wrong}))
    failed = run_now(w, made["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert "host key" in failed["error"]
    cleared = w.partner("PUT", f"/v1/feeds/{made['id']}", 200,
                        json=feed_body(destination={**same, "host_key": None}))
    assert cleared["destination"]["host_key"] is None
    tested = w.partner("POST", f"/v1/feeds/{made['id']}/test", 200)
    assert tested["ok"] is True and tested["host_key"] == sftp_server.host_key


def test_sftp_with_a_private_key(w: World, sftp_server: SftpServer) -> None:
    dest = sftp_destination(sftp_server, password=None, private_key=sftp_server.client_key)
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(destination=dest))
    assert made["destination"]["private_key_set"] and not made["destination"]["password_set"]
    assert "PRIVATE KEY" not in json.dumps(w.partner("GET", f"/v1/feeds/{made['id']}", 200))
    run = run_now(w, made["id"])
    assert run["status"] == "succeeded" and (sftp_server.root / run["file_name"]).exists()


@pytest.fixture
def mailing(make_service: Callable[..., Service], smtp_server: SmtpServer) -> World:
    service = make_service(start_engine=False, smtp_host=smtp_server.host,
                           smtp_port=smtp_server.port, smtp_tls="none",
                           smtp_from="Feeds <feeds@postback.test>",
                           destination_connect_timeout=10.0, destination_idle_timeout=15.0)
    return build_world(service)


def test_email_attached_or_as_its_link_with_a_message_id_per_run(
        mailing: World, smtp_server: SmtpServer) -> None:
    w = mailing
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(
        destination={"kind": "email", "to": ["books@partner.example"], "attach": True}))
    churn(w)
    run = run_now(w, made["id"])
    assert run["status"] == "succeeded", run
    msg = smtp_server.messages[-1]
    assert msg["To"] == "books@partner.example"
    assert f"run-{run['id']}" in msg["Message-ID"]
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == run["file_name"]
    assert len(csv_rows(part.get_payload(decode=True))) == 5
    linked = w.partner("PUT", f"/v1/feeds/{made['id']}", 200, json=feed_body(
        destination={"kind": "email", "to": ["books@partner.example"], "attach": False}))
    assert linked["destination"]["attach"] is False
    run2 = run_now(w, made["id"])
    text = smtp_server.messages[-1].get_body(("plain",)).get_content()
    url = next(line for line in text.splitlines() if "/v1/feed-files/" in line).strip()
    r = w.service.client.get(url.removeprefix(w.service.settings.public_url))
    assert r.status_code == 200 and r.content == download(w, run2)


def test_temporary_failures_are_retried_and_permanent_ones_fail_at_once(
        mailing: World, smtp_server: SmtpServer) -> None:
    w = mailing
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(
        destination={"kind": "email", "to": ["books@partner.example"]}))
    smtp_server.answer_data = "451 4.3.0 try again later"
    queued = w.partner("POST", f"/v1/feeds/{made['id']}/run", 202)
    work(w.service, retry_schedule=(3600.0,))
    run = w.partner("GET", f"/v1/feeds/{made['id']}/runs/{queued['run_id']}", 200)
    assert run["status"] == "running" and run["phase"] == "produced"
    assert run["attempts"] == 1 and "451" in run["error"] and run["next_attempt_at"]
    assert work(w.service)["worked"] == 0  # not before its retry is due
    with w.service.db.begin() as conn:
        conn.execute(update(feed_run).where(feed_run.c.id == run["id"]).values(
            next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    smtp_server.answer_data = None
    work(w.service)
    run = w.partner("GET", f"/v1/feeds/{made['id']}/runs/{run['id']}", 200)
    assert run["status"] == "succeeded" and run["attempts"] == 2 and run["error"] is None
    assert len(smtp_server.messages) == 1
    smtp_server.answer_data = "554 5.7.1 rejected"
    failed = run_now(w, made["id"])
    assert failed["status"] == "failed" and failed["attempts"] == 1 and "554" in failed["error"]


# -- one run per feed, crashes ---------------------------------------------------------------

def test_two_executors_racing_never_run_one_feed_twice_at_once(w: World) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body())
    churn(w)
    settle(w.service)
    first = w.partner("POST", f"/v1/feeds/{made['id']}/run", 202)["run_id"]
    with w.service.db.begin() as conn:  # a scheduled run queued behind the manual one
        conn.execute(feed_run.insert().values(
            feed_id=made["id"], trigger="schedule", scheduled_for=datetime.now(UTC),
            status="queued", phase="queued", next_attempt_at=datetime.now(UTC),
            created_at=datetime.now(UTC)))
    engines = [make_engine(w.service.settings.database_url) for _ in range(6)]
    try:
        barrier = threading.Barrier(len(engines))
        got: list[Any] = []

        def race(engine: Any, i: int) -> None:
            barrier.wait()
            got.append((f"racer-{i}", feed_runs.claim(engine, f"racer-{i}", 30.0)))

        threads = [threading.Thread(target=race, args=(e, i)) for i, e in enumerate(engines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        claimed = [(who, c) for who, c in got if c is not None]
        assert [c.run_id for _, c in claimed] == [first]  # one run, and the oldest
        # while it runs, nobody takes the queued one of the same feed
        assert feed_runs.claim(engines[0], "late", 30.0) is None
        owner, run = claimed[0]
        feed_runs.execute(w.service.db, run, owner, w.service.settings, 30.0)
        nxt = feed_runs.claim(engines[1], "next", 30.0)
        assert nxt is not None and nxt.run_id != first
        feed_runs.execute(w.service.db, nxt, "next", w.service.settings, 30.0)
    finally:
        for e in engines:
            e.dispose()
    runs = w.partner("GET", f"/v1/feeds/{made['id']}/runs", 200)["items"]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert [r["rows"] for r in runs] == [0, 5]  # the second starts where the first ended


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_feeds_waiting_to_retry_never_starve_another_partners_feed(w: World) -> None:
    """One partner's 20 feeds point at a server that is down: each run waits to retry, with
    the next "run now" queued behind it. Another partner's run still goes out at once, and
    no feed gets a second run while its first waits."""
    dead = {"kind": "sftp", "host": "127.0.0.1", "port": closed_port(), "username": "u",
            "password": "p"}
    ids = [w.partner("POST", "/v1/feeds", 201, json=feed_body(destination=dead))["id"]
           for _ in range(20)]
    first = [w.partner("POST", f"/v1/feeds/{i}/run", 202)["run_id"] for i in ids]
    work(w.service, retry_schedule=(600.0, 600.0, 600.0))
    for feed_id, run_id in zip(ids, first, strict=True):
        run = w.partner("GET", f"/v1/feeds/{feed_id}/runs/{run_id}", 200)
        assert run["status"] == "running" and run["phase"] == "produced", run
        assert "connection refused" in run["error"] and run["next_attempt_at"]
    behind = [w.partner("POST", f"/v1/feeds/{i}/run", 202)["run_id"] for i in ids]
    other = build_world(w.service)
    made = other.partner("POST", "/v1/feeds", 201, json=feed_body())
    queued = other.partner("POST", f"/v1/feeds/{made['id']}/run", 202)
    assert work(w.service, retry_schedule=(600.0, 600.0, 600.0))["worked"] == 1
    run = other.partner("GET", f"/v1/feeds/{made['id']}/runs/{queued['run_id']}", 200)
    assert run["status"] == "succeeded", run
    for feed_id, run_id in zip(ids, behind, strict=True):  # still one run of a feed at once
        assert w.partner("GET", f"/v1/feeds/{feed_id}/runs/{run_id}", 200)["status"] == \
            "queued"


def test_a_stalled_sftp_server_holds_one_worker_and_another_partners_feed_goes_out(
        make_service: Callable[..., Service]) -> None:
    """The scheduler's feeds loop, as `postback scheduler` runs it: one partner's SFTP
    server accepts the connection and never says a word (the run would wait for its
    handshake for minutes); another partner's hosted feed is made and kept meanwhile."""
    from postback import runner

    service = make_service(start_engine=False, destination_connect_timeout=600.0,
                           feed_workers=2)
    stuck, other = build_world(service), build_world(service)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(30)
        slow = stuck.partner("POST", "/v1/feeds", 201, json=feed_body(destination={
            "kind": "sftp", "host": "127.0.0.1", "port": silent.getsockname()[1],
            "username": "u", "password": "p"}))
        slow_run = stuck.partner("POST", f"/v1/feeds/{slow['id']}/run", 202)["run_id"]
        made = other.partner("POST", "/v1/feeds", 201, json=feed_body())
        queued = other.partner("POST", f"/v1/feeds/{made['id']}/run", 202)["run_id"]
        settle(service)
        control: dict[str, Any] = {}
        started = threading.Event()

        async def scheduler() -> None:
            control["loop"], control["end"] = asyncio.get_running_loop(), asyncio.Event()
            task = asyncio.create_task(runner._feeds_loop(service.db, service.settings,
                                                          interval=0.1))
            started.set()
            await control["end"].wait()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        thread = threading.Thread(target=asyncio.run, args=(scheduler(),), daemon=True)
        thread.start()
        started.wait(10)
        conn, _ = silent.accept()  # the slow feed's run is connecting: it stalls here
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                run = other.partner("GET", f"/v1/feeds/{made['id']}/runs/{queued}", 200)
                if run["status"] != "queued" and run["status"] != "running":
                    break
                time.sleep(0.1)
            assert run["status"] == "succeeded", run
            # ... while the stalled one is still waiting for the silent server
            held = stuck.partner("GET", f"/v1/feeds/{slow['id']}/runs/{slow_run}", 200)
            assert held["status"] == "running" and held["phase"] == "delivering", held
        finally:
            conn.close()  # the stalled run ends (a temporary failure), the loop stops
            control["loop"].call_soon_threadsafe(control["end"].set)
            thread.join(60)
    assert not thread.is_alive()
    held = stuck.partner("GET", f"/v1/feeds/{slow['id']}/runs/{slow_run}", 200)
    assert held["status"] == "running" and held["phase"] == "produced" and held["error"]


def test_the_number_of_feed_workers_is_checked_at_start() -> None:
    assert Settings.from_env({}).feed_workers == 4
    assert Settings.from_env({"POSTBACK_FEED_WORKERS": "8"}).feed_workers == 8
    for bad in ("0", "17", "two", "-1", "1.5"):
        with pytest.raises(ValueError, match="POSTBACK_FEED_WORKERS must be a whole number "
                           "of feed runs worked at once, from 1 to 16"):
            Settings.from_env({"POSTBACK_FEED_WORKERS": bad})


def test_a_secret_sealed_under_another_key_fails_only_what_needs_it(
        make_service: Callable[..., Service], sftp_server: SftpServer) -> None:
    """The operator changed POSTBACK_SECRET_KEY without keeping the old key: reads (the API
    and the Data Feeds screen) still work and say a password is stored; a run or a save
    that needs the password fails alone, saying to enter it again; entering it mends it."""
    w = build_world(make_service(start_engine=False))
    sftp = w.partner("POST", "/v1/feeds", 201, json=feed_body(
        destination=sftp_destination(sftp_server)))
    hosted = w.partner("POST", "/v1/feeds", 201, json=feed_body(name="Hosted"))
    # another process on the same database, whose key does not open what the first sealed
    rekeyed = make_service(start_engine=False, secret_key=new_key())
    r = dataclasses.replace(w, service=rekeyed)
    listed = r.partner("GET", "/v1/feeds", 200)["items"]
    assert {f["id"]: f["destination"].get("password_set") for f in listed} == {
        sftp["id"]: True, hosted["id"]: None}
    assert r.partner("GET", f"/v1/feeds/{sftp['id']}", 200)["destination"][
        "private_key_set"] is False
    client = TestClient(rekeyed.client.app, base_url="http://testserver")
    sign_in(client, w.partner_key)
    page = client.get("/partner/feeds")
    assert page.status_code == 200 and "Hosted" in page.text
    assert client.get(f"/partner/feeds/{sftp['id']}").status_code == 200
    # a save that keeps the stored password: refused, naming the field, nothing written
    same = {k: v for k, v in sftp_destination(sftp_server).items() if k != "password"}
    refused = r.partner("PUT", f"/v1/feeds/{sftp['id']}", 422,
                        json=feed_body(name="Renamed", destination=same))
    assert refused["field"] == "destination.password"
    reason = ("the stored password cannot be opened with this server's POSTBACK_SECRET_KEY;"
              " enter it again")
    assert refused["message"] == f"destination.password: {reason}"
    assert r.partner("GET", f"/v1/feeds/{sftp['id']}", 200)["name"] == "Daily actions"
    # a run that needs it fails with that reason; the other feed's run goes out
    failed = r.partner("POST", f"/v1/feeds/{sftp['id']}/run", 202)["run_id"]
    fine = r.partner("POST", f"/v1/feeds/{hosted['id']}/run", 202)["run_id"]
    work(rekeyed)
    run = r.partner("GET", f"/v1/feeds/{sftp['id']}/runs/{failed}", 200)
    assert run["status"] == "failed" and run["error"] == reason
    assert r.partner("GET", f"/v1/feeds/{hosted['id']}/runs/{fine}", 200)["status"] == \
        "succeeded"
    tested = r.partner("POST", f"/v1/feeds/{sftp['id']}/test", 200)
    assert tested["ok"] is False and tested["answer"] == reason
    assert sftp_server.auth_attempts == []
    # entering the password again seals it under the new key
    r.partner("PUT", f"/v1/feeds/{sftp['id']}", 200,
              json=feed_body(destination=sftp_destination(sftp_server)))
    assert run_now(r, sftp["id"])["status"] == "succeeded"


@pytest.mark.parametrize("stage", ["chunk", "produced", "delivered"])
def test_a_run_killed_between_phases_resumes_without_losing_or_resending_its_file(
        w: World, sftp_server: SftpServer, stage: str) -> None:
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(
        destination=sftp_destination(sftp_server)))
    churn(w)
    settle(w.service)
    queued = w.partner("POST", f"/v1/feeds/{made['id']}/run", 202)
    child = multiprocessing.get_context("spawn").Process(
        target=crash_at,
        args=(w.service.settings.database_url, w.service.settings.secret_key, stage))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    with w.service.db.connect() as conn:
        phase = conn.execute(select(feed_run.c.phase).where(
            feed_run.c.id == queued["run_id"])).scalar_one()
    assert phase == {"chunk": "producing", "produced": "produced",
                     "delivered": "delivering"}[stage]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a fresh executor, once the dead one's lease ends
        work(w.service)
        run = w.partner("GET", f"/v1/feeds/{made['id']}/runs/{queued['run_id']}", 200)
        if run["status"] != "running":
            break
        time.sleep(0.2)
    assert run["status"] == "succeeded", run
    assert run["rows"] == 5
    on_server = (sftp_server.root / run["file_name"]).read_bytes()
    assert on_server == download(w, run)
    assert len(renames(sftp_server)) == 1  # delivered once
    if stage == "delivered":
        assert run["answer"].startswith("already delivered")


# -- done when ---------------------------------------------------------------------------------

def test_a_partner_keeps_its_books_from_daily_csv_files_over_sftp(
        w: World, sftp_server: SftpServer) -> None:
    """Issue #13's "done when": creates, modifications, reversals, lockings and clearings,
    a daily file each day; the partner's books rebuilt from the files alone are the brand's
    ledger."""
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body(
        schedule={"every": "daily", "at": "06:00", "time_zone": "UTC"},
        destination=sftp_destination(sftp_server)))

    def a_day_passes() -> None:
        with w.service.db.begin() as conn:  # the day's 06:00 has come
            conn.execute(update(feed).where(feed.c.id == made["id"]).values(
                next_run_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert work(w.service)["scheduled"] == 1

    ids = churn(w)
    a_day_passes()
    more = [w.report(amount="20.00", payout="2.00")["id"] for _ in range(3)]
    w.brand("PATCH", f"/v1/actions/{more[0]}", 200,
            json={"amount": "25.00", "payout": "2.50", "reason": "ORDER_UPDATE"})
    w.brand("POST", f"/v1/actions/{more[1]}/reverse", 200, json={"reason": "CONS_FRAUD"})
    a_day_passes()
    locked = run_due(w.service.db, datetime.now(UTC) + timedelta(days=31))
    assert locked["locked"] >= 1
    a_day_passes()
    cleared = run_due(w.service.db, datetime.now(UTC) + timedelta(days=60))
    assert cleared["cleared"] >= 1
    w.brand("PATCH", f"/v1/actions/{ids[2]}", 409,
            json={"amount": "1.00", "payout": "0.10", "reason": "ORDER_UPDATE"})
    a_day_passes()
    runs = w.partner("GET", f"/v1/feeds/{made['id']}/runs", 200)["items"]
    assert [r["status"] for r in runs] == ["succeeded"] * 4
    files = sorted(sftp_server.root.iterdir(), key=lambda p: int(p.name.split("run")[1]
                                                                  .split(".")[0]))
    assert [p.name for p in files] == [r["file_name"] for r in reversed(runs)]
    books: dict[str, dict[str, str]] = {}
    for path in files:
        apply(books, csv_rows(path.read_bytes()))
    brand = ledger(w)
    assert books == brand
    assert {b["Status"] for b in brand.values()} == {"APPROVED", "REVERSED"}
    assert any(b["ClearedDate"] for b in brand.values())


def test_cron_users_run_due_feeds_with_the_cli(w: World) -> None:
    if not w.service.settings.database_url.startswith("sqlite"):
        pytest.skip("the command is the same on PostgreSQL; once is enough")
    made = w.partner("POST", "/v1/feeds", 201, json=feed_body())
    churn(w)
    with w.service.db.begin() as conn:
        conn.execute(update(feed).where(feed.c.id == made["id"]).values(
            next_run_at=datetime.now(UTC) - timedelta(seconds=1)))
    env = {**os.environ, "POSTBACK_DATABASE_URL": w.service.settings.database_url,
           "POSTBACK_SECRET_KEY": str(w.service.settings.secret_key)}
    out = subprocess.run([sys.executable, "-m", "postback", "feeds", "run-due"], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "scheduled": 1, "worked": 1, "files_deleted": 0}
    (run,) = w.partner("GET", f"/v1/feeds/{made['id']}/runs", 200)["items"]
    assert run["status"] == "succeeded" and run["rows"] == 5
