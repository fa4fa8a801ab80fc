"""A brand contracts a partner it has never worked with, on the web: the form takes the
partner's ID (brands see only partners they contract, so there is no list of the others),
and the contracts table names partners and event types."""

from __future__ import annotations

import re

from tests.conftest import ADMIN, World
from tests.test_web import browser, sign_in


def test_a_brand_contracts_a_new_partner_by_its_id(world: World) -> None:
    call = world.service.call
    newcomer = call("POST", "/v1/partners", ADMIN, 201,
                    json={"name": "Loyalty Loop", "partner_type": "loyalty"})
    client = browser(world)
    token = sign_in(client, world.brand_key)
    page = client.get("/brand")
    assert "Loyalty Loop" not in page.text  # not contracted yet: not listed
    assert "Or a new partner&#39;s ID" in page.text or "Or a new partner's ID" in page.text
    form = {"csrf_token": token, "partner_id": str(world.partner_id),
            "event_type_ids": str(world.event_type_id), "locking_rule": "days_after_event",
            "locking_days": "14", "clearing_rule": "days_after_locking", "clearing_days": "7"}
    path = f"/brand/programs/{world.program_id}/contracts"

    unknown = client.post(path, data={**form, "new_partner_id": "987654"})
    assert unknown.status_code == 422
    assert "Partner: no partner has the ID 987654; check it with the partner" in unknown.text
    assert re.search(r'name="new_partner_id"[^>]*value="987654"', unknown.text)
    assert re.search(r'name="locking_days"[^>]*value="14"', unknown.text)  # the form kept

    made = client.post(path, data={**form, "new_partner_id": str(newcomer["id"])},
                       follow_redirects=False)
    assert made.status_code == 303
    after = client.get(made.headers["location"])
    assert f"Contract saved for partner {newcomer['id']}." in after.text
    table = after.text.split("<h3>Contracts</h3>", 1)[1].split("</table>", 1)[0]
    assert "<td>Loyalty Loop</td><td>Online Sale</td>" in table
    assert "<td>Days after the event: 14 days</td>" in table  # words, not rule codes
    assert "<td>Cashback World</td><td>Online Sale</td>" in table
    contracts = call("GET", f"/v1/programs/{world.program_id}", world.brand_key,
                     200)["contracts"]
    assert [c["locking"] for c in contracts if c["partner_id"] == newcomer["id"]] == [
        {"rule": "days_after_event", "days": 14}]


def test_a_brand_without_contracts_still_gets_the_contract_form(world: World) -> None:
    program = world.brand("POST", "/v1/programs", 201, json={"name": "Acme EU",
                                                             "currency": "EUR"})
    world.brand("POST", f"/v1/programs/{program['id']}/event-types", 201,
                json={"name": "Lead", "action_type": "LEAD"})
    client = browser(world)
    sign_in(client, world.brand_key)
    page = client.get("/brand").text
    section = page.split(f'action="/brand/programs/{program["id"]}/contracts"', 1)
    assert len(section) == 2, "no contract form for the program without contracts"
