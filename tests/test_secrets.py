"""Secrets at rest and in reads: header values are sealed in the database, masked in every
read and attempt log, and sent in the clear only to the partner's server."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from postback.db.schema import delivery_attempt, notification_setting
from postback.sealing import Sealer, SealError, new_key
from tests.conftest import World
from tests.receiver import Receiver
from tests.test_delivery import wait_status


def test_header_values_are_sealed_at_rest_and_masked_everywhere(world: World,
                                                                receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/pb", headers={"Authorization": "Bearer s3cr3t-v4lue"})
    with world.service.db.connect() as conn:
        stored = conn.execute(select(notification_setting.c.headers)).scalar_one()
    assert stored["Authorization"].startswith("enc1:")
    assert "s3cr3t" not in json.dumps(stored)
    world.report()
    assert receiver.wait_for(1)[0].header("Authorization") == "Bearer s3cr3t-v4lue"
    delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
    got = wait_status(world, delivery["id"], "succeeded")
    reads = [got, world.partner("GET", "/v1/event-notifications", 200),
             world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 200,
                           json={})]
    for read in reads:
        assert "s3cr3t" not in json.dumps(read)
    with world.service.db.connect() as conn:
        logged = conn.execute(select(delivery_attempt.c.request_headers)).scalars().all()
    assert all("s3cr3t" not in json.dumps(h) for h in logged)


def test_keys_rotate_and_a_wrong_key_is_a_clear_error() -> None:
    old, new = new_key(), new_key()
    sealed = Sealer(old).seal("value")
    assert Sealer(f"{new},{old}").open(sealed) == "value"  # the new key first, the old kept
    assert Sealer(new).open(Sealer(new).seal("x")) == "x"
    with pytest.raises(SealError, match="does not open"):
        Sealer(new).open(sealed)
    with pytest.raises(ValueError, match="POSTBACK_SECRET_KEY must be Fernet keys"):
        Sealer("not-a-key")
