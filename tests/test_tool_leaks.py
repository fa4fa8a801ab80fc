"""The test tool leaks nothing (issue #12): saved secret headers go only to the saved URL,
tests are signed with the setting's test key (never the live one) and say they are tests,
and brand-created postbacks are tested exactly as the brand saved them."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from postback.core.signing import test_secret as derive_test_secret
from postback.sealing import MASK
from tests.conftest import World
from tests.receiver import Received, Receiver
from tests.test_web import browser, sign_in

LIFECYCLE = "/v1/event-notifications/action-lifecycle"
SECRET_HEADERS = {"Authorization": "Bearer s3cr3t-t0ken", "X-Api-Key": "k3y-v4lue"}


def verify(secret: str, req: Received) -> None:
    Webhook(secret).verify(req.body, {k.lower(): v for k, v in req.headers.items()},
                           json_parse=False)


def _names(req: Received) -> set[str]:
    return {k.lower() for k in req.headers}


def _leaks(req: Received) -> bool:
    wire = " ".join(f"{k}: {v}" for k, v in req.headers.items()) + req.path
    return any(v in wire or v in req.body.decode() for v in SECRET_HEADERS.values())


def test_a_url_override_leaves_the_secret_headers_out(world: World,
                                                      receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/saved", headers=SECRET_HEADERS)
    out = world.partner("POST", f"{LIFECYCLE}/test", 200,
                        json={"url": f"{receiver.url}/elsewhere?o={{Oid}}"})
    req = receiver.wait_for(1)[0]
    assert req.path.startswith("/elsewhere")
    assert not _names(req) & {"authorization", "x-api-key"} and not _leaks(req)
    assert out["left_out_headers"] == ["Authorization", "X-Api-Key"]
    assert "Authorization" not in out["request"]["headers"]
    assert out["outcome"] == "success"
    # a method or body override still goes to the saved URL: the headers go with it
    out = world.partner("POST", f"{LIFECYCLE}/test", 200,
                        json={"method": "POST", "body": '{"o": "{Oid}"}'})
    second = receiver.wait_for(2)[1]
    assert second.path == "/saved" and second.header("X-Api-Key") == "k3y-v4lue"
    assert out["left_out_headers"] == []
    # the saved URL given again is no override either
    out = world.partner("POST", f"{LIFECYCLE}/test", 200, json={"url": f"{receiver.url}/saved"})
    assert receiver.wait_for(3)[2].header("Authorization") == "Bearer s3cr3t-t0ken"
    assert out["left_out_headers"] == []


def test_without_an_override_the_saved_headers_arrive(world: World,
                                                      receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/saved", headers=SECRET_HEADERS)
    out = world.partner("POST", f"{LIFECYCLE}/test", 200, json={})
    req = receiver.wait_for(1)[0]
    assert (req.header("Authorization"), req.header("X-Api-Key")) == (
        "Bearer s3cr3t-t0ken", "k3y-v4lue")
    assert out["left_out_headers"] == []
    assert out["request"]["headers"]["X-Api-Key"] == "********"
    # nothing saved yet: nothing to leave out, and the list is still there
    out = world.partner("POST", "/v1/event-notifications/action-clearing/test", 200,
                        json={"url": f"{receiver.url}/new"})
    assert out["left_out_headers"] == []


def test_tests_are_signed_with_the_test_secret_and_say_so(world: World,
                                                          receiver: Receiver) -> None:
    live = world.subscribe(f"{receiver.url}/pb", method="POST", body='{"o": "{Oid}"}',
                           signed=True)["signing_secret"]
    out = world.partner("POST", f"{LIFECYCLE}/test", 200, json={})
    req = receiver.wait_for(1)[0]
    assert req.header("webhook-test") == "true"
    assert out["request"]["headers"]["webhook-test"] == "true"
    test = out["test_signing_secret"]
    assert test.startswith("whsec_") and test != live and test == derive_test_secret(live)
    verify(test, req)
    with pytest.raises(WebhookVerificationError):
        verify(live, req)  # a test never passes for a live postback
    # a body the caller writes, with a URL override: still the test key only
    world.partner("POST", f"{LIFECYCLE}/test", 200, json={
        "url": f"{receiver.url}/forged", "body": '{"payout": 1000000}'})
    forged = receiver.wait_for(2)[1]
    verify(test, forged)
    with pytest.raises(WebhookVerificationError):
        verify(live, forged)
    # during a rotation the previous live secret does not sign tests either
    new = world.partner("POST", f"{LIFECYCLE}/signing-secret/rotate", 200,
                        json={})["signing_secret"]
    out = world.partner("POST", f"{LIFECYCLE}/test", 200, json={})
    rotated = receiver.wait_for(3)[2]
    assert len((rotated.header("webhook-signature") or "").split(" ")) == 1
    for secret in (live, new):
        with pytest.raises(WebhookVerificationError):
            verify(secret, rotated)
    verify(out["test_signing_secret"], rotated)
    assert out["test_signing_secret"] == derive_test_secret(new)
    # a live delivery is signed with the live secret and carries no webhook-test
    world.report()
    delivered = receiver.wait_for(4)[3]
    assert "webhook-test" not in _names(delivered)
    verify(new, delivered)
    with pytest.raises(WebhookVerificationError):
        verify(out["test_signing_secret"], delivered)


def test_ed25519_tests_are_signed_with_the_test_key(world: World, receiver: Receiver) -> None:
    saved = world.subscribe(f"{receiver.url}/pb", method="POST", body='{"o": "{Oid}"}',
                            signed=True, signing_scheme="v1a")
    out = world.partner("POST", f"{LIFECYCLE}/test", 200, json={})
    req = receiver.wait_for(1)[0]
    assert req.header("webhook-test") == "true" and out["test_signing_secret"] is None
    test_public = out["test_signing_public_key"]
    assert test_public.startswith("whpk_") and test_public != saved["signing_public_key"]
    scheme, _, signature = (req.header("webhook-signature") or "").partition(",")
    assert scheme == "v1a"
    signed = f"{req.header('webhook-id')}.{req.header('webhook-timestamp')}.".encode() + req.body

    def key(public: str) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))

    key(test_public).verify(base64.b64decode(signature), signed)
    with pytest.raises(InvalidSignature):
        key(saved["signing_public_key"]).verify(base64.b64decode(signature), signed)


def test_brand_created_postbacks_are_tested_as_saved(world: World, receiver: Receiver) -> None:
    created = world.brand("POST", f"/v1/partners/{world.partner_id}/postbacks", 201, json={
        "event_type_id": world.event_type_id, "method": "POST", "body_format": "json",
        "body": '{"order": "{Oid}"}', "url": f"{receiver.url}/brand",
        "headers": {"X-Brand-Key": "br4nd-s3cr3t"}, "signed": True})
    path = f"/v1/brand-postbacks/{created['id']}/test"
    a = world.report()
    for field, value in (("url", f"{receiver.url}/mine"), ("method", "GET"),
                         ("body", '{"payout": 1000000}'), ("body_format", "form"),
                         ("sample_id", a["id"])):
        err = world.partner("POST", path, 422, json={field: value})
        assert err["message"] == (f"{field}: brand-created postbacks are tested as the brand "
                                  f"saved them, with sample values; remove {field}")
    # the live delivery for that action is the only request so far
    live = receiver.wait_for(1)
    assert len(live) == 1 and "webhook-test" not in _names(live[0])
    out = world.partner("POST", path, 200, json={})
    req = receiver.wait_for(2)[1]
    assert req.path == "/brand" and req.header("X-Brand-Key") == "br4nd-s3cr3t"
    assert req.body == b'{"order": "ORD-2026-55102"}' and req.header("webhook-test") == "true"
    assert out["left_out_headers"] == [] and out["outcome"] == "success"
    verify(out["test_signing_secret"], req)
    with pytest.raises(WebhookVerificationError):
        verify(created["signing_secret"], req)


def test_the_web_pages_leak_nothing_either(world: World, receiver: Receiver) -> None:
    from tests.test_web import browser, sign_in

    world.subscribe(f"{receiver.url}/saved", headers=SECRET_HEADERS)
    created = world.brand("POST", f"/v1/partners/{world.partner_id}/postbacks", 201, json={
        "event_type_id": world.event_type_id, "url": f"{receiver.url}/brand",
        "headers": {"X-Brand-Key": "br4nd-s3cr3t"}})
    client = browser(world)
    token = sign_in(client, world.partner_key)
    # the edit form's Test with another URL: the saved headers stay home
    page = client.post("/partner/event-notifications/action-lifecycle/test", data={
        "csrf_token": token, "url": f"{receiver.url}/typed", "method": "GET",
        "body_format": "json", "enabled": "on",
        "header_name": ["X-Api-Key", ""], "header_value": ["********", ""]})
    assert page.status_code == 200, page.text
    req = receiver.wait_for(1)[0]
    assert req.path == "/typed" and not _leaks(req) and req.header("webhook-test") == "true"
    # a brand-created postback's Test sends it as the brand saved it
    page = client.post(f"/partner/event-notifications/scoped/{created['id']}/test",
                       data={"csrf_token": token})
    assert page.status_code == 200, page.text
    req = receiver.wait_for(2)[1]
    assert req.path == "/brand" and req.header("X-Brand-Key") == "br4nd-s3cr3t"
    assert req.header("webhook-test") == "true" and "br4nd-s3cr3t" not in page.text


def test_the_web_test_result_names_the_headers_it_left_out(world: World,
                                                           receiver: Receiver) -> None:
    world.subscribe(f"{receiver.url}/saved", headers=SECRET_HEADERS)
    client = browser(world)
    token = sign_in(client, world.partner_key)
    sent = client.post("/partner/event-notifications/action-lifecycle/test", data={
        "csrf_token": token, "url": f"{receiver.url}/elsewhere", "method": "GET",
        "body_format": "json", "enabled": "on", "header_name": list(SECRET_HEADERS),
        "header_value": [MASK, MASK]})
    assert sent.status_code == 200
    assert ('id="left-out-headers">Left out of this test, because it went to another URL '
            "than the saved one (saved header values go only there): Authorization, "
            "X-Api-Key</p>") in sent.text
    req = receiver.wait_for(1)[0]
    assert req.path == "/elsewhere" and not _leaks(req)
