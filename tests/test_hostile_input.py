"""Hostile input gets a 4xx naming the problem, never a 500, and writes nothing."""

from __future__ import annotations

from postback.db.schema import action
from tests.conftest import World
from tests.test_actions import count


def post_raw(world: World, path: str, body: bytes, **headers: str) -> tuple[int, dict[str, str]]:
    response = world.service.client.post(path, content=body, headers={
        "Authorization": f"Bearer {world.brand_key}", "Content-Type": "application/json",
        **headers})
    return response.status_code, response.json()


def test_oversized_bodies_are_refused_before_they_are_read(world: World) -> None:
    status, body = post_raw(world, "/v1/actions/batch", b"[" + b" " * (33 * 1024 * 1024))
    assert status == 413 and "over 32 MiB" in body["message"]


def test_non_utf8_and_malformed_bodies(world: World) -> None:
    status, body = post_raw(world, "/v1/actions", b'{"oid": "\xff\xfe"}')
    assert status == 400 and body["message"] == (
        "the body is not valid JSON (it must be UTF-8 text)")
    status, body = post_raw(world, "/v1/actions", b"[1, 2]")
    assert status == 422
    status, body = post_raw(world, "/v1/actions", b'{"oid": "\\ud800"}')
    assert status == 422
    assert count(world.service, action) == 0


def test_sql_looking_strings_are_just_data(world: World) -> None:
    nasty = "x'); DROP TABLE action; --"
    created = world.report(oid=nasty, sub_id1="1 OR 1=1", promo_code='"; DELETE FROM brand')
    got = world.brand("GET", f"/v1/actions/{created['id']}", 200)
    assert (got["oid"], got["sub_id1"]) == (nasty, "1 OR 1=1")
    assert world.brand("GET", f"/v1/actions?oid={nasty}", 200)["items"][0]["id"] == created["id"]


def test_ids_out_of_range_are_a_clear_4xx(world: World) -> None:
    assert world.brand("GET", f"/v1/programs/{2**64}", 422)["message"].startswith("program_id:")
    err = world.brand("POST", "/v1/actions", 422, json=world.action(program_id=2**64))
    assert err["message"].startswith("program_id:")


def test_true_and_false_are_no_numbers_and_numbers_no_true_or_false(world: World) -> None:
    contract = f"/v1/programs/{world.program_id}/contracts/{world.partner_id}"
    terms = {"event_type_ids": [world.event_type_id],
             "locking": {"rule": "days_after_event", "days": False},
             "clearing": {"rule": "days_after_locking", "days": 20}}
    err = world.brand("PUT", contract, 422, json=terms)
    assert (err["field"], err["message"]) == (
        "locking.days", "locking.days: must be a whole number, not true or false")
    err = world.brand("PUT", contract, 422, json={**terms, "event_type_ids": [True],
                                                  "locking": {"rule": "open_ended"}})
    assert err["field"] == "event_type_ids[0]"
    bulk = f"/v1/programs/{world.program_id}/catalog/items/bulk"
    err = world.brand("POST", bulk, 422, json={"items": [], "remove_missing": 0})
    assert (err["field"], err["message"]) == ("remove_missing",
                                              "remove_missing: must be true or false")
    err = world.partner("PUT", "/v1/event-notifications/action-lifecycle", 422,
                        json={"url": "https://example.com/pb", "enabled": "no"})
    assert err["field"] == "enabled"
    zh = world.service.client.put(
        "/v1/event-notifications/action-lifecycle", json={"url": "https://example.com/pb",
                                                          "minimum_delay_seconds": True},
        headers={"Authorization": f"Bearer {world.partner_key}", "Accept-Language": "zh"})
    assert zh.json()["message"].endswith("必须是整数，不能是 true 或 false")
