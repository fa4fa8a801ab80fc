"""SSRF: postbacks cannot be aimed at internal addresses, however the URL is written."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from postback.core.addresses import AddressPolicy
from postback.delivery.http import Sender
from tests.conftest import World, build_world
from tests.receiver import Answer, Receiver
from tests.test_delivery import wait_status


class StubDNS(AbstractResolver):
    """Scripted DNS answers (a DNS server of our own is the one thing not run here)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=ip, port=port,
                              family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)
                for ip in self.answers[host]]

    async def close(self) -> None:
        return None


def send(url: str, policy: AddressPolicy, dns: dict[str, list[str]] | None = None) -> Any:
    async def go() -> Any:
        async with Sender(1.0, 2.0, 4, "test", policy,
                          resolver=StubDNS(dns) if dns else None) as sender:
            return await sender.send("GET", url, {}, None)

    return asyncio.run(go())


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.1",
                                  "169.254.169.254", "100.64.0.1", "[fd00:ec2::254]",
                                  "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]", "0.0.0.0"])
def test_ip_literals_are_refused_without_a_connection(host: str, receiver: Receiver) -> None:
    port = receiver.port
    got = send(f"http://{host}:{port}/pb", AddressPolicy())
    assert got.error.value == "blocked_address" and got.message.startswith("refused: ")
    assert receiver.requests == []


def test_a_host_name_that_resolves_inward_is_refused(receiver: Receiver) -> None:
    got = send(f"http://localhost:{receiver.port}/pb", AddressPolicy())  # via /etc/hosts
    assert got.error.value == "blocked_address" and "loopback" in got.message
    assert receiver.requests == []


def test_the_answer_used_to_connect_is_the_one_checked(receiver: Receiver) -> None:
    """Saved as a host name (nothing to check then); at send time it resolves to the
    metadata service: refused, with nothing dialled."""
    got = send(f"http://rebind.test:{receiver.port}/pb", AddressPolicy(),
               {"rebind.test": ["169.254.169.254"]})
    assert got.error.value == "blocked_address" and "cloud metadata" in got.message
    # one good answer does not launder a bad one (127.0.0.1 is allowed here, 10.1.1.1 not)
    mixed = send(f"http://mixed.test:{receiver.port}/pb", AddressPolicy.parse("127.0.0.1/32"),
                 {"mixed.test": ["127.0.0.1", "10.1.1.1"]})
    assert mixed.error.value == "blocked_address" and "10.1.1.1" in mixed.message
    assert receiver.requests == []
    allowed = send(f"http://pinned.test:{receiver.port}/pb",
                   AddressPolicy.parse("127.0.0.1/32"), {"pinned.test": ["127.0.0.1"]})
    assert allowed.status == 200 and receiver.requests[0].header("Host") == (
        f"pinned.test:{receiver.port}")  # the name is kept for Host (and TLS SNI)


def test_non_public_literals_are_refused_when_saving(world: World) -> None:
    for url, why in (("http://10.0.0.1/pb", "10.0.0.1 is a private address (RFC 1918)"),
                     ("http://169.254.169.254/latest", "cloud metadata"),
                     ("http://[::ffff:192.168.0.1]/x", "IPv6 form of 192.168.0.1")):
        err = world.partner("PUT", "/v1/event-notifications/action-lifecycle", 422,
                            json={"url": url})
        assert err["message"].startswith("url: ") and why in err["message"], err
        assert "POSTBACK_ALLOW_TARGETS" in err["message"]


def test_deliveries_to_refused_addresses_fail_permanently(make_service: Any,
                                                          receiver: Receiver) -> None:
    service = make_service(allow_targets=AddressPolicy())
    world = build_world(service)
    world.subscribe(f"http://localhost:{receiver.port}/pb")
    world.report()
    delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
    got = wait_status(world, delivery["id"], "failed")
    assert [(a["outcome"], a["error_class"]) for a in got["attempts"]] == [
        ("permanent_failure", "blocked_address")]
    assert "loopback" in got["attempts"][0]["error"]
    assert receiver.requests == []
    test = world.partner("POST", "/v1/event-notifications/action-lifecycle/test", 200, json={})
    assert test["outcome"] == "permanent_failure"
    assert test["diagnosis"].startswith("Refused: the host is or resolves to an address")


def test_a_redirect_to_the_metadata_service_is_not_followed(world: World) -> None:
    receiver = Receiver(lambda _req: Answer(302, {
        "Location": "http://169.254.169.254/latest/meta-data/"}))
    try:
        world.subscribe(f"{receiver.url}/pb")
        world.report()
        delivery = world.partner("GET", "/v1/deliveries", 200)["items"][0]
        got = wait_status(world, delivery["id"], "failed")
        assert got["attempts"][0]["error_class"] == "redirect"
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_egress_source_address_is_what_the_receiver_sees() -> None:
    """Bound to 127.0.0.2 (any loopback address works without set-up on Linux), the
    receiver sees that source address."""
    seen: list[str] = []
    receiver = Receiver()
    original = receiver.server.RequestHandlerClass.handle

    def handle(self: Any) -> None:
        seen.append(self.client_address[0])
        original(self)

    receiver.server.RequestHandlerClass.handle = handle  # type: ignore[method-assign]
    try:
        async def go() -> Any:
            async with Sender(1.0, 2.0, 4, "test", AddressPolicy.parse("127.0.0.0/8"),
                              source_address="127.0.0.2") as sender:
                return await sender.send("GET", f"{receiver.url}/pb", {}, None)

        assert asyncio.run(go()).status == 200
        assert seen == ["127.0.0.2"]
    finally:
        receiver.close()


def test_ip_ranges_are_published_without_a_key(make_service: Any) -> None:
    service = make_service(egress_ranges=("203.0.113.0/28", "2001:db8::/64"))
    response = service.client.get("/v1/ip-ranges")
    assert response.status_code == 200
    assert response.json() == {"postbacks": ["203.0.113.0/28", "2001:db8::/64"]}


class ForwardProxy:
    """A minimal HTTP forward proxy on loopback (absolute-form requests), counting what it
    relays: enough to show postbacks leave through ``POSTBACK_EGRESS_PROXY``."""

    def __init__(self) -> None:
        import threading

        self.relayed: list[str] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from urllib.parse import urlsplit

        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        self.relayed.append(target)
        parts = urlsplit(target)
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        rest = head.split(b"\r\n", 1)[1]
        up_writer.write(f"{method} {path} HTTP/1.1\r\n".encode() + rest)
        await up_writer.drain()
        response = await up_reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in response.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        response += await up_reader.readexactly(length)
        writer.write(response)
        await writer.drain()
        writer.close()
        up_writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_postbacks_leave_through_the_egress_proxy_and_refusals_come_first(
        receiver: Receiver) -> None:
    proxy = ForwardProxy()
    try:
        async def go(url: str) -> Any:
            async with Sender(1.0, 2.0, 4, "test", AddressPolicy.parse("127.0.0.0/8"),
                              proxy=proxy.url) as sender:
                return await sender.send("GET", url, {}, None)

        assert asyncio.run(go(f"{receiver.url}/via?x=1")).status == 200
        assert proxy.relayed == [f"{receiver.url}/via?x=1"]
        assert receiver.requests[0].path == "/via?x=1"
        refused = asyncio.run(go("http://10.0.0.1/internal"))
        assert refused.error.value == "blocked_address"
        assert len(proxy.relayed) == 1  # the proxy never saw the refused request
    finally:
        proxy.close()
