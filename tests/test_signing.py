"""Signed postbacks, verified with the `standardwebhooks` package (a verifier we did not
write)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from postback.db.schema import notification_setting
from tests.conftest import World
from tests.receiver import Received, Receiver

LIFECYCLE = "/v1/event-notifications/action-lifecycle"


def verify(secret: str, req: Received, content: bytes) -> None:
    Webhook(secret).verify(content, {k.lower(): v for k, v in req.headers.items()},
                           json_parse=False)


def test_post_postbacks_verify_with_standard_webhooks(world: World, receiver: Receiver) -> None:
    saved = world.subscribe(f"{receiver.url}/pb", method="POST",
                            body='{"id": "{ActionId}", "payout": {Payout}}', signed=True)
    secret = saved["signing_secret"]
    assert secret.startswith("whsec_") and saved["signed"] is True
    reread = world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"]
    assert reread["signed"] is True and "signing_secret" not in reread
    with world.service.db.connect() as conn:
        stored = conn.execute(select(notification_setting.c.signing_secret)).scalar_one()
    assert stored.startswith("enc1:") and secret not in stored
    world.report()
    req = receiver.wait_for(1)[0]
    verify(secret, req, req.body)
    with pytest.raises(WebhookVerificationError):
        verify(secret, req, req.body + b" ")  # one byte off: refused
    # saving again keeps the secret; turning signing off forgets it
    again = world.subscribe(f"{receiver.url}/pb", method="POST", body="{}", signed=True)
    assert "signing_secret" not in again


def test_get_postbacks_sign_the_full_url(world: World, receiver: Receiver) -> None:
    secret = world.subscribe(f"{receiver.url}/pb?id={{ActionId}}&m={{SubId1}}",
                             signed=True)["signing_secret"]
    world.report(sub_id1="a b&c")
    req = receiver.wait_for(1)[0]
    verify(secret, req, f"{receiver.url}{req.path}".encode())
    assert req.query["m"] == "a b&c"


def test_rotation_signs_with_both_secrets_during_the_grace_period(world: World,
                                                                  receiver: Receiver) -> None:
    old = world.subscribe(f"{receiver.url}/pb", method="POST", body="{}",
                          signed=True)["signing_secret"]
    rotated = world.partner("POST", f"{LIFECYCLE}/signing-secret/rotate", 200, json={})
    new = rotated["signing_secret"]
    assert new != old and rotated["previous_secret_expires_at"]
    world.report()
    req = receiver.wait_for(1)[0]
    assert len(req.header("webhook-signature").split(" ")) == 2  # type: ignore[union-attr]
    verify(old, req, req.body)
    verify(new, req, req.body)
    world.partner("POST", f"{LIFECYCLE}/signing-secret/rotate", 200, json={"grace_seconds": 0})
    world.report()
    second = receiver.wait_for(2)[1]
    assert len(second.header("webhook-signature").split(" ")) == 1  # type: ignore[union-attr]
    with pytest.raises(WebhookVerificationError):
        verify(new, second, second.body)  # no longer valid after a rotation with no grace


def test_rotation_needs_signing_on(world: World) -> None:
    world.subscribe("https://x.example/pb")
    err = world.partner("POST", f"{LIFECYCLE}/signing-secret/rotate", 409, json={})
    assert err["rule"] == "not_signed"


def test_ed25519_signatures_verify_with_the_published_public_key(world: World,
                                                                receiver: Receiver) -> None:
    import base64

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    saved = world.subscribe(f"{receiver.url}/pb", method="POST", body='{"a": "{ActionId}"}',
                            signed=True, signing_scheme="v1a")
    assert saved["signing_secret"].startswith("whsk_")
    public = saved["signing_public_key"]
    reread = world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"]
    assert (reread["signing_scheme"], reread["signing_public_key"]) == ("v1a", public)
    world.report()
    req = receiver.wait_for(1)[0]
    scheme, _, signature = (req.header("webhook-signature") or "").partition(",")
    assert scheme == "v1a"
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    signed = f"{req.header('webhook-id')}.{req.header('webhook-timestamp')}.".encode() + req.body
    key.verify(base64.b64decode(signature), signed)
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(signature), signed + b"x")
    # switching scheme makes a new key; v1 again gives a whsec_ secret
    back = world.subscribe(f"{receiver.url}/pb", method="POST", body="{}", signed=True)
    assert back["signing_secret"].startswith("whsec_") and back["signing_public_key"] is None
