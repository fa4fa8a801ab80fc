"""SSRF: postbacks cannot be aimed at internal addresses, however the URL is written."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from postback.config import Settings
from postback.core.addresses import AddressPolicy
from postback.delivery.drivers import sender_for
from postback.delivery.http import Sender
from tests.certs import TestCA
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


def send(driver: type[Sender], url: str, policy: AddressPolicy,
         dns: dict[str, list[str]] | None = None) -> Any:
    async def go() -> Any:
        async with driver(1.0, 2.0, 4, "test", policy,
                          resolver=StubDNS(dns) if dns else None) as sender:
            return await sender.send("GET", url, {}, None)

    return asyncio.run(go())


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.1",
                                  "169.254.169.254", "100.64.0.1", "[fd00:ec2::254]",
                                  "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]", "0.0.0.0"])
def test_ip_literals_are_refused_without_a_connection(driver: type[Sender], host: str,
                                                      receiver: Receiver) -> None:
    port = receiver.port
    got = send(driver, f"http://{host}:{port}/pb", AddressPolicy())
    assert got.error.value == "blocked_address" and got.message.startswith("refused: ")
    assert receiver.requests == []


def test_a_host_name_that_resolves_inward_is_refused(driver: type[Sender],
                                                     receiver: Receiver) -> None:
    got = send(driver, f"http://localhost:{receiver.port}/pb", AddressPolicy())  # /etc/hosts
    assert got.error.value == "blocked_address" and "loopback" in got.message
    assert receiver.requests == []


def test_the_answer_used_to_connect_is_the_one_checked(driver: type[Sender],
                                                       receiver: Receiver) -> None:
    """Saved while the name resolved to a public address; at send time it resolves to the
    metadata service: refused, with nothing dialled."""
    got = send(driver, f"http://rebind.test:{receiver.port}/pb", AddressPolicy(),
               {"rebind.test": ["169.254.169.254"]})
    assert got.error.value == "blocked_address" and "cloud metadata" in got.message
    # one good answer does not launder a bad one (127.0.0.1 is allowed here, 10.1.1.1 not)
    mixed = send(driver, f"http://mixed.test:{receiver.port}/pb",
                 AddressPolicy.parse("127.0.0.1/32"),
                 {"mixed.test": ["127.0.0.1", "10.1.1.1"]})
    assert mixed.error.value == "blocked_address" and "10.1.1.1" in mixed.message
    assert receiver.requests == []
    allowed = send(driver, f"http://pinned.test:{receiver.port}/pb",
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


def test_host_names_that_resolve_inward_are_refused_when_saving(make_service: Any) -> None:
    world = build_world(make_service(start_engine=False, allow_targets=AddressPolicy()))
    for url, why in (("http://localhost:8080/pb", "127.0.0.1 is a loopback address "
                      "(localhost resolves to it)"),
                     ("https://hooks.LOCALHOST./pb", "(hooks.localhost. resolves to it)")):
        err = world.partner("PUT", "/v1/event-notifications/action-lifecycle", 422,
                            json={"url": url})
        assert err["message"].startswith("url: ") and why in err["message"], err
    err = world.partner("POST", "/v1/event-notifications/action-lifecycle/event-level", 422,
                        json={"url": "http://localhost/pb", "program_id": world.program_id,
                              "event_type_id": world.event_type_id})
    assert "loopback" in err["message"]
    err = world.brand("POST", f"/v1/partners/{world.partner_id}/postbacks", 422,
                      json={"url": "http://localhost/pb", "event_type_id": world.event_type_id})
    assert "loopback" in err["message"]
    # nothing was written by the refusals
    assert world.partner("GET", "/v1/event-notifications/action-lifecycle/event-level",
                         200)["items"] == []
    listed = world.partner("GET", "/v1/event-notifications", 200)["items"]
    assert all(t["setting"] is None for t in listed)
    # a name that cannot resolve is saved, with a warning that says so (never sent to DNS)
    saved = world.partner("PUT", "/v1/event-notifications/action-lifecycle", 200,
                          json={"url": "https://pb.partner.example/{ActionId}"})
    assert saved["warnings"] == ["url: pb.partner.example is a reserved name that never "
                                 "resolves on the public internet"]


def test_deliveries_to_refused_addresses_fail_permanently(make_service: Any,
                                                          receiver: Receiver) -> None:
    """Saved while localhost was allowed; sent after the operator closed it (as when a name's
    DNS answer changes between save and send): refused when sending, nothing dialled."""
    world = build_world(make_service(start_engine=False))
    world.subscribe(f"http://localhost:{receiver.port}/pb")
    world = replace(world, service=make_service(allow_targets=AddressPolicy()))
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


def test_egress_source_address_is_what_the_receiver_sees(driver: type[Sender]) -> None:
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
            async with driver(1.0, 2.0, 4, "test", AddressPolicy.parse("127.0.0.0/8"),
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
    """A minimal HTTP forward proxy on loopback (absolute-form requests, and CONNECT tunnels
    for https), counting what it relays: enough to show postbacks leave through
    ``POSTBACK_EGRESS_PROXY``."""

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
        self.relayed.append(f"CONNECT {target}" if method == "CONNECT" else target)
        if method == "CONNECT":
            await self._tunnel(target, reader, writer)
            return
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

    @staticmethod
    async def _tunnel(target: str, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """CONNECT: a blind byte pipe to host:port (how https crosses the proxy)."""
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_postbacks_leave_through_the_egress_proxy_and_refusals_come_first(
        driver: type[Sender], receiver: Receiver) -> None:
    proxy = ForwardProxy()
    try:
        async def go(url: str) -> Any:
            async with driver(1.0, 2.0, 4, "test", AddressPolicy.parse("127.0.0.0/8"),
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


@pytest.fixture
def ca(tmp_path: Any) -> TestCA:
    return TestCA(tmp_path)


def send_tls(driver: type[Sender], url: str, ca: TestCA | None,
             dns: dict[str, list[str]] | None = None,
             proxy: str | None = None) -> Any:
    async def go() -> Any:
        async with driver(1.0, 2.0, 4, "test", AddressPolicy.parse("127.0.0.0/8"),
                          proxy=proxy, resolver=StubDNS(dns) if dns else None,
                          ca_file=str(ca.ca_file) if ca else None) as sender:
            return await sender.send("POST", url, {"Content-Type": "application/json"},
                                     b'{"ActionId": "1"}')

    return asyncio.run(go())


def test_tls_is_verified_against_the_host_name_not_the_address_dialled(
        driver: type[Sender], ca: TestCA) -> None:
    """The connection goes to the vetted address (127.0.0.1 here), but the certificate must
    name the URL's host: an address, another name or an unknown CA fails, nothing is sent."""
    receiver = Receiver(tls=ca.server_context("pb.partner.test"))
    try:
        dns = {"pb.partner.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
        ok = send_tls(driver, f"https://pb.partner.test:{receiver.port}/pb", ca, dns)
        assert ok.status == 200 and receiver.requests[0].body == b'{"ActionId": "1"}'
        assert receiver.requests[0].header("Host") == f"pb.partner.test:{receiver.port}"
        for url, trusted in ((f"https://127.0.0.1:{receiver.port}/pb", ca),
                             (f"https://other.test:{receiver.port}/pb", ca),
                             (f"https://pb.partner.test:{receiver.port}/pb", None)):
            failed = send_tls(driver, url, trusted, dns)
            assert failed.error.value == "tls_error", (url, failed)
            assert "certificate" in failed.message.lower(), failed.message
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_https_postbacks_tunnel_through_the_connect_proxy(driver: type[Sender],
                                                          ca: TestCA) -> None:
    receiver = Receiver(tls=ca.server_context("localhost"))
    proxy = ForwardProxy()
    try:
        got = send_tls(driver, f"{receiver.url}/pb?sub=1", ca, proxy=proxy.url)
        assert got.status == 200
        # the proxy saw only where to connect; the path and body crossed it encrypted
        assert proxy.relayed == [f"CONNECT localhost:{receiver.port}"]
        assert receiver.requests[0].path == "/pb?sub=1"
        refused = send_tls(driver, "https://meta.test/latest", ca,
                           {"meta.test": ["169.254.169.254"]},
                           proxy=proxy.url)
        assert refused.error.value == "blocked_address" and "cloud metadata" in refused.message
        assert len(proxy.relayed) == 1
    finally:
        proxy.close()
        receiver.close()


def test_the_operator_names_extra_trusted_cas_in_the_environment(ca: TestCA) -> None:
    settings = Settings.from_env({"POSTBACK_TLS_CA_FILE": str(ca.ca_file),
                                  "POSTBACK_ALLOW_TARGETS": "127.0.0.0/8"})
    receiver = Receiver(tls=ca.server_context("localhost"))
    try:
        async def go() -> Any:
            async with sender_for(settings, 1) as sender:
                return await sender.send("GET", f"{receiver.url}/pb", {}, None)

        assert asyncio.run(go()).status == 200
    finally:
        receiver.close()
