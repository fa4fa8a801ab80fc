"""Sending one request: no redirects, bounded time, bounded response read. ``Sender``
holds what every driver shares; ``AiohttpSender`` here and ``CurlSender`` (``curl.py``)
send; ``drivers.sender_for`` picks one by the settings.

A partner's server is hostile: whatever it sends (or fails to send) comes back from
``Sender.send`` as a ``Response``, never as an exception, and every driver returns the same
one. What goes on the wire is decided here, once, for every driver: ``wire_url`` (the URL
as sent: UTF-8 percent-encoded, the host IDNA-encoded), ``request_problem`` (a method or
header that cannot be sent), and the response's headers are read back with
``response_headers`` (``header_text`` decoding, duplicates combined, the same limits).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from postback.core.addresses import AddressPolicy, literal_ip
from postback.core.responses import readable_text
from postback.core.retry import ErrorClass
from postback.core.signing import SigningKey, signature_headers
from postback.core.urls import wire_url
from postback.delivery.resolver import BlockedAddress, GuardedResolver, resolver_failure

log = logging.getLogger("postback.delivery")

MAX_STORED_BODY = 20 * 1024
#: what a response's head may hold, for every driver (aiohttp's parser and our reading of
#: libcurl's header lines enforce the same): fields, bytes of one field's name and value
#: (and of the status line), bytes of all of them
MAX_RESPONSE_HEADERS = 1000
MAX_HEADER_FIELD = 8190
MAX_RESPONSE_HEADER_BYTES = 256 * 1024


@dataclass(slots=True)
class Response:
    """One answer as received: ``body`` is the first ``MAX_STORED_BODY`` bytes, untouched;
    ``headers`` as ``response_headers`` reads them (names as first spelled)."""

    status: int | None
    headers: dict[str, str] | None
    body: bytes | None
    latency_ms: float
    error: ErrorClass | None
    message: str | None

    @property
    def text(self) -> str | None:
        """The body as readable text (never raises)."""
        return readable_text(self.body)

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name (``Retry-After`` may arrive as
        ``retry-after``, and over HTTP/2 always does)."""
        if not self.headers:
            return None
        value = self.headers.get(name)
        if value is None:
            lower = name.lower()
            value = next((v for k, v in self.headers.items() if k.lower() == lower), None)
        return value


#: what ``Sender.start`` calls with a request's answer
Done = Callable[[Response], None]


def failure(started: float, error: ErrorClass, message: str) -> Response:
    """A ``Response`` for a request that got no usable answer."""
    return Response(None, None, None, _ms(started), error, message)


def outgoing_headers(user_agent: str, event_id: str, headers: dict[str, str],
                     signing_keys: tuple[SigningKey, ...] = (), signed_content: bytes = b""
                     ) -> dict[str, str]:
    """What every postback carries: our User-Agent, ``webhook-id`` (= ``{EventId}``, the same
    on every retry), the delivery's own headers, and for a signed setting the Standard
    Webhooks timestamp and signature of this attempt."""
    out = {"User-Agent": user_agent, "webhook-id": event_id, **headers}
    if signing_keys:
        out.update(signature_headers(event_id, int(time.time()), signed_content, signing_keys))
    return out


# -- the request on the wire --------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_BYTES = re.compile(_TOKEN.pattern.encode())
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB: never on the wire
_good_names: set[str] = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _is_token(name: str) -> bool:
    """Whether a name not yet in ``_good_names`` is a token (and remember it if so)."""
    if _TOKEN.fullmatch(name) is None:
        return False
    if len(_good_names) < 4096:  # names repeat: judge each once
        _good_names.add(name)
    return True


def request_problem(method: str, headers: Mapping[str, str]) -> str | None:
    """Why this request cannot be sent as written (a method or header name that is not an
    RFC 9110 token; a header value with CR, LF, NUL or another control character, or
    that is not text), or None. Values may be any other text: they go as UTF-8."""
    if method not in _good_names and not _is_token(method):
        return f"the method {method!r} is not a valid HTTP method"
    for name, value in headers.items():
        if name not in _good_names and not _is_token(name):
            return f"the header name {name!r} cannot be sent (only letters, digits and " \
                "!#$%&'*+-.^_`|~ may be in a name)"
        if not (value.isascii() and value.isprintable()):
            if _CONTROL.search(value):
                return f"the value of the header {name} holds a control character " \
                    "(CR, LF, NUL...), which cannot be sent"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"the value of the header {name} is not text (a lone surrogate)"
    return None


# -- the response's head -------------------------------------------------------------------

class InvalidAnswer(ValueError):
    """A response's head that is not HTTP, or over the limits."""


def header_text(raw: bytes) -> str:
    """A header's bytes as text: UTF-8 when they are valid UTF-8, else Latin-1 (every byte
    a character); never raises, never yields surrogates; control characters are kept."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


#: names seen before, as (name, its lower case): names repeat, each is judged once
_field_names: dict[bytes, tuple[str, str]] = {}


def _field_name(raw: bytes) -> tuple[str, str]:
    if _TOKEN_BYTES.fullmatch(raw) is None:
        raise InvalidAnswer(f"the header name {header_text(raw)[:100]!r} is not a valid token")
    name = raw.decode("ascii")  # a token is ASCII
    if len(raw) <= 64 and len(_field_names) < 4096:  # a partner cannot pin much memory
        _field_names[raw] = (name, name.lower())
    return name, name.lower()


def response_headers(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """A response's header fields, as every driver returns them: name and value decoded
    with ``header_text`` (spaces and tabs around the value trimmed), fields of the same
    name (in any case) combined in order with ``", "`` (RFC 9110 section 5.3), under the
    name as first spelled. ``InvalidAnswer`` for a name that is not a token or a head over
    ``MAX_RESPONSE_HEADERS`` / ``MAX_HEADER_FIELD`` / ``MAX_RESPONSE_HEADER_BYTES``."""
    out: dict[str, str] = {}
    spelled: dict[str, str] = {}  # lower case -> the name as first spelled
    count = size = 0
    for raw_name, raw_value in fields:
        name, lower = _field_names.get(raw_name) or _field_name(raw_name)
        value = raw_value.strip(b" \t\r\n")  # (libcurl's lines end in CRLF)
        field = len(raw_name) + len(value)
        if field > MAX_HEADER_FIELD:
            raise InvalidAnswer(f"the header {name} is over {MAX_HEADER_FIELD} bytes")
        count += 1
        size += field
        try:  # header_text, inline: this runs for every field of every answer
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        first = spelled.get(lower)
        if first is None:
            spelled[lower] = name
            out[name] = text
        else:
            out[first] = f"{out[first]}, {text}"
    if count > MAX_RESPONSE_HEADERS:
        raise InvalidAnswer(f"more than {MAX_RESPONSE_HEADERS} header fields")
    if size > MAX_RESPONSE_HEADER_BYTES:
        raise InvalidAnswer(f"the header fields are over {MAX_RESPONSE_HEADER_BYTES} bytes")
    return out


class Sender(ABC):
    """What every HTTP driver shares: the address policy, egress options and the checks made
    before a request leaves (an absolute http(s) URL; an IP literal judged at once; through
    a proxy, the target's addresses vetted first, since the proxy dials). Subclasses send.

    Only public addresses are dialled (``AddressPolicy``, checked where each driver
    connects); outgoing connections can be bound to one source address or sent through an
    HTTP proxy (https targets tunnel through CONNECT, so the proxy never sees their content).
    Certificates are always verified, against the URL's host name (not the address dialled);
    an operator may add CAs to the system's (``POSTBACK_TLS_CA_FILE``).
    """

    def __init__(self, connect_timeout: float, total_timeout: float, max_connections: int,
                 user_agent: str, policy: AddressPolicy | None = None,
                 source_address: str | None = None, proxy: str | None = None,
                 resolver: AbstractResolver | None = None,
                 ca_file: str | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.max_connections = max_connections
        self.user_agent = user_agent
        self.policy = policy or AddressPolicy()
        self.source_address = source_address
        self.proxy = proxy
        self.ca_file = ca_file
        proxy_host = URL(proxy).raw_host if proxy else None
        # a lookup is bounded by the connect timeout, in every driver
        self.resolver = GuardedResolver(self.policy, resolver,
                                        frozenset({proxy_host}) if proxy_host else frozenset(),
                                        timeout=connect_timeout)
        # hosts repeat: parse and judge each IP literal once per sender
        self._literal_refusal = lru_cache(maxsize=4096)(self._judge_literal)
        self._starts: set[asyncio.Task[Response]] = set()  # start()'s requests in flight

    def _judge_literal(self, host: str) -> tuple[bool, str | None]:
        """(is the host an IP literal, why it may not be a target)."""
        literal = literal_ip(host)
        return literal is not None, (self.policy.refusal(literal) if literal is not None
                                     else None)

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, method: str, url: str, headers: dict[str, str],
                   body: bytes | None) -> Response:
        """Send one request; never raises (but for cancellation): every failure, a bug of
        ours included (``INTERNAL``), is a ``Response`` with its error class."""
        started = time.perf_counter()
        try:
            checked = self._check(method, url, headers, started)
            if isinstance(checked, Response):
                return checked
            target, wire, literal = checked
            if not literal and self.proxy:
                # through a proxy the proxy dials: vet the target's addresses here first
                try:
                    await self.resolver.resolve(target.raw_host or "", target.port or 0,
                                                socket.AF_UNSPEC)
                except BlockedAddress as exc:
                    return failure(started, ErrorClass.BLOCKED, f"refused: {exc}")
                except OSError:
                    pass  # let the proxy report what it finds
            return await self._transmit(method, target, wire, literal, headers, body,
                                        started)
        except Exception as exc:
            log.exception("sending %s %s failed unexpectedly", method, url[:200])
            return failure(started, ErrorClass.INTERNAL,
                           f"internal error while sending: {type(exc).__name__}: {exc}")

    def start(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
              done: Done) -> None:
        """``send`` for the engine: ``done`` gets the ``Response`` on the event loop, never
        from inside this call. Here a task per request; a driver that can do without one
        (``CurlSender``) overrides it, since the engine starts thousands a second."""
        task = asyncio.get_running_loop().create_task(self.send(method, url, headers, body))
        self._starts.add(task)
        task.add_done_callback(functools.partial(_finished, self._starts, done,
                                                 time.perf_counter()))

    def _check(self, method: str, url: str, headers: dict[str, str], started: float
               ) -> tuple[URL, str, bool] | Response:
        """The checks every request passes before it leaves: (the target, its wire URL,
        whether its host is an IP literal), or the ``Response`` of a refusal."""
        try:
            wire = wire_url(url)
            target = URL(wire, encoded=True)
            if target.scheme not in ("http", "https") or not target.raw_host:
                raise ValueError("not an absolute http(s) URL")
        except ValueError as exc:
            return failure(started, ErrorClass.INVALID_URL, str(exc))
        problem = request_problem(method, headers)
        if problem is not None:
            return failure(started, ErrorClass.INVALID_REQUEST, problem)
        literal, reason = self._literal_refusal(target.raw_host)
        if reason is not None:
            return failure(started, ErrorClass.BLOCKED, f"refused: {reason}")
        return target, wire, literal

    @abstractmethod
    async def _transmit(self, method: str, target: URL, wire: str, literal: bool,
                        headers: dict[str, str], body: bytes | None,
                        started: float) -> Response:
        """Send a request that passed the checks above (``wire`` is the URL as sent,
        ``target`` the same parsed, its ``raw_host`` the name to resolve); return every
        failure as a ``Response`` with its error class (an exception is taken for a bug:
        ``INTERNAL``)."""


def _finished(starts: set[asyncio.Task[Response]], done: Done, started: float,
              task: asyncio.Task[Response]) -> None:
    """``done`` gets an answer whatever became of the task: a caller that counts what it
    has on the wire must hear of every request, or it loses that place for good."""
    starts.discard(task)
    if task.cancelled():
        response = failure(started, ErrorClass.INTERNAL,
                           "the request was cancelled before it ended")
    elif (exc := task.exception()) is not None:
        response = failure(started, ErrorClass.INTERNAL,
                           f"internal error while sending: {type(exc).__name__}: {exc}")
    else:
        response = task.result()
    done(response)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class AiohttpSender(Sender):
    """aiohttp: one session for all of a worker's requests (pooled keep-alive connections).
    The policy is checked in the resolver the connector dials with."""

    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        tls = ssl.create_default_context()
        if self.ca_file:
            tls.load_verify_locations(self.ca_file)
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, ttl_dns_cache=60, enable_cleanup_closed=True,
            resolver=self.resolver, ssl=tls,
            local_addr=(self.source_address, 0) if self.source_address else None)
        self._session = aiohttp.ClientSession(
            # the lookup is bounded by the resolver (as in the curl driver), the TCP and
            # TLS handshakes by sock_connect, everything by total
            connector=connector, timeout=aiohttp.ClientTimeout(
                total=self.total_timeout, sock_connect=self.connect_timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding", "Accept"),
            cookie_jar=aiohttp.DummyCookieJar(),
            max_headers=MAX_RESPONSE_HEADERS, max_field_size=MAX_HEADER_FIELD,
            max_line_size=MAX_HEADER_FIELD)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _transmit(self, method: str, target: URL, wire: str, literal: bool,
                        headers: dict[str, str], body: bytes | None,
                        started: float) -> Response:
        assert self._session is not None
        try:
            async with self._session.request(method, target, headers=headers, data=body,
                                             allow_redirects=False,
                                             proxy=self.proxy) as resp:
                if resp.status < 100:
                    return failure(started, ErrorClass.CONNECTION,
                                   f"invalid HTTP answer: status code {resp.status}")
                raw = await _read_body(resp.content)
                return Response(resp.status, response_headers(resp.raw_headers), raw,
                                _ms(started), None, None)
        except InvalidAnswer as exc:
            return failure(started, ErrorClass.CONNECTION, f"invalid HTTP answer: {exc}")
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return failure(started, ErrorClass.TIMEOUT,
                           str(exc) or "no complete answer within the time limit")
        except aiohttp.ClientSSLError as exc:
            return failure(started, ErrorClass.TLS, str(exc))
        except aiohttp.ClientConnectorDNSError as exc:
            return failure(started, *resolver_failure(exc.os_error, exc.host))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                return failure(started, ErrorClass.BLOCKED, f"refused: {exc.os_error}")
            return failure(started, ErrorClass.CONNECTION, str(exc))
        except aiohttp.InvalidURL as exc:
            return failure(started, ErrorClass.INVALID_URL, str(exc))
        except aiohttp.ClientResponseError as exc:  # the parser's: the answer is not HTTP
            return failure(started, ErrorClass.CONNECTION,
                           f"invalid HTTP answer: {' '.join(exc.message.split())}")
        except aiohttp.ServerDisconnectedError:
            return failure(started, ErrorClass.CONNECTION,
                           "the server closed the connection before a complete answer")
        except aiohttp.ClientPayloadError as exc:
            return failure(started, ErrorClass.CONNECTION,
                           f"the answer's body was cut short: {exc}")
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return failure(started, ErrorClass.CONNECTION, f"{type(exc).__name__}: {exc}")


async def _read_body(content: aiohttp.StreamReader) -> bytes:
    """The body to its end or to ``MAX_STORED_BODY`` bytes, whichever comes first (a read
    returns what has arrived; a body that stops short of its length is an error)."""
    chunk = await content.read(MAX_STORED_BODY)
    if not chunk or content.at_eof() or len(chunk) >= MAX_STORED_BODY:
        return chunk
    chunks = [chunk]
    size = len(chunk)
    while size < MAX_STORED_BODY and (chunk := await content.read(MAX_STORED_BODY - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
