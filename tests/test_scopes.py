"""Scopes: event-level settings and brand-created postbacks, beside the global setting."""

from __future__ import annotations

import time

from tests.conftest import Service, World, build_world
from tests.receiver import Receiver


def lead_type(world: World) -> int:
    lead = world.brand("POST", f"/v1/programs/{world.program_id}/event-types", 201,
                       json={"name": "Lead", "action_type": "LEAD"})
    world.brand("PUT", f"/v1/programs/{world.program_id}/contracts/{world.partner_id}", 200,
                json={"event_type_ids": [world.event_type_id, lead["id"]],
                      "locking": {"rule": "open_ended"},
                      "clearing": {"rule": "days_after_locking", "days": 1}})
    return int(lead["id"])


def test_event_level_fires_for_new_actions_of_its_event_type_beside_the_global(
        world: World, receiver: Receiver) -> None:
    lead = lead_type(world)
    world.subscribe(f"{receiver.url}/global?t={{Trigger}}&a={{ActionId}}")
    created = world.partner("POST", "/v1/event-notifications/action-lifecycle/event-level", 201,
                            json={"program_id": world.program_id, "event_type_id": lead,
                                  "url": f"{receiver.url}/lead?t={{Trigger}}&a={{ActionId}}"})
    assert created["scope"] == "event_level" and created["event_type_id"] == lead
    sale = world.report()
    lead_action = world.report(event_type_id=lead)
    world.brand("POST", f"/v1/actions/{lead_action['id']}/reverse", 200,
                json={"reason": "REJECTED"})
    receiver.wait_for(4)
    time.sleep(0.3)
    got = sorted((r.path.split("?")[0], r.query["t"], r.query["a"]) for r in receiver.requests)
    assert got == sorted([
        ("/global", "TRACKED", str(sale["id"])),
        ("/global", "TRACKED", str(lead_action["id"])),
        ("/global", "REVERSED", str(lead_action["id"])),
        ("/lead", "TRACKED", str(lead_action["id"])),  # new actions only: no REVERSED
    ])
    listed = world.partner("GET", "/v1/event-notifications/action-lifecycle/event-level", 200)
    assert [s["id"] for s in listed["items"]] == [created["id"]]
    world.partner("DELETE", f"/v1/event-notifications/action-lifecycle/event-level/"
                  f"{created['id']}", 204)
    assert world.partner("GET", "/v1/event-notifications/action-lifecycle/event-level",
                         200)["items"] == []


def test_event_level_needs_a_contracted_event_type(world: World) -> None:
    other = world.brand("POST", f"/v1/programs/{world.program_id}/event-types", 201,
                        json={"name": "Call", "action_type": "CALL"})
    path = "/v1/event-notifications/action-lifecycle/event-level"
    err = world.partner("POST", path, 422, json={
        "program_id": world.program_id, "event_type_id": other["id"], "url": "https://x.example/"})
    assert err["rule"] == "event_type_not_in_contract"
    world.partner("POST", path, 404, json={"program_id": world.program_id,
                                           "event_type_id": 99999, "url": "https://x.example/"})
    err = world.partner("POST", path, 422, json={
        "program_id": 99999, "event_type_id": world.event_type_id, "url": "https://x.example/"})
    assert err["message"].startswith("program_id:")


def test_brand_created_postbacks(service: Service, receiver: Receiver) -> None:
    world = build_world(service)
    rival = build_world(service)
    path = f"/v1/partners/{world.partner_id}/postbacks"
    created = world.brand("POST", path, 201, json={
        "event_type_id": world.event_type_id, "method": "POST", "body_format": "json",
        "body": '{"order": "{Oid}", "payout": {Payout}}', "url": f"{receiver.url}/brand",
        "headers": {"X-Brand-Key": "k"}})
    assert created["scope"] == "brand" and created["brand_id"] == world.brand_id
    # outside the contract: 422; another brand's event type: 404
    lead = world.brand("POST", f"/v1/programs/{world.program_id}/event-types", 201,
                       json={"name": "Lead", "action_type": "LEAD"})
    err = world.brand("POST", path, 422, json={"event_type_id": lead["id"],
                                               "url": "https://x.example/"})
    assert err["rule"] == "event_type_not_in_contract"
    rival.brand("POST", path, 404, json={"event_type_id": world.event_type_id,
                                         "url": "https://x.example/"})
    # another brand's partner is not found, like a made-up one
    assert rival.brand("GET", path, 404)["message"] == "partner not found"
    rival.brand("DELETE", f"{path}/{created['id']}", 404)
    # the partner reads it (header masked) and tests it, but cannot change it
    mine = world.partner("GET", "/v1/brand-postbacks", 200)["items"]
    assert [(s["id"], s["headers"]) for s in mine] == [(created["id"],
                                                        {"X-Brand-Key": "********"})]
    assert rival.partner("GET", "/v1/brand-postbacks", 200)["items"] == []
    test = world.partner("POST", f"/v1/brand-postbacks/{created['id']}/test", 200, json={})
    assert test["outcome"] == "success" and test["request"]["body"] == (
        '{"order": "ORD-2026-55102", "payout": 27.75}')
    rival.partner("POST", f"/v1/brand-postbacks/{created['id']}/test", 404, json={})
    assert world.service.client.delete(
        f"{path}/{created['id']}",
        headers={"Authorization": f"Bearer {world.partner_key}"}).status_code == 403
    # and it fires for new actions of its event type
    a = world.report(oid="B-1", payout="5.00")
    got = receiver.wait_for(2)
    assert got[1].body == b'{"order": "B-1", "payout": 5.00}'
    assert got[1].header("X-Brand-Key") == "k"
    assert world.partner("GET", f"/v1/deliveries?action_id={a['id']}", 200)["items"][0][
        "type"] == "action-lifecycle"
    world.brand("DELETE", f"{path}/{created['id']}", 204)
    assert world.partner("GET", "/v1/brand-postbacks", 200)["items"] == []
