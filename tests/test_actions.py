"""The action ledger through the API: reporting, changes, and the 409/422 rules."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from postback.db.schema import action, action_update, delivery
from postback.models import ActionIn
from postback.services.ledger import report_actions
from tests.conftest import Service, World, build_world


def count(service: Service, table: Any) -> int:
    with service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_report_returns_the_stored_action_with_contract_dates(world: World) -> None:
    body = world.action(
        oid="ORD-1", amount="1000", payout="27.75", currency="EUR",
        event_date="2026-11-02T20:04:05+02:00", referring_type="CLICK_COOKIE",
        sub_id1="member-1", customer_status="NEW", customer_country="US",
        items=[{"sku": "SH-1", "name": "Runner", "category": "Shoes", "quantity": 2,
                "amount": "500.00", "payout": "13.875"[:5]}])
    out = world.brand("POST", "/v1/actions", 201, json=body)
    assert out["status"] == "PENDING" and out["status_detail"] == "OPEN"
    assert out["amount"] == "1000.00" and out["payout"] == "27.75" and out["currency"] == "EUR"
    assert out["event_date"] == "2026-11-02T18:04:05+00:00"
    assert out["locking_date"] == "2026-12-02T18:04:05+00:00"  # 30 days after the event
    assert out["clearing_date"] == "2026-12-22T18:04:05+00:00"  # 20 days after locking
    assert out["items"][0]["amount"] == "500.00" and out["items"][0]["payout"] == "13.87"
    got = world.partner("GET", f"/v1/actions/{out['id']}", 200)
    assert got["updates"] == [{
        "sequence": 1, "trigger": "TRACKED", "reason": None, "status": "PENDING",
        "amount": "1000.00", "payout": "27.75", "delta_amount": "1000.00",
        "delta_payout": "27.75", "created_at": got["creation_date"]}]


def test_currency_defaults_to_the_programs(world: World) -> None:
    assert world.report()["currency"] == "USD"


def test_batch_is_all_or_nothing(world: World) -> None:
    good = [world.action() for _ in range(3)]
    out = world.brand("POST", "/v1/actions/batch", 201, json={"actions": good})
    assert out["count"] == 3 and [i["oid"] for i in out["items"]] == [a["oid"] for a in good]
    bad = [world.action(), world.action(), world.action(payout=1.5)]
    err = world.brand("POST", "/v1/actions/batch", 422, json={"actions": bad})
    assert err["message"].startswith("actions[2].payout: send money as a decimal string")
    dup = [world.action(oid="SAME"), world.action(), world.action(oid="SAME")]
    err = world.brand("POST", "/v1/actions/batch", 409, json={"actions": dup})
    assert err["rule"] == "oid_reused" and "actions[2].oid" in err["message"]
    assert count(world.service, action) == 3
    assert world.brand("POST", "/v1/actions/batch", 422,
                       json={"actions": []})["message"].startswith("actions:")


def test_batches_are_capped_at_10000(world: World) -> None:
    one = world.action()
    err = world.brand("POST", "/v1/actions/batch", 422, json={"actions": [one] * 10_001})
    assert "actions" in err["message"] and "10000" in err["message"]


@pytest.mark.parametrize(("fields", "status", "rule", "text"), [
    ({"oid": "DUP"}, 409, "oid_reused", "oid 'DUP' is already used"),
    ({"event_type_id": 999_999}, 422, "invalid", "event type 999999 is not in program"),
])
def test_report_rules(world: World, fields: dict[str, Any], status: int, rule: str,
                      text: str) -> None:
    world.report(oid="DUP")
    err = world.brand("POST", "/v1/actions", status, json=world.action(**fields))
    assert err["error"] == rule and text in err["message"]


def test_event_type_outside_the_contract_and_no_contract(world: World) -> None:
    lead = world.brand("POST", f"/v1/programs/{world.program_id}/event-types", 201,
                       json={"name": "Lead", "action_type": "LEAD"})
    err = world.brand("POST", "/v1/actions", 422, json=world.action(event_type_id=lead["id"]))
    assert err["rule"] == "event_type_not_in_contract"
    assert f"event type {lead['id']} is outside partner" in err["message"]
    other = world.service.call("POST", "/v1/partners", "test-admin-token", 201,
                               json={"name": "Other", "partner_type": "content"})
    err = world.brand("POST", "/v1/actions", 422, json=world.action(partner_id=other["id"]))
    assert err["rule"] == "no_contract"


def test_the_same_oid_is_fine_under_another_event_type(world: World) -> None:
    from tests.test_scopes import lead_type

    lead = lead_type(world)
    world.report(oid="X")
    world.report(oid="X", event_type_id=lead)


@pytest.mark.parametrize(("body", "field"), [
    ({"amount": 10.5}, "amount"),
    ({"amount": "10.123"}, "amount"),
    ({"payout": "-1.00"}, "payout"),
    ({"event_date": "2026-11-02T18:04:05"}, "event_date"),
    ({"currency": "usd"}, "currency"),
    ({"surprise": 1}, "surprise"),
    ({"oid": ""}, "oid"),
    ({"sub_id1": "a\x00b"}, "sub_id1"),
    ({"customer_status": "MAYBE"}, "customer_status"),
    # strict where money is concerned
    ({"amount": "\u0661\u0662.\u0660\u0660"}, "amount"),  # Arabic-Indic digits
    ({"amount": " 1.00 "}, "amount"),
    ({"amount": 12}, "amount"),
    ({"items": [{"sku": "S", "quantity": False}]}, "items[0].quantity"),
    ({"items": [{"sku": "S", "quantity": 0}]}, "items[0].quantity"),
    ({"items": [{"sku": "S", "quantity": "2"}]}, "items[0].quantity"),
    # dates at the calendar's edges, and numbers that are not dates
    ({"event_date": "9999-12-31T23:59:59-12:00"}, "event_date"),
    ({"event_date": "0001-01-01T00:00:00+14:00"}, "event_date"),
    ({"event_date": 1764547200}, "event_date"),
])
def test_bad_input_names_the_field_and_writes_nothing(world: World, body: dict[str, Any],
                                                      field: str) -> None:
    err = world.brand("POST", "/v1/actions", 422, json=world.action(**body))
    assert err["message"].startswith(f"{field}:"), err
    assert err["errors"][0]["field"] == field
    assert count(world.service, action) == 0


def test_malformed_json_is_a_clear_422(world: World) -> None:
    response = world.service.client.post(
        "/v1/actions", content=b'{"oid": ', headers={"Authorization": f"Bearer {world.brand_key}",
                                                     "Content-Type": "application/json"})
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["message"]


def test_modify_reverse_approve_and_their_rules(world: World) -> None:
    a = world.report(amount="100.00", payout="10.00")
    path = f"/v1/actions/{a['id']}"
    err = world.brand("PATCH", path, 422, json={"payout": "5.00", "reason": "BECAUSE"})
    assert err["rule"] == "unknown_reason_code" and "ITEM_RETURNED" in err["message"]
    err = world.brand("PATCH", path, 422, json={"payout": "10.00", "reason": "ORDER_UPDATE"})
    assert err["rule"] == "no_change"
    m = world.brand("PATCH", path, 200, json={"amount": "80.00", "payout": "8.00",
                                              "reason": "ITEM_RETURNED"})
    assert (m["amount"], m["payout"], m["sequence"], m["status"]) == ("80.00", "8.00", 2,
                                                                      "PENDING")
    r = world.brand("POST", f"{path}/reverse", 200, json={"reason": "CONS_FRAUD"})
    assert (r["status"], r["status_detail"], r["payout"]) == ("REVERSED", "CONS_FRAUD", "0.00")
    err = world.brand("POST", f"{path}/reverse", 409, json={"reason": "CONS_FRAUD"})
    assert err["rule"] == "already_reversed"
    err = world.brand("PATCH", path, 409, json={"payout": "1.00", "reason": "ORDER_UPDATE"})
    assert err["rule"] == "action_reversed"
    updates = world.brand("GET", path, 200)["updates"]
    assert [(u["trigger"], u["delta_payout"]) for u in updates] == [
        ("TRACKED", "10.00"), ("MODIFIED", "-2.00"), ("REVERSED", "-8.00")]

    b = world.report()
    ok = world.brand("POST", f"/v1/actions/{b['id']}/approve", 200)
    assert ok["status"] == "APPROVED" and ok["status_detail"] == "PAYMENT_PENDING"
    assert ok["locked_at"] and ok["clearing_date"]
    err = world.brand("PATCH", f"/v1/actions/{b['id']}", 409,
                      json={"payout": "1.00", "reason": "ORDER_UPDATE"})
    assert err["rule"] == "action_locked" and "APPROVED" in err["message"]
    world.brand("POST", f"/v1/actions/{b['id']}/reverse", 409, json={"reason": "REJECTED"})
    world.brand("POST", f"/v1/actions/{b['id']}/approve", 409)


def test_lifecycle_run_locks_and_clears_on_contract_dates(world: World) -> None:
    """``postback lifecycle run --as-of`` run as a real process against the same database."""
    world.subscribe("http://127.0.0.1:9/?t={Trigger}")
    a = world.report(event_date="2026-11-02T18:04:05+00:00")  # locks 12-02, clears 12-22
    env = {**os.environ, "POSTBACK_DATABASE_URL": world.service.settings.database_url}

    def run(as_of: str) -> str:
        done = subprocess.run([sys.executable, "-m", "postback", "lifecycle", "run",
                               "--as-of", as_of], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert '"locked": 0' in run("2026-12-02T18:04:04Z")
    assert world.brand("GET", f"/v1/actions/{a['id']}", 200)["status"] == "PENDING"
    assert '"locked": 1' in run("2026-12-02T18:04:05Z")
    got = world.brand("GET", f"/v1/actions/{a['id']}", 200)
    assert (got["status"], got["status_detail"]) == ("APPROVED", "PAYMENT_PENDING")
    assert got["locked_at"] == "2026-12-02T18:04:05+00:00"
    err = world.brand("PATCH", f"/v1/actions/{a['id']}", 409,
                      json={"payout": "1.00", "reason": "ORDER_UPDATE"})
    assert err["rule"] == "action_locked"
    assert '"cleared": 1' in run("2026-12-31T00:00:00Z")
    got = world.brand("GET", f"/v1/actions/{a['id']}", 200)
    assert got["status_detail"] == "PAID" and got["cleared_at"] == "2026-12-22T18:04:05+00:00"
    assert [u["trigger"] for u in got["updates"]] == ["TRACKED", "LOCKED", "CLEARED"]
    # impact.com's rule: locking and clearing send no Action Life Cycle postback
    triggers = [d["trigger"] for d in world.partner("GET", "/v1/deliveries", 200)["items"]]
    assert triggers == ["TRACKED"]
    bad = subprocess.run([sys.executable, "-m", "postback", "lifecycle", "run", "--as-of",
                          "next tuesday"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "ISO-8601" in bad.stderr


def test_a_pending_action_past_its_locking_date_is_already_final(world: World) -> None:
    a = world.report(event_date="2020-01-01T00:00:00+00:00")
    err = world.brand("PATCH", f"/v1/actions/{a['id']}", 409,
                      json={"payout": "1.00", "reason": "ORDER_UPDATE"})
    assert err["rule"] == "action_locked" and "locked at 2020-01-31" in err["message"]


def test_open_ended_actions_stay_pending_until_approved(service: Service) -> None:
    w = build_world(service, locking={"rule": "open_ended"})
    a = w.report(event_date="2020-01-01T00:00:00+00:00")
    assert a["locking_date"] is None and a["clearing_date"] is None
    w.brand("PATCH", f"/v1/actions/{a['id']}", 200, json={"payout": "1.00",
                                                          "reason": "ORDER_UPDATE"})


def test_list_filters_and_cursor(world: World) -> None:
    ids = [world.report()["id"] for _ in range(5)]
    world.brand("POST", f"/v1/actions/{ids[0]}/reverse", 200, json={"reason": "REJECTED"})
    page = world.partner("GET", "/v1/actions?limit=2", 200)
    assert [a["id"] for a in page["items"]] == ids[:-3:-1]
    page2 = world.partner("GET", f"/v1/actions?limit=2&cursor={page['next_cursor']}", 200)
    assert [a["id"] for a in page2["items"]] == [ids[2], ids[1]]
    rev = world.brand("GET", "/v1/actions?status=REVERSED", 200)
    assert [a["id"] for a in rev["items"]] == [ids[0]] and rev["next_cursor"] is None
    assert world.brand("GET", "/v1/actions?status=LOST", 422)["message"].startswith("status:")


def test_change_and_postbacks_commit_together_or_not_at_all(world: World) -> None:
    """The outbox shares the ledger's transaction: a rollback leaves neither behind."""
    world.subscribe("http://127.0.0.1:9/?id={ActionId}")
    body = ActionIn.model_validate(world.action())
    with pytest.raises(RuntimeError), world.service.db.begin() as conn:
        report_actions(conn, world.brand_id, [body], datetime.now(UTC))
        assert conn.execute(select(func.count()).select_from(delivery)).scalar_one() == 1
        raise RuntimeError("crash before commit")
    assert count(world.service, action) == 0
    assert count(world.service, action_update) == 0
    assert count(world.service, delivery) == 0


def test_a_batch_of_10000_is_accepted_whole_with_its_postbacks(make_service: Any) -> None:
    service = make_service(start_engine=False)
    world = build_world(service)
    world.subscribe("https://pb.example/?id={ActionId}&e={EventId}")
    actions = [world.action() for _ in range(10_000)]
    out = world.brand("POST", "/v1/actions/batch", 201, json={"actions": actions})
    assert out["count"] == 10_000
    assert count(service, action) == count(service, action_update) == 10_000
    assert count(service, delivery) == 10_000
    # one more, reusing an oid from the big batch: refused, nothing written
    err = world.brand("POST", "/v1/actions/batch", 409,
                      json={"actions": [world.action(), world.action(oid=actions[9_999]["oid"])]})
    assert err["rule"] == "oid_reused" and "actions[1].oid" in err["message"]
    assert count(service, action) == 10_000


@pytest.mark.parametrize("value", ["0.5", "1764547200", "9999-12-31T23:59:59-12:00",
                                   "0001-01-01T00:00:00+14:00", "yesterday"])
@pytest.mark.parametrize("path", ["/v1/actions", "/v1/deliveries"])
def test_time_filters_they_cannot_read_are_a_clear_422(world: World, value: str,
                                                       path: str) -> None:
    who = world.brand if path == "/v1/actions" else world.partner
    err = who("GET", f"{path}?until={value}", 422)
    assert err["message"].startswith("until:"), err
