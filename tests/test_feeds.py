"""Scheduled data feeds, end to end on SQLite and PostgreSQL: feeds saved and refused over
HTTP, runs worked by the real executor, files read back with their own parsers and compared
with the ledger, hosted downloads by key and by signed link, SFTP and email to real servers
on loopback, two executors racing, a run killed between its phases, retention."""

from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from postback.db.engine import make_engine
from postback.db.schema import feed, feed_file_chunk, feed_run
from postback.services import feed_runs
from postback.services.feed_runs import run_feeds
from postback.services.scheduler import run_due
from tests.conftest import Service, World, build_world, settings_for
from tests.feed_servers import (  # noqa: F401
    SftpServer,
    SmtpServer,
    make_sftp_server,
    sftp_server,
    smtp_server,
)

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


def settle(service: Service) -> None:
    """On PostgreSQL a feed reads a change once every transaction older than it has ended
    (in the whole server: the change log's no-skip rule), so a change made a moment ago
    can wait for the next run; the tests wait for that before a run."""
    if not service.settings.database_url.startswith("postgresql"):
        return
    deadline = time.monotonic() + 60
    with service.db.connect() as conn:
        while time.monotonic() < deadline:
            behind = conn.execute(text(
                "SELECT count(*) FROM change_log WHERE txid >= "
                "pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one()
            conn.rollback()
            if not behind:
                return
            time.sleep(0.05)


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


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"columns": []}, "columns", "at least one column"),
    ({"columns": ["ActionId", "Payot"]}, "columns[1]", "did you mean Payout"),
    ({"columns": ["ActionId", "ActionId"]}, "columns[1]", "already column 1"),
    ({"columns": ["EventId"]}, "columns[0]", "ChangeId"),
    ({"columns": ["CatalogItemId"]}, "columns[0]", "not a column of a actions feed"),
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
])
def test_every_refusal_names_the_field_and_the_fix(w: World, change: dict[str, Any],
                                                   field: str, words: str) -> None:
    r = w.service.client.post("/v1/feeds", json=feed_body(**change),
                              headers={"Authorization": f"Bearer {w.partner_key}"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"].startswith(field), body
    assert words in body["message"], body
    assert w.partner("GET", "/v1/feeds", 200)["items"] == []  # nothing half-written


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
