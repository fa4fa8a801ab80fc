"""#12: URLs are checked at save by the parser the sender uses, saved as they will be sent,
and a GET postback's signature covers byte for byte the URL that goes on the wire."""

from __future__ import annotations

from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from postback.core.urls import url_template, wire_url
from tests.conftest import World
from tests.receiver import Receiver

SETTING = "/v1/event-notifications/action-lifecycle"


def put(world: World, url: str, expect: int) -> Any:
    return world.partner("PUT", SETTING, expect,
                         json={"url": url, "method": "GET", "body_format": "json", "body": ""})


@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1/x\r\nX-Injected: 1", "carriage return"),
    ("http://127.0.0.1/x\nX-Injected: 1", "line break"),
    ("http://127.0.0.1/a b", "a space"),
    ("http://127.0.0.1/a\tb", "a tab"),
    ("http://127.0.0.1/a\x01b", "U+0001"),
    ("http://[::1/x", "no closing ]"),
    ("http://host].example/x", "unbalanced brackets"),
    ("http://127.0.0.1:99999/x", "1 to 65535"),
    ("http://127.0.0.1:0/x", "1 to 65535"),
    ("http://127.0.0.1:80a/x", "1 to 65535"),
    ("http://127.0.0.1/x#part", "#fragment"),
    ("ftp://127.0.0.1/x", "http:// or https://"),
    ("http://{Host}/x", "host name written out"),
])
def test_urls_that_can_never_be_sent_are_refused_at_save(world: World, url: str,
                                                         says: str) -> None:
    err = put(world, url, 422)
    assert err["errors"][0]["field"] == "url", err
    assert says in err["message"], err
    level = world.partner("POST", f"{SETTING}/event-level", 422, json={
        "url": url, "method": "GET", "program_id": world.program_id,
        "event_type_id": world.event_type_id})
    assert says in level["message"]
    brand = world.brand("POST", f"/v1/partners/{world.partner_id}/postbacks", 422, json={
        "url": url, "method": "GET", "event_type_id": world.event_type_id})
    assert says in brand["message"]
    assert world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"] is None


def test_a_url_is_saved_as_it_will_be_sent(world: World) -> None:
    saved = put(world, "HTTPS://Bücher.Example/Pfad/é?q=ü&id={ActionId}&s={SubId1}", 200)
    assert saved["url"] == ("https://xn--bcher-kva.example/Pfad/%C3%A9?q=%C3%BC"
                            "&id={ActionId}&s={SubId1}")
    reread = world.partner("GET", "/v1/event-notifications", 200)["items"][0]["setting"]
    assert reread["url"] == saved["url"]


def test_template_and_wire_agree_on_a_rendered_url() -> None:
    template = url_template("http://Exämple.test:8080/ä/{ActionId}?x=ü")
    rendered = template.replace("{ActionId}", "1042")
    assert wire_url(rendered) == rendered  # saved normalised: nothing left to change
    assert rendered == "http://xn--exmple-cua.test:8080/%C3%A4/1042?x=%C3%BC"


def test_a_get_signature_covers_the_url_exactly_as_sent(world: World,
                                                        receiver: Receiver) -> None:
    """Dot segments reach the receiver as written (libcurl is told not to squash them),
    and the signature verifies over what arrived."""
    saved = world.partner("PUT", SETTING, 200, json={
        "url": f"{receiver.url}/a/./b/../c?id={{ActionId}}&m=é", "method": "GET",
        "signed": True})
    secret = saved["signing_secret"]
    world.report()
    (req,) = receiver.wait_for(1)
    assert req.path.startswith("/a/./b/../c?id=") and req.path.endswith("&m=%C3%A9")
    Webhook(secret).verify(f"{receiver.url}{req.path}".encode(),
                           {k.lower(): v for k, v in req.headers.items()}, json_parse=False)


def test_a_test_override_url_is_checked_like_a_saved_one(world: World,
                                                         receiver: Receiver) -> None:
    put(world, f"{receiver.url}/pb", 200)
    err = world.partner("POST", f"{SETTING}/test", 422,
                        json={"url": "http://127.0.0.1/x\r\nX-Injected: 1"})
    assert err["errors"][0]["field"] == "url" and "carriage return" in err["message"]
    sent = world.partner("POST", f"{SETTING}/test", 200, json={"url": f"{receiver.url}/é"})
    assert sent["outcome"] == "success", sent
    assert receiver.wait_for(1)[0].path == "/%C3%A9"
