"""A hostile partner's server, through both drivers: whatever it answers, ``Sender.send``
returns a ``Response`` (never an exception) within the time limit, and both drivers return
the same one; and what its headers hold is read without raising (``header_text``,
``parse_retry_after``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postback.core.addresses import AddressPolicy
from postback.core.retry import MAX_DELAY, ErrorClass, classify, parse_retry_after
from postback.delivery.curl import CurlSender
from postback.delivery.http import AiohttpSender, Response, Sender, header_text
from tests.certs import TestCA
from tests.hostile import (
    LONG_HEADERS,
    NON_UTF8_HEADER,
    SCENARIOS,
    HostileReceiver,
    Scenario,
    Script,
    free_port,
    reply,
)

LOOPBACK = AddressPolicy.parse("127.0.0.0/8")
CONNECT_TIMEOUT = 1.0
TOTAL_TIMEOUT = 2.0
#: send() must have returned by then, whatever the partner does (a bounded wait)
LIMIT = TOTAL_TIMEOUT + 8.0
DRIVERS: tuple[type[Sender], ...] = (CurlSender, AiohttpSender)


class ScriptedDNS(AbstractResolver):
    """DNS answers by name: addresses, an exception to raise, or ``"hang"`` (never
    answers). No query leaves the machine."""

    def __init__(self, answers: dict[str, list[str] | BaseException | str]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answer = self.answers[host]
        if isinstance(answer, BaseException):
            raise answer
        if answer == "hang":
            await asyncio.Event().wait()
        assert isinstance(answer, list)
        return [ResolveResult(hostname=host, host=ip, port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST) for ip in answer]

    async def close(self) -> None:
        return None


def send(driver: type[Sender], url: str, headers: dict[str, str] | None = None,
         dns: AbstractResolver | None = None, policy: AddressPolicy = LOOPBACK,
         ca_file: str | None = None) -> Response:
    """One request through a fresh sender; fails the test if send() raises or is not back
    within ``LIMIT``."""
    async def go() -> Response:
        async with driver(CONNECT_TIMEOUT, TOTAL_TIMEOUT, 4, "test", policy, resolver=dns,
                          ca_file=ca_file) as sender:
            return await asyncio.wait_for(sender.send("GET", url, headers or {}, None), LIMIT)

    got = asyncio.run(go())
    assert isinstance(got, Response)
    return got


def outcome(got: Response) -> tuple[int | None, ErrorClass | None]:
    """(status, error class) as the engine records them."""
    return got.status, classify(got.status, got.error, got.text)[1]


# -- every hostile scenario, on each driver ------------------------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_a_hostile_answer_comes_back_as_a_response(driver: type[Sender],
                                                   scenario: Scenario) -> None:
    with HostileReceiver(scenario.script) as server:
        got = send(driver, f"{server.url}/pb")
        assert len(server.received) == 1
    assert outcome(got) == (scenario.status, scenario.error), got
    assert (got.error is None) == (got.status is not None), got
    if got.error is not None:
        assert got.message, got
    if scenario.body is not None:
        assert got.body == scenario.body
    if got.headers is not None:
        for name, value in got.headers.items():  # storable text: no surrogates
            name.encode("utf-8")
            value.encode("utf-8")


def test_non_utf8_and_long_headers_are_read_alike(driver: type[Sender]) -> None:
    with HostileReceiver(NON_UTF8_HEADER.script) as server:
        got = send(driver, f"{server.url}/pb")
    assert got.headers is not None
    assert got.headers["X-Odd"] == "\xb2\xff"  # not UTF-8: Latin-1, byte for byte
    assert got.headers["X-Fine"] == "café"  # UTF-8
    with HostileReceiver(LONG_HEADERS.script) as server:
        got = send(driver, f"{server.url}/pb")
    assert got.headers is not None
    assert [got.headers[f"X-Long-{i}"] for i in range(300)] == ["v" * 200] * 300


def test_junk_retry_after_is_no_delay(driver: type[Sender]) -> None:
    for status, junk in ((503, b"\xb2"), (429, b"\xb2\xff soon"), (503, b"-1"),
                         (429, b"1.5"), (503, b"\xd9\xa1")):  # Arabic-Indic one
        script = Script(reply(b"HTTP/1.1 %d Busy" % status, [(b"Retry-After", junk)]))
        with HostileReceiver(script) as server:
            got = send(driver, f"{server.url}/pb")
        assert got.status == status
        assert parse_retry_after(got.header("retry-after"), datetime.now(UTC)) is None


# -- the parity table: every situation, both drivers, the same outcome ---------------------

@dataclass(frozen=True)
class Situation:
    name: str
    run: Callable[[type[Sender], Path], Response]
    expected: tuple[int | None, ErrorClass | None]


def _hostile(scenario: Scenario) -> Situation:
    def run(driver: type[Sender], _tmp: Path) -> Response:
        with HostileReceiver(scenario.script) as server:
            return send(driver, f"{server.url}/pb")

    return Situation(scenario.name, run, (scenario.status, scenario.error))


def _status(code: int) -> Callable[[type[Sender], Path], Response]:
    def run(driver: type[Sender], _tmp: Path) -> Response:
        script = Script(reply(b"HTTP/1.1 %d Whatever" % code,
                              [(b"Location", b"http://169.254.169.254/")]))
        with HostileReceiver(script) as server:
            return send(driver, f"{server.url}/pb")

    return run


def _dns(answer: list[str] | BaseException | str) -> Callable[[type[Sender], Path], Response]:
    def run(driver: type[Sender], _tmp: Path) -> Response:
        with HostileReceiver(Script(reply(b"HTTP/1.1 200 OK", []))) as server:
            got = send(driver, f"http://pb.partner.test:{server.port}/pb",
                       dns=ScriptedDNS({"pb.partner.test": answer}))
            assert server.received == [] or answer == ["127.0.0.1"]
        return got

    return run


def _tls_failure(driver: type[Sender], tmp: Path) -> Response:
    from tests.receiver import Receiver

    receiver = Receiver(tls=TestCA(tmp).server_context("pb.partner.test"))
    try:  # the CA is not trusted
        return send(driver, f"https://pb.partner.test:{receiver.port}/pb",
                    dns=ScriptedDNS({"pb.partner.test": ["127.0.0.1"]}))
    finally:
        receiver.close()


def _refused(driver: type[Sender], _tmp: Path) -> Response:
    return send(driver, f"http://127.0.0.1:{free_port()}/pb")


def _url(url: str, headers: dict[str, str] | None = None,
         policy: AddressPolicy = LOOPBACK) -> Callable[[type[Sender], Path], Response]:
    def run(driver: type[Sender], _tmp: Path) -> Response:
        with HostileReceiver() as server:
            got = send(driver, url.format(port=server.port), headers, policy=policy)
            assert server.received == []  # nothing was sent
        return got

    return run


def _gai(code: int, text: str) -> socket.gaierror:
    return socket.gaierror(code, text)


SITUATIONS: tuple[Situation, ...] = (
    Situation("connection-refused", _refused, (None, ErrorClass.CONNECTION)),
    Situation("tls-failure", _tls_failure, (None, ErrorClass.TLS)),
    Situation("blocked-literal", _url("http://10.0.0.1:{port}/pb"),
              (None, ErrorClass.BLOCKED)),
    Situation("blocked-by-dns", _dns(["169.254.169.254"]), (None, ErrorClass.BLOCKED)),
    Situation("invalid-url-scheme", _url("ftp://127.0.0.1:{port}/pb"),
              (None, ErrorClass.INVALID_URL)),
    Situation("invalid-url-host", _url("http://pb partner.test:{port}/pb"),
              (None, ErrorClass.INVALID_URL)),
    Situation("invalid-url-port", _url("http://127.0.0.1:{port}x/pb"),
              (None, ErrorClass.INVALID_URL)),
    Situation("invalid-request-crlf", _url("http://127.0.0.1:{port}/pb",
                                           {"X-A": "a\r\nX-Injected: 1"}),
              (None, ErrorClass.INVALID_REQUEST)),
    Situation("invalid-request-nul", _url("http://127.0.0.1:{port}/pb", {"X-A": "a\x00"}),
              (None, ErrorClass.INVALID_REQUEST)),
    Situation("invalid-request-name", _url("http://127.0.0.1:{port}/pb", {"X A": "v"}),
              (None, ErrorClass.INVALID_REQUEST)),
    Situation("dns-nxdomain", _dns(_gai(socket.EAI_NONAME, "Name or service not known")),
              (None, ErrorClass.DNS)),
    Situation("dns-nodata", _dns(_gai(socket.EAI_NODATA, "No address associated")),
              (None, ErrorClass.DNS)),
    Situation("dns-again", _dns(_gai(socket.EAI_AGAIN, "Temporary failure in name "
                                                       "resolution")),
              (None, ErrorClass.DNS_TEMPORARY)),
    Situation("dns-servfail", _dns(_gai(socket.EAI_FAIL, "Non-recoverable failure")),
              (None, ErrorClass.DNS_TEMPORARY)),
    Situation("dns-timeout", _dns("hang"), (None, ErrorClass.DNS_TEMPORARY)),
    Situation("resolver-bug", _dns(RuntimeError("a bug in the resolver")),
              (None, ErrorClass.INTERNAL)),
    Situation("dns-ok", _dns(["127.0.0.1"]), (200, None)),
    Situation("redirect", _status(302), (302, ErrorClass.REDIRECT)),
    Situation("http-404", _status(404), (404, ErrorClass.HTTP_4XX)),
    Situation("http-500", _status(500), (500, ErrorClass.HTTP_5XX)),
    *(_hostile(s) for s in SCENARIOS),
)


@pytest.mark.parametrize("situation", SITUATIONS, ids=[s.name for s in SITUATIONS])
def test_both_drivers_give_the_same_outcome(situation: Situation, tmp_path: Path) -> None:
    got = {driver.__name__: situation.run(driver, tmp_path) for driver in DRIVERS}
    outcomes = {name: outcome(response) for name, response in got.items()}
    assert set(outcomes.values()) == {situation.expected}, got
    for response in got.values():
        assert (response.error is None) == (response.status is not None)
        assert response.error is None or response.message


# -- arbitrary answers through the real curl driver ----------------------------------------

_status_lines = st.one_of(
    st.just(b"HTTP/1.1 200 OK"),
    st.builds(lambda code, reason: b"HTTP/1.1 %d %s" % (code, reason),
              st.integers(0, 1100), st.binary(max_size=12)),
    st.binary(max_size=30))
_fields = st.lists(st.builds(lambda n, v: n + b":" + v, st.binary(max_size=16),
                             st.binary(max_size=40)), max_size=8)
_answers = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda status, fields, end, body: b"\r\n".join([status, *fields]) + end + body,
              _status_lines, _fields, st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""]),
              st.binary(max_size=200)))


@pytest.fixture(scope="module")
def raw_server() -> Any:
    with HostileReceiver() as server:
        yield server


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(answer=_answers)
def test_any_bytes_a_server_answers_come_back_as_a_response(raw_server: HostileReceiver,
                                                            answer: bytes) -> None:
    raw_server.script = Script(answer)
    got = send(CurlSender, f"{raw_server.url}/pb")
    assert (got.error is None) == (got.status is not None), got
    if got.headers is not None:
        for name, value in got.headers.items():
            name.encode("utf-8")
            value.encode("utf-8")
    outcome(got)  # classifies


# -- header text and Retry-After -----------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 0, 0, tzinfo=UTC)


@given(st.binary(max_size=200))
def test_header_bytes_always_become_text(raw: bytes) -> None:
    text = header_text(raw)
    text.encode("utf-8")  # raises for a surrogate: there are none
    try:
        assert text == raw.decode("utf-8")
    except UnicodeDecodeError:
        assert text.encode("latin-1") == raw  # every byte kept


@given(st.binary(max_size=80))
def test_retry_after_from_any_header_bytes_never_raises(raw: bytes) -> None:
    delay = parse_retry_after(header_text(raw), NOW)
    assert delay is None or 0 <= delay <= MAX_DELAY


@given(st.text(max_size=60))
def test_retry_after_from_any_text_never_raises(value: str) -> None:
    delay = parse_retry_after(value, NOW)
    assert delay is None or 0 <= delay <= MAX_DELAY
    if delay is not None and value.strip(" \t").isdigit():
        assert value.strip(" \t").isascii()


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("007", 7.0),
    ("9" * 5000, MAX_DELAY), ("86401", MAX_DELAY),  # capped, no OverflowError
    (header_text(b"\xb2"), None), ("", None), (None, None), ("-5", None), ("1.5", None),
    ("1e3", None), ("\u0661", None), ("\uff11\uff12", None),  # str.isdigit(), not ASCII
    ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 1680.0),  # IMF-fixdate
    ("Wednesday, 21-Oct-15 07:28:00 GMT", 1680.0),  # obsolete RFC 850
    ("Wed Oct 21 07:28:00 2015", 1680.0),  # asctime
    ("Wed Oct  1 07:28:00 2015", 0.0),  # asctime, one-digit day; in the past
    ("Tue, 20 Oct 2015 07:28:00 GMT", 0.0),  # past
    ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_DELAY),  # far future
    ("Wed, 21 Oct 2015 07:28:00 +0000", None),  # RFC 2822, not an HTTP-date
    ("Wed, 31 Feb 2015 07:28:00 GMT", None),  # no such day
    ("Wed, 21 Oct 2015 25:28:00 GMT", None),
])
def test_retry_after_examples(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_a_two_digit_year_far_ahead_is_in_the_last_century() -> None:
    # RFC 9110: an RFC 850 year more than 50 years ahead is the most recent past one
    assert parse_retry_after("Thursday, 21-Oct-99 07:28:00 GMT", NOW) == 0.0
    assert parse_retry_after("Thursday, 21-Oct-16 07:28:00 GMT", NOW) == MAX_DELAY



def test_a_bug_while_reading_the_answer_is_an_internal_response(
        driver: type[Sender], monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in our own code, after the request went out, still ends the request
    with a Response (INTERNAL: retried on the schedule), and the sender goes on."""
    from postback.delivery import curl, http

    def broken(_fields: object) -> dict[str, str]:
        raise RuntimeError("a bug")

    with HostileReceiver(Script(reply(b"HTTP/1.1 200 OK", [], b"OK"))) as server:
        async def go() -> tuple[Response, Response]:
            async with driver(CONNECT_TIMEOUT, TOTAL_TIMEOUT, 4, "test", LOOPBACK) as sender:
                with monkeypatch.context() as patch:
                    patch.setattr(curl, "response_headers", broken)
                    patch.setattr(http, "response_headers", broken)
                    failed = await asyncio.wait_for(
                        sender.send("GET", f"{server.url}/pb", {}, None), LIMIT)
                return failed, await sender.send("GET", f"{server.url}/pb", {}, None)

        failed, after = asyncio.run(go())
    assert (failed.status, failed.error) == (None, ErrorClass.INTERNAL), failed
    assert failed.message is not None and "RuntimeError: a bug" in failed.message
    assert classify(None, failed.error)[0].value == "retry"
    assert after.status == 200
