"""Sending one request: no redirects, bounded time, bounded response read. ``Sender``
holds what every driver shares; ``AiohttpSender`` here and ``CurlSender`` (``curl.py``)
send."""

from __future__ import annotations

import socket
import ssl
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from postback.config import Settings
from postback.core.addresses import AddressPolicy, literal_ip
from postback.core.responses import readable_text
from postback.core.retry import ErrorClass
from postback.core.signing import SigningKey, signature_headers
from postback.delivery.resolver import BlockedAddress, GuardedResolver

MAX_STORED_BODY = 20 * 1024


@dataclass(frozen=True)
class Response:
    """One answer as received: ``body`` is the first ``MAX_STORED_BODY`` bytes, untouched."""

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


def _nxdomain(exc: BaseException) -> bool:
    err = getattr(exc, "os_error", None)
    return isinstance(err, socket.gaierror) and err.errno in (
        socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))


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
        proxy_host = URL(proxy).host if proxy else None
        self.resolver = GuardedResolver(self.policy, resolver,
                                        frozenset({proxy_host}) if proxy_host else frozenset())
        # hosts repeat: parse and judge each IP literal once per sender
        self._literal_refusal = lru_cache(maxsize=4096)(self._judge_literal)

    def _judge_literal(self, host: str) -> tuple[bool, str | None]:
        """(is the host an IP literal, why it may not be a target)."""
        literal = literal_ip(host)
        return literal is not None, (self.policy.refusal(literal) if literal is not None
                                     else None)

    @classmethod
    def from_settings(cls, s: Settings, max_connections: int,
                      resolver: AbstractResolver | None = None) -> Sender:
        """The driver ``POSTBACK_HTTP_CLIENT`` names (pycurl unless told otherwise)."""
        if cls is Sender:
            if s.http_client == "aiohttp":
                cls = AiohttpSender
            else:
                from postback.delivery.curl import CurlSender

                cls = CurlSender
        return cls(s.connect_timeout, s.total_timeout, max_connections, s.user_agent,
                   s.allow_targets, s.egress_source_address, s.egress_proxy, resolver,
                   s.tls_ca_file)

    async def __aenter__(self) -> Sender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, method: str, url: str, headers: dict[str, str],
                   body: bytes | None) -> Response:
        started = time.perf_counter()
        try:
            target = URL(url, encoded=True)
            if target.scheme not in ("http", "https") or not target.host:
                raise ValueError("not an absolute http(s) URL")
        except ValueError as exc:
            return Response(None, None, None, _ms(started), ErrorClass.INVALID_URL, str(exc))
        literal, reason = self._literal_refusal(target.host)
        if reason is None and not literal and self.proxy:
            # through a proxy the proxy dials: vet the target's addresses here first
            try:
                await self.resolver.resolve(target.host, target.port or 0, socket.AF_UNSPEC)
            except BlockedAddress as exc:
                reason = str(exc)
            except OSError:
                pass  # let the proxy report what it finds
        if reason is not None:
            return Response(None, None, None, _ms(started), ErrorClass.BLOCKED,
                            f"refused: {reason}")
        return await self._transmit(method, target, literal, headers, body, started)

    @abstractmethod
    async def _transmit(self, method: str, target: URL, literal: bool,
                        headers: dict[str, str], body: bytes | None,
                        started: float) -> Response:
        """Send a request that passed the checks above; never raise for a partner's
        failure, return it as a ``Response`` with its error class."""


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
            connector=connector, timeout=aiohttp.ClientTimeout(
                total=self.total_timeout, sock_connect=self.connect_timeout,
                connect=self.connect_timeout),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding", "Accept"),
            cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _transmit(self, method: str, target: URL, literal: bool,
                        headers: dict[str, str], body: bytes | None,
                        started: float) -> Response:
        assert self._session is not None
        try:
            async with self._session.request(method, target, headers=headers, data=body,
                                             allow_redirects=False,
                                             proxy=self.proxy) as resp:
                raw = await resp.content.read(MAX_STORED_BODY)
                return Response(resp.status, dict(resp.headers), raw, _ms(started), None, None)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return Response(None, None, None, _ms(started), ErrorClass.TIMEOUT,
                            str(exc) or "no complete answer within the time limit")
        except aiohttp.ClientConnectorCertificateError as exc:
            return Response(None, None, None, _ms(started), ErrorClass.TLS, str(exc))
        except aiohttp.ClientSSLError as exc:
            return Response(None, None, None, _ms(started), ErrorClass.TLS, str(exc))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                return Response(None, None, None, _ms(started), ErrorClass.BLOCKED,
                                f"refused: {exc.os_error}")
            kind = ErrorClass.DNS if _nxdomain(exc) else ErrorClass.CONNECTION
            return Response(None, None, None, _ms(started), kind, str(exc))
        except aiohttp.InvalidURL as exc:
            return Response(None, None, None, _ms(started), ErrorClass.INVALID_URL, str(exc))
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return Response(None, None, None, _ms(started), ErrorClass.CONNECTION,
                            f"{type(exc).__name__}: {exc}")
