"""A signed download link names one run for good: after its feed is deleted it opens
nothing, never the run another partner's feed gets next (SQLite would reuse the id)."""

from __future__ import annotations

from typing import Any

from tests.conftest import build_world
from tests.test_feeds import feed_body, work


def test_an_old_link_never_opens_another_partners_file(make_service: Any) -> None:
    service = make_service(start_engine=False)
    a, b = build_world(service), build_world(service)
    a.report(oid="A-ORDER")
    b.report(oid="B-SECRET-ORDER")
    feed = a.partner("POST", "/v1/feeds", 201, json=feed_body(columns=["ActionId", "Oid"]))
    run_id = a.partner("POST", f"/v1/feeds/{feed['id']}/run", 202)["run_id"]
    work(service)
    link = a.partner("GET", f"/v1/feeds/{feed['id']}/runs/{run_id}", 200)["download_url"]
    path = "/" + link.split("://", 1)[1].split("/", 1)[1]
    assert b"A-ORDER" in service.client.get(path).content
    a.partner("DELETE", f"/v1/feeds/{feed['id']}", 204)
    theirs = b.partner("POST", "/v1/feeds", 201, json=feed_body(columns=["ActionId", "Oid"]))
    b.partner("POST", f"/v1/feeds/{theirs['id']}/run", 202)
    work(service)
    answer = service.client.get(path)
    assert answer.status_code == 404 and b"B-SECRET-ORDER" not in answer.content
