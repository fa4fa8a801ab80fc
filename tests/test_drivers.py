"""What every HTTP driver must do alike, beyond the address rules (``test_ssrf.py``)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from postback.core.addresses import AddressPolicy
from postback.core.retry import ErrorClass, Outcome, classify
from postback.delivery.http import MAX_STORED_BODY, Sender, outgoing_headers
from tests.hostile import HostileReceiver, Script, reply

#: announces a 100 MB body, sends 64 KB of it and then nothing: an answer that never ends
STALLING = Script(b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n" + b"y" * 65536,
                  then="stall")


def test_a_body_past_what_is_stored_is_not_read_to_the_end(driver: type[Sender]) -> None:
    server = HostileReceiver(STALLING)
    try:
        async def go() -> Any:
            async with driver(1.0, 5.0, 4, "test", AddressPolicy.parse("127.0.0.0/8")) as s:
                return await s.send("GET", f"http://127.0.0.1:{server.port}/pb", {}, None)

        started = time.monotonic()
        got = asyncio.run(go())
        assert got.status == 200 and got.error is None, got
        assert got.body == b"y" * MAX_STORED_BODY
        assert time.monotonic() - started < 2.0  # not the 5 s time limit
    finally:
        server.close()


# -- what goes on the wire, byte for byte, from either driver --------------------------

def _sent(driver: type[Sender], url: str, headers: dict[str, str], body: bytes | None = None,
          dns: dict[str, list[str]] | None = None) -> tuple[Any, list[bytes], bytes]:
    """Send one request to a raw receiver: (response, the raw requests it got, the port it
    listens on as the ``Host`` header spells it)."""
    from tests.test_hostile_drivers import ScriptedDNS

    with HostileReceiver(Script(reply(b"HTTP/1.1 200 OK", [], b"OK"))) as server:
        async def go() -> Any:
            async with driver(1.0, 5.0, 4, "test", AddressPolicy.parse("127.0.0.0/8"),
                              resolver=ScriptedDNS(dict(dns)) if dns else None) as s:
                return await s.send("POST" if body is not None else "GET",
                                    url.format(port=server.port), headers, body)

        got = asyncio.run(go())
        return got, list(server.received), str(server.port).encode()


def test_non_ascii_urls_and_header_values_go_as_utf8(driver: type[Sender]) -> None:
    """The URL percent-encoded as UTF-8, a header value as UTF-8 bytes: the same bytes
    from both drivers (and nothing else: no User-Agent or Accept of the driver's own)."""
    headers = outgoing_headers("postback-test/1", "evt_1", {"X-A": "é", "X-B": "plain"})
    got, received, port = _sent(driver, "http://127.0.0.1:{port}/p2é?x=é&y=%C3%A9", headers)
    assert got.status == 200, got
    assert received == [
        b"GET /p2%C3%A9?x=%C3%A9&y=%C3%A9 HTTP/1.1\r\nHost: 127.0.0.1:" + port + b"\r\n"
        b"User-Agent: postback-test/1\r\nwebhook-id: evt_1\r\n"
        b"X-A: \xc3\xa9\r\nX-B: plain\r\n\r\n"]
    body = '{"name": "Zoë"}'.encode()
    got, received, port = _sent(driver, "http://127.0.0.1:{port}/pb",
                                {"Content-Type": "application/json", "X-Name": "Zoë 😀"}, body)
    assert got.status == 200, got
    assert received == [
        b"POST /pb HTTP/1.1\r\nHost: 127.0.0.1:" + port + b"\r\n"
        b"Content-Type: application/json\r\nX-Name: Zo\xc3\xab \xf0\x9f\x98\x80\r\n"
        b"Content-Length: 16\r\n\r\n" + body]


def test_a_non_ascii_host_is_sent_idna_encoded(driver: type[Sender]) -> None:
    got, received, _ = _sent(driver, "http://café.test:{port}/menü", {},
                          dns={"xn--caf-dma.test": ["127.0.0.1"]})
    assert got.status == 200, got
    request_line, host = received[0].split(b"\r\n")[:2]
    assert request_line == b"GET /men%C3%BC HTTP/1.1"
    assert host.startswith(b"Host: xn--caf-dma.test:")


def test_a_header_that_cannot_go_on_the_wire_is_refused_and_nothing_is_sent(
        driver: type[Sender]) -> None:
    for name, value in (("X-A", "a\r\nX-Injected: 1"), ("X-A", "a\nb"), ("X-A", "a\x00"),
                        ("X-A", "\x7f"), ("X-A", "\udcb2"), ("X\r\nA", "v"), ("", "v"),
                        ("X A", "v"), ("X:A", "v"), ("Zoë", "v")):
        got, received, _ = _sent(driver, "http://127.0.0.1:{port}/pb", {name: value})
        assert (got.status, got.error) == (None, ErrorClass.INVALID_REQUEST), (name, value)
        assert got.message and "header" in got.message
        assert received == []


def test_a_tab_and_an_empty_value_can_be_sent(driver: type[Sender]) -> None:
    got, received, _ = _sent(driver, "http://127.0.0.1:{port}/pb",
                             {"X-Tab": "a\tb", "X-Empty": "", "X-Space": " "})
    assert got.status == 200, got
    lines = received[0].split(b"\r\n")
    assert b"X-Tab: a\tb" in lines
    # "X-Empty:" (curl) or "X-Empty: " (aiohttp): the same empty value
    assert {line.rstrip(b" ") for line in lines if line.startswith(b"X-E")} == {b"X-Empty:"}
    assert {line.rstrip(b" ") for line in lines if line.startswith(b"X-S")} == {b"X-Space:"}


# -- what comes back: headers read the same way by both drivers ------------------------

def test_duplicate_headers_are_combined_and_interim_and_trailer_fields_dropped(
        driver: type[Sender]) -> None:
    answer = (b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nX-D: 1\r\nx-d: 2\r\nX-D:3  \r\nSet-Cookie: a=1\r\n"
              b"Set-Cookie: b=2\r\nX-Fold: a\r\n  b\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\nOK\r\n0\r\nX-Trailer: t\r\n\r\n")
    with HostileReceiver(Script(answer)) as server:
        async def go() -> Any:
            async with driver(1.0, 5.0, 4, "test", AddressPolicy.parse("127.0.0.0/8")) as s:
                return await s.send("GET", f"{server.url}/pb", {}, None)

        got = asyncio.run(go())
    assert got.status == 200 and got.body == b"OK", got
    assert got.headers is not None
    # a folded line is unfolded (libcurl makes the fold one space, llhttp keeps its spaces)
    assert " ".join(got.headers.pop("X-Fold").split()) == "a b"
    assert got.headers == {"X-D": "1, 2, 3", "Set-Cookie": "a=1, b=2",
                           "Transfer-Encoding": "chunked"}
    assert got.header("x-d") == got.header("X-D") == "1, 2, 3"
    assert got.header("X-Interim") is None


def test_a_resolver_failure_is_classified_alike(driver: type[Sender]) -> None:
    from tests.test_hostile_drivers import ScriptedDNS

    async def go(answer: Any) -> Any:
        async with driver(1.0, 5.0, 4, "test", AddressPolicy.parse("127.0.0.0/8"),
                          resolver=ScriptedDNS({"pb.partner.test": answer})) as s:
            return await s.send("GET", "http://pb.partner.test/pb", {}, None)

    for answer, expected in (
            (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), ErrorClass.DNS),
            (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), ErrorClass.DNS_TEMPORARY),
            (OSError("resolver exploded"), ErrorClass.DNS_TEMPORARY)):
        got = asyncio.run(go(answer))
        assert (got.status, got.error) == (None, expected), got
        assert got.message.startswith("pb.partner.test "), got.message
        assert classify(None, got.error)[0] is (
            Outcome.PERMANENT if expected is ErrorClass.DNS else Outcome.RETRY)
