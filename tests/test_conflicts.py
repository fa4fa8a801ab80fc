"""Writes that meet a request doing the same at the same time (#12 item 5): the integrity
rules the services expect answer as the rule says (a 409 naming the field for an oid
already used; the later write wins for a setting, a contract, inquiry settings or a catalog
item; a deleted setting's postbacks are left out), and any other integrity error is a 500.

Each race is made, not hoped for: another transaction holds its write uncommitted while the
request runs; on PostgreSQL it commits only once the request waits for it (so the request's
insert fails on the committed row), on SQLite the request waits for the write lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from postback.db.schema import catalog_item, contract, event_type, notification_setting
from postback.models import (
    ActionIn,
    CatalogItemIn,
    ContractIn,
    InquirySettingsIn,
    NotificationSettingIn,
)
from postback.services import catalog, inquiries, ledger, programs
from postback.services import notification_settings as ns
from postback.services.integrity import unique_violation
from tests.conftest import ADMIN, Service, World, build_world

FAKE_ID = 987_654_321
CONTRACT = {"event_type_ids": [], "locking": {"rule": "days_after_event", "days": 5},
            "clearing": {"rule": "days_after_locking", "days": 5}}


@pytest.fixture
def quiet(make_service: Any) -> World:
    """A world without a delivery engine: nothing is sent."""
    return build_world(make_service(start_engine=False))


def _waiting(service: Service) -> bool:
    with service.db.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar())


def while_held(service: Service, hold: Callable[[Connection], Any],
               request: Callable[[], Any]) -> Any:
    """``request()``'s answer, made while ``hold``'s write is uncommitted in another
    transaction, which commits once the request waits for it."""
    conn = service.db.connect()
    trans = conn.begin()
    hold(conn)
    answer: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answer.update(value=request()), daemon=True)
    thread.start()
    if service.db.dialect.name == "postgresql":
        deadline = time.monotonic() + 20  # a bound on a broken run, not a timing claim
        while thread.is_alive() and not _waiting(service):
            assert time.monotonic() < deadline, "the request never waited for the write"
            time.sleep(0.01)
        assert thread.is_alive(), "the request did not meet the other write"
    trans.commit()
    conn.close()
    thread.join(30)
    assert not thread.is_alive()
    return answer["value"]


def test_the_same_oid_reported_at_the_same_time_is_a_409_naming_the_field(
        quiet: World) -> None:
    now = datetime.now(UTC)
    body = quiet.action(oid="RACE-1")
    err = while_held(
        quiet.service,
        lambda conn: ledger.report_actions(conn, quiet.brand_id, [ActionIn.model_validate(body)],
                                           now),
        lambda: quiet.brand("POST", "/v1/actions", 409, json=body))
    assert err["error"] == "oid_reused"
    assert err["message"] == (f"oid: oid 'RACE-1' is already used by an action of event type "
                              f"{quiet.event_type_id}")
    assert len(quiet.brand("GET", "/v1/actions?oid=RACE-1", 200)["items"]) == 1


def test_a_contract_written_at_the_same_time_is_overwritten(quiet: World) -> None:
    other = quiet.service.call("POST", "/v1/partners", ADMIN, 201,
                               json={"name": "Late", "partner_type": "content"})
    path = f"/v1/programs/{quiet.program_id}/contracts/{other['id']}"
    terms = {**CONTRACT, "event_type_ids": [quiet.event_type_id]}
    later = {**terms, "clearing": {"rule": "days_after_locking", "days": 9}}
    saved = while_held(
        quiet.service,
        lambda conn: programs.put_contract(conn, quiet.brand_id, quiet.program_id, other["id"],
                                           ContractIn.model_validate(terms)),
        lambda: quiet.brand("PUT", path, 200, json=later))
    assert saved["clearing"] == {"rule": "days_after_locking", "days": 9}
    contracts = quiet.brand("GET", f"/v1/programs/{quiet.program_id}", 200)["contracts"]
    assert [c["clearing"]["days"] for c in contracts if c["partner_id"] == other["id"]] == [9]


def test_a_setting_saved_at_the_same_time_is_overwritten(quiet: World) -> None:
    config = quiet.service.settings
    path = "/v1/event-notifications/action-clearing"
    saved = while_held(
        quiet.service,
        lambda conn: ns.put_setting(conn, quiet.partner_id, "action-clearing",
                                    NotificationSettingIn(url="http://127.0.0.1:9/first"),
                                    config),
        lambda: quiet.partner("PUT", path, 200, json={"url": "http://127.0.0.1:9/second"}))
    assert saved["url"] == "http://127.0.0.1:9/second"
    listed = quiet.partner("GET", "/v1/event-notifications", 200)["items"]
    assert [t["setting"]["url"] for t in listed if t["type"] == "action-clearing"] == [
        "http://127.0.0.1:9/second"]


def test_inquiry_settings_saved_at_the_same_time_are_overwritten(quiet: World) -> None:
    path = f"/v1/programs/{quiet.program_id}/inquiry-settings"
    while_held(
        quiet.service,
        lambda conn: inquiries.put_policy(conn, quiet.brand_id, quiet.program_id,
                                          InquirySettingsIn(resolution_deadline_days=5),
                                          datetime.now(UTC)),
        lambda: quiet.brand("PUT", path, 200, json={"resolution_deadline_days": 9}))
    assert quiet.brand("GET", path, 200)["resolution_deadline_days"] == 9


def test_a_catalog_item_added_at_the_same_time_is_updated(quiet: World) -> None:
    path = f"/v1/programs/{quiet.program_id}/catalog/items/RACE"
    answer = while_held(
        quiet.service,
        lambda conn: catalog.put_item(conn, quiet.brand_id, quiet.program_id, "RACE",
                                      CatalogItemIn(name="first"), datetime.now(UTC)),
        lambda: quiet.brand("PUT", path, 200, json={"name": "second"}))
    assert answer["change"] == "UPDATED"
    assert quiet.brand("GET", path, 200)["name"] == "second"


def test_an_action_reported_while_its_setting_is_deleted_is_recorded_without_it(
        quiet: World) -> None:
    quiet.subscribe("http://127.0.0.1:9/pb?id={ActionId}")
    created = while_held(
        quiet.service,
        lambda conn: ns.delete_setting(conn, quiet.partner_id, "action-lifecycle"),
        lambda: quiet.brand("POST", "/v1/actions", 201, json=quiet.action(oid="RACE-2")))
    assert quiet.brand("GET", f"/v1/actions/{created['id']}", 200)["oid"] == "RACE-2"
    assert quiet.partner("GET", f"/v1/deliveries?action_id={created['id']}", 200)[
        "items"] == []


def test_a_setting_deleted_while_an_action_is_reported_cancels_its_postback(
        quiet: World) -> None:
    quiet.subscribe("http://127.0.0.1:9/pb?id={ActionId}")
    body = quiet.action(oid="RACE-3")
    while_held(
        quiet.service,
        lambda conn: ledger.report_actions(conn, quiet.brand_id, [ActionIn.model_validate(body)],
                                           datetime.now(UTC)),
        lambda: quiet.partner("DELETE", "/v1/event-notifications/action-lifecycle", 204))
    action = quiet.brand("GET", "/v1/actions?oid=RACE-3", 200)["items"][0]
    sent = quiet.partner("GET", f"/v1/deliveries?action_id={action['id']}", 200)["items"]
    assert [(d["status"], d["last_error"]) for d in sent] == [("failed", "setting_deleted")]


def test_any_other_integrity_error_is_a_500(quiet: World,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> None:
        raise IntegrityError("INSERT INTO brand ...", {}, Exception("a rule nobody expects"))

    monkeypatch.setattr("postback.services.accounts.create_brand", broken)
    client = TestClient(quiet.service.client.app, raise_server_exceptions=False)
    answer = client.post("/v1/brands", json={"name": "X"},
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 500
    assert "conflict" not in answer.text


def test_the_expected_integrity_rules_are_told_apart(quiet: World) -> None:
    """services.integrity names the unique key a write broke, on either database."""
    quiet.subscribe("http://127.0.0.1:9/pb")
    with quiet.service.db.connect() as conn, conn.begin():
        def broken(table: Any, **values: Any) -> IntegrityError:
            with pytest.raises(IntegrityError) as caught, conn.begin_nested():
                conn.execute(insert(table).values(**values))
            return caught.value

        terms = conn.execute(select(contract)).mappings().one()
        twice = broken(contract, **{k: v for k, v in terms.items() if k != "id"})
        assert unique_violation(twice, contract, "program_id", "partner_id")
        assert not unique_violation(twice, contract, "program_id")
        assert not unique_violation(twice, catalog_item, "program_id", "item_id")
        setting = conn.execute(select(notification_setting)).mappings().one()
        again = broken(notification_setting, **{k: v for k, v in setting.items() if k != "id"})
        assert unique_violation(again, notification_setting, "partner_id", "type")
        orphan = broken(event_type, program_id=FAKE_ID, name="x", action_type="SALE",
                        created_at=datetime.now(UTC))
        assert not unique_violation(orphan, event_type, "program_id")  # a missing row
