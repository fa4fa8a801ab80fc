"""Product Data Change: catalog items, their diffs, and the postbacks real changes send."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Service, build_world
from tests.receiver import Receiver

SHOE = {"name": "Trail Runner 2", "current_price": "89.00", "original_price": "119.00",
        "currency": "USD", "stock_availability": "InStock",
        "url": "https://shop.example/p/sh-1", "category": "Shoes"}


def test_real_changes_notify_contracted_partners(service: Service, receiver: Receiver) -> None:
    world = build_world(service)
    stranger = build_world(service)  # a partner with no contract on world's program
    for w, path in ((world, "/mine"), (stranger, "/stranger")):
        w.partner("PUT", "/v1/event-notifications/product-data-change", 200, json={
            "url": f"{receiver.url}{path}?i={{CatalogItemId}}&c={{ChangeType}}"
                   "&f={ChangedFields}&p={CurrentPrice}&d={DiscountPercentage}"
                   "&s={StockAvailability}&t={Trigger}"})
    items = f"/v1/programs/{world.program_id}/catalog/items"

    def put(item_id: str, body: dict[str, Any], change: str) -> None:
        out = world.brand("PUT", f"{items}/{item_id}", 200, json=body)
        assert out["change"] == change

    put("SH-1", SHOE, "ADDED")
    put("SH-1", SHOE, "UNCHANGED")  # a re-upload of the same data sends nothing
    put("SH-1", {**SHOE, "current_price": "79.00", "stock_availability": "OutOfStock"},
        "UPDATED")
    world.brand("DELETE", f"{items}/SH-1", 204)
    world.brand("DELETE", f"{items}/SH-1", 404)
    receiver.wait_for(3)
    time.sleep(0.3)
    assert all(r.path.startswith("/mine") for r in receiver.requests)
    # by kind, not by arrival: the three are sent concurrently and may arrive in any
    # order; a partner orders them by {ChangeId}, a time-ordered UUIDv7
    got = {r.query["c"]: r.query for r in receiver.requests}
    assert len(receiver.requests) == 3 and sorted(got) == ["ADDED", "REMOVED", "UPDATED"]
    assert got["ADDED"] == {"i": "SH-1", "c": "ADDED", "t": "ADDED", "p": "89.00", "d": "25.21",
                            "s": "InStock", "f": "Name,Url,CurrentPrice,OriginalPrice,Currency,"
                                                 "StockAvailability,Category"}
    updated = got["UPDATED"]
    assert (updated["f"], updated["p"], updated["s"]) == (
        "CurrentPrice,StockAvailability", "79.00", "OutOfStock")
    assert got["REMOVED"]["p"] == "79.00"  # the item as it last was


def test_bulk_upsert_computes_the_diff(service: Service, receiver: Receiver) -> None:
    world = build_world(service)
    world.partner("PUT", "/v1/event-notifications/product-data-change", 200, json={
        "url": f"{receiver.url}/pb?i={{CatalogItemId}}&c={{ChangeType}}"})
    bulk = f"/v1/programs/{world.program_id}/catalog/items/bulk"
    first = [{"item_id": f"I-{n}", **SHOE, "name": f"Item {n}"} for n in range(5)]
    assert world.brand("POST", bulk, 200, json={"items": first}) == {
        "added": 5, "updated": 0, "removed": 0, "unchanged": 0}
    second = [first[0], {**first[1], "current_price": "1.00"}, first[2]]
    assert world.brand("POST", bulk, 200, json={"items": second, "remove_missing": True}) == {
        "added": 0, "updated": 1, "removed": 2, "unchanged": 2}
    receiver.wait_for(8)
    time.sleep(0.3)
    # by kind, not by arrival: an ADDED of the first upload may still arrive after the
    # second upload's postbacks (two batches in flight at once, or a retried timeout)
    arrived = {(r.query["c"], r.query["i"]) for r in receiver.requests}
    assert {i for c, i in arrived if c == "ADDED"} == {f"I-{n}" for n in range(5)}
    changes = sorted((c, i) for c, i in arrived if c != "ADDED")
    assert changes == [("REMOVED", "I-3"), ("REMOVED", "I-4"), ("UPDATED", "I-1")]
    listed = world.brand("GET", f"/v1/programs/{world.program_id}/catalog/items", 200)
    assert [i["item_id"] for i in listed["items"]] == ["I-0", "I-1", "I-2"]
    assert listed["items"][1]["current_price"] == "1.00"
    err = world.brand("POST", bulk, 422, json={"items": [first[0], first[0]]})
    assert err["message"] == "items[1].item_id: item 'I-0' appears twice"
    err = world.brand("POST", bulk, 422, json={"items": [first[0]] * 10_001})
    assert err["message"].startswith("items:")
    err = world.brand("POST", bulk, 422, json={"items": [{**first[0], "price": "1"}]})
    assert err["message"].startswith("items[0].price: is not a known field")


def test_catalogs_are_the_brands_own(service: Service) -> None:
    world, other = build_world(service), build_world(service)
    items = f"/v1/programs/{world.program_id}/catalog/items"
    world.brand("PUT", f"{items}/X", 200, json=SHOE)
    other.brand("GET", f"{items}/X", 404)
    other.brand("PUT", f"{items}/X", 404, json=SHOE)
    other.brand("DELETE", f"{items}/X", 404)
    other.brand("POST", f"{items}/bulk", 404, json={"items": []})
    world.partner("PUT", f"{items}/X", 403, json=SHOE)
