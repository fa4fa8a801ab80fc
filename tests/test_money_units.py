"""Money in a currency's own decimals: no yen cents, no made-up currency codes, wherever an
amount comes in (an action, its line items, a change, a catalog price)."""

from __future__ import annotations

import pytest

from postback.core.values import decimals, units_problem
from tests.conftest import World


def test_iso_4217_decimals() -> None:
    assert [decimals(c) for c in ("USD", "EUR", "JPY", "KRW", "KWD", "CLF")] == [2, 2, 0, 0, 3, 4]
    assert units_problem("JPY", {"amount": 10000, "payout": 750}) == (
        "payout", 'JPY has no decimals, but payout is "7.50"; send whole amounts such as "7"')
    assert units_problem("JPY", {"amount": 10000, "payout": None}) is None
    assert units_problem("USD", {"amount": 1}) is None


@pytest.fixture
def yen(world: World) -> World:
    """The world's brand with a program in yen, the partner contracted on it."""
    program = world.brand("POST", "/v1/programs", 201, json={"name": "Acme JP",
                                                             "currency": "JPY"})
    etype = world.brand("POST", f"/v1/programs/{program['id']}/event-types", 201,
                        json={"name": "Online Sale", "action_type": "SALE"})
    world.brand("PUT", f"/v1/programs/{program['id']}/contracts/{world.partner_id}", 200,
                json={"event_type_ids": [etype["id"]],
                      "locking": {"rule": "days_after_event", "days": 30},
                      "clearing": {"rule": "days_after_locking", "days": 20}})
    world.program_id, world.event_type_id = program["id"], etype["id"]
    return world


def test_an_amount_with_decimals_is_refused_in_a_currency_without_them(world: World) -> None:
    err = world.brand("POST", "/v1/actions", 422,
                      json=world.action(amount="1000.50", payout="30", currency="JPY"))
    assert err["field"] == "currency"
    assert 'JPY has no decimals, but amount is "1000.50"; send whole amounts such as "1000"' \
        in err["message"]
    err = world.brand("POST", "/v1/actions", 422, json=world.action(
        amount="1000", payout="30", currency="JPY",
        items=[{"sku": "SH-1", "amount": "999.99"}]))
    assert err["field"] == "items"
    assert 'but items[0].amount is "999.99"' in err["message"]
    made = world.brand("POST", "/v1/actions", 201,
                       json=world.action(amount="1000", payout="30", currency="JPY"))
    assert (made["amount"], made["payout"], made["currency"]) == ("1000.00", "30.00", "JPY")


def test_a_made_up_currency_code_is_refused(world: World) -> None:
    for path, body in (("/v1/programs", {"name": "X", "currency": "USX"}),
                       ("/v1/actions", world.action(currency="ABC"))):
        err = world.brand("POST", path, 422, json=body)
        assert err["field"] == "currency"
        assert "is not an ISO 4217 currency code; use one such as USD, EUR or JPY" in \
            err["message"]


def test_a_catalog_price_fits_its_currency(world: World) -> None:
    items = f"/v1/programs/{world.program_id}/catalog/items"
    err = world.brand("PUT", f"{items}/TV-1", 422,
                      json={"name": "TV", "current_price": "49800.50", "currency": "KRW"})
    assert err["field"] == "currency"
    assert 'but current_price is "49800.50"' in err["message"]
    world.brand("PUT", f"{items}/TV-1", 200,
                json={"name": "TV", "current_price": "49800", "currency": "KRW"})


def test_the_programs_currency_applies_when_the_action_names_none(yen: World) -> None:
    err = yen.brand("POST", "/v1/actions", 422, json=yen.action(amount="1000.50", payout="30"))
    assert err["field"] == "amount"
    assert 'JPY has no decimals, but amount is "1000.50"' in err["message"]
    made = yen.report(amount="1000", payout="30")
    err = yen.brand("PATCH", f"/v1/actions/{made['id']}", 422,
                    json={"amount": "900.50", "reason": "ITEM_RETURNED"})
    assert err["field"] == "amount"
    assert 'JPY has no decimals, but amount is "900.50"' in err["message"]


def test_inquiries_and_auto_approval_caps_are_in_the_programs_currency(yen: World) -> None:
    body = {"program_id": yen.program_id, "inquiry_type": "UNTRACKED", "oid": "ORD-JP-1",
            "transaction_date": "2026-11-02T18:04:05+00:00", "transaction_amount": "5000",
            "expected_payout": "150.50"}
    err = yen.partner("POST", "/v1/inquiries", 422, json=body)
    assert err["field"] == "expected_payout"
    assert 'JPY has no decimals, but expected_payout is "150.50"' in err["message"]
    assert yen.partner("POST", "/v1/inquiries", 201,
                       json={**body, "expected_payout": "150"})["expected_payout"] == "150.00"
    err = yen.brand("PUT", f"/v1/programs/{yen.program_id}/inquiry-settings", 422, json={
        "auto_approval": {"mode": "off", "monthly_cap": "10000.01"}})
    assert err["field"] == "auto_approval.monthly_cap"
