"""Action inquiries: the workflow, its rules, its postbacks, and auto-approval."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postback.core.inquiries import REJECT_REASONS
from postback.services.scheduler import run_due
from tests.conftest import Service, World, build_world
from tests.receiver import Receiver

FIELDS = ("InquiryId", "MediaPartnerInquiryId", "InquiryType", "OrderId", "ResolutionStatus",
          "RejectReason", "FinalPayout", "ExpectedPayout", "ActionId", "Trigger",
          "ResolutionDeadlineDate", "Sequence")
BODY = "{" + ", ".join(f'"{f}": "{{{f}}}"' for f in FIELDS) + "}"


def claim(world: World, **fields: Any) -> dict[str, Any]:
    body = {"program_id": world.program_id, "inquiry_type": "UNTRACKED", "oid": "MISSING-1",
            "transaction_date": "2026-11-02T18:04:05+00:00", "transaction_amount": "80.00",
            "expected_payout": "6.40", "customer_id": "C-1",
            "media_partner_inquiry_id": "CLAIM-1", "notes": "receipt attached"}
    body.update(fields)
    result: dict[str, Any] = world.partner("POST", "/v1/inquiries", 201, json=body)
    return result


def subscribe_inquiries(world: World, receiver: Receiver) -> None:
    world.partner("PUT", "/v1/event-notifications/action-inquiry", 200, json={
        "url": f"{receiver.url}/inquiry", "method": "POST", "body": BODY})


def bodies(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests if r.path.startswith(path)]


def test_inquiries_are_for_cashback_and_loyalty_partners_only(service: Service) -> None:
    world = build_world(service, partner_type="content")
    for method, path, body in (
            ("PUT", "/v1/event-notifications/action-inquiry", {"url": "https://x.example/"}),
            ("POST", "/v1/event-notifications/action-inquiry/test",
             {"url": "https://x.example/"}),
            ("POST", "/v1/inquiries", {"program_id": world.program_id,
                                       "inquiry_type": "UNTRACKED", "oid": "X",
                                       "transaction_date": "2026-11-02T00:00:00Z",
                                       "transaction_amount": "1.00",
                                       "expected_payout": "1.00"})):
        err = world.partner(method, path, 403, json=body)
        assert "only for cashback and loyalty partners" in err["message"]
        assert "type content" in err["message"]
    listed = {t["type"]: t for t in world.partner("GET", "/v1/event-notifications",
                                                  200)["items"]}
    assert listed["action-inquiry"]["available"] is False
    assert listed["product-data-change"]["available"] is True


def test_valid_resolution_creates_the_action_and_both_postbacks(world: World,
                                                                 receiver: Receiver) -> None:
    subscribe_inquiries(world, receiver)
    world.subscribe(f"{receiver.url}/life?t={{Trigger}}&r={{ReferringType}}&o={{Oid}}"
                    "&p={Payout}")
    world.brand("PUT", f"/v1/programs/{world.program_id}/inquiry-settings", 200,
                json={"resolution_deadline_days": 30})
    created = claim(world)
    assert created["state"] == "OPEN" and created["resolution_status"] == "UNRESOLVED"
    deadline = datetime.fromisoformat(created["resolution_deadline_date"])
    assert deadline - datetime.fromisoformat(created["creation_date"]) == timedelta(days=30)
    resolved = world.brand("POST", f"/v1/inquiries/{created['id']}/resolve", 200, json={
        "resolution_status": "VALID", "event_type_id": world.event_type_id, "payout": "7.00"})
    assert resolved["resolution_status"] == "VALID" and resolved["final_payout"] == "7.00"
    receiver.wait_for(3)
    time.sleep(0.2)
    created_pb, resolved_pb = sorted(bodies(receiver, "/inquiry"), key=lambda b: b["Sequence"])
    assert created_pb == {
        "InquiryId": str(created["id"]), "MediaPartnerInquiryId": "CLAIM-1",
        "InquiryType": "UNTRACKED", "OrderId": "MISSING-1", "ResolutionStatus": "UNRESOLVED",
        "RejectReason": "", "FinalPayout": "", "ExpectedPayout": "6.40", "ActionId": "",
        "Trigger": "INQUIRY_CREATED", "Sequence": "1",
        "ResolutionDeadlineDate": created["resolution_deadline_date"]}
    assert (resolved_pb["Trigger"], resolved_pb["ResolutionStatus"], resolved_pb["FinalPayout"],
            resolved_pb["ActionId"]) == ("INQUIRY_RESOLVED", "VALID", "7.00",
                                         str(resolved["action_id"]))
    life = [r.query for r in receiver.requests if r.path.startswith("/life")]
    assert life == [{"t": "TRACKED", "r": "ACTION_INQUIRY", "o": "MISSING-1", "p": "7.00"}]
    action = world.partner("GET", f"/v1/actions/{resolved['action_id']}", 200)
    assert action["referring_type"] == "ACTION_INQUIRY" and action["amount"] == "80.00"


def test_declines_need_an_exact_reason(world: World, receiver: Receiver) -> None:
    subscribe_inquiries(world, receiver)
    inq = claim(world)
    path = f"/v1/inquiries/{inq['id']}/resolve"
    err = world.brand("POST", path, 422, json={"resolution_status": "DECLINED",
                                               "reject_reason": "nope"})
    assert err["message"].startswith("reject_reason: a DECLINED resolution needs one of")
    assert err["allowed"] == list(REJECT_REASONS)
    reason = "Transaction cannot be traced"
    out = world.brand("POST", path, 200, json={"resolution_status": "DECLINED",
                                               "reject_reason": reason})
    assert out["reject_reason"] == reason and out["action_id"] is None
    receiver.wait_for(2)
    last = max(bodies(receiver, "/inquiry"), key=lambda b: b["Sequence"])
    assert (last["ResolutionStatus"], last["RejectReason"]) == ("DECLINED", reason)
    err = world.brand("POST", path, 409, json={"resolution_status": "DECLINED",
                                               "reject_reason": reason})
    assert err["rule"] == "inquiry_not_open"


def test_partner_closes_its_own_and_nobody_else_sees_it(service: Service,
                                                        receiver: Receiver) -> None:
    world, other = build_world(service), build_world(service)
    subscribe_inquiries(world, receiver)
    inq = claim(world)
    other.partner("GET", f"/v1/inquiries/{inq['id']}", 404)
    other.partner("POST", f"/v1/inquiries/{inq['id']}/close", 404)
    other.brand("POST", f"/v1/inquiries/{inq['id']}/resolve", 404,
                json={"resolution_status": "DECLINED", "reject_reason": "Other"})
    assert other.brand("GET", "/v1/inquiries", 200)["items"] == []
    other.partner("POST", "/v1/inquiries", 404, json={
        "program_id": world.program_id, "inquiry_type": "UNTRACKED", "oid": "X",
        "transaction_date": "2026-11-02T00:00:00Z", "transaction_amount": "1.00",
        "expected_payout": "1.00"})  # not contracted on that program
    closed = world.partner("POST", f"/v1/inquiries/{inq['id']}/close", 200)
    assert (closed["state"], closed["resolution_status"]) == ("CLOSED", "CLOSED")
    world.partner("POST", f"/v1/inquiries/{inq['id']}/close", 409)
    world.brand("POST", f"/v1/inquiries/{inq['id']}/resolve", 409,
                json={"resolution_status": "VALID", "event_type_id": world.event_type_id})
    receiver.wait_for(2)
    assert max(bodies(receiver, "/inquiry"), key=lambda b: b["Sequence"])[
        "ResolutionStatus"] == "CLOSED"
    assert [i["id"] for i in world.brand("GET", "/v1/inquiries?state=CLOSED", 200)[
        "items"]] == [inq["id"]]


@pytest.mark.parametrize("mode", ["immediately", "after_days"])
def test_auto_approval_rules(world: World, mode: str) -> None:
    world.brand("PUT", f"/v1/programs/{world.program_id}/inquiry-settings", 200, json={
        "auto_approval": {"mode": mode, "days": 3, "max_expected_payout": "50.00",
                          "monthly_cap": "60.00", "event_type_id": world.event_type_id}})
    small = claim(world, oid="A", expected_payout="30.00")
    capped = claim(world, oid="B", expected_payout="45.00")
    big = claim(world, oid="C", expected_payout="80.00")
    now = datetime.now(UTC)
    if mode == "after_days":
        assert run_due(world.service.db, now)["auto_approved"] == 0
        now += timedelta(days=3, seconds=1)
    assert run_due(world.service.db, now)["auto_approved"] == 1

    def state(inq: dict[str, Any]) -> Any:
        return world.brand("GET", f"/v1/inquiries/{inq['id']}", 200)

    assert state(small)["resolution_status"] == "VALID" and state(small)["action_id"]
    assert state(capped)["state"] == "OPEN"  # 30 + 45 would pass the 60.00 monthly cap
    assert state(capped)["auto_approval_date"] is not None  # next month
    assert state(big)["state"] == "OPEN" and state(big)["auto_approval_date"] is None


def test_inquiry_settings_are_validated(world: World) -> None:
    path = f"/v1/programs/{world.program_id}/inquiry-settings"
    err = world.brand("PUT", path, 422, json={"auto_approval": {"mode": "immediately"}})
    assert err["message"].startswith("auto_approval.event_type_id: auto-approval needs")
    err = world.brand("PUT", path, 422, json={"auto_approval": {"mode": "sometimes"}})
    assert err["message"].startswith("auto_approval.mode:")
    assert world.brand("GET", path, 200)["auto_approval"]["mode"] == "off"


def test_the_inquiry_test_tool_uses_a_real_inquiry(world: World, receiver: Receiver) -> None:
    inq = claim(world)
    out = world.partner("POST", "/v1/event-notifications/action-inquiry/test", 200, json={
        "url": f"{receiver.url}/t?id={{InquiryId}}&t={{Trigger}}&c={{MediaPartnerInquiryId}}",
        "sample_id": inq["id"]})
    assert out["outcome"] == "success"
    assert receiver.wait_for(1)[0].query == {"id": str(inq["id"]), "t": "INQUIRY_CREATED",
                                             "c": "CLAIM-1"}
    err = world.partner("POST", "/v1/event-notifications/product-data-change/test", 422,
                        json={"url": f"{receiver.url}/t", "sample_id": 1})
    assert err["message"].startswith("sample_id:")
