"""Sending one request with aiohttp: no redirects, bounded time, bounded response read."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from postback.core.retry import ErrorClass

MAX_STORED_BODY = 20 * 1024


@dataclass(frozen=True)
class Response:
    status: int | None
    headers: dict[str, str] | None
    body: str | None
    latency_ms: float
    error: ErrorClass | None
    message: str | None


def outgoing_headers(user_agent: str, event_id: str, headers: dict[str, str]) -> dict[str, str]:
    """What every postback carries: our User-Agent, ``webhook-id`` (= ``{EventId}``, the same
    on every retry), then the delivery's own headers."""
    return {"User-Agent": user_agent, "webhook-id": event_id, **headers}


def _nxdomain(exc: BaseException) -> bool:
    err = getattr(exc, "os_error", None)
    return isinstance(err, socket.gaierror) and err.errno in (
        socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))


class Sender:
    """One aiohttp session for all of a worker's requests (pooled keep-alive connections)."""

    def __init__(self, connect_timeout: float, total_timeout: float, max_connections: int,
                 user_agent: str) -> None:
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout,
                                              connect=connect_timeout)
        self._max_connections = max_connections
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=60,
                                         enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding", "Accept"),
            cookie_jar=aiohttp.DummyCookieJar())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, method: str, url: str, headers: dict[str, str],
                   body: bytes | None) -> Response:
        assert self._session is not None
        started = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            target = URL(url, encoded=True)
            if target.scheme not in ("http", "https") or not target.host:
                raise ValueError("not an absolute http(s) URL")
        except ValueError as exc:
            return Response(None, None, None, elapsed(), ErrorClass.INVALID_URL, str(exc))
        try:
            async with self._session.request(method, target, headers=headers, data=body,
                                             allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_STORED_BODY)
                return Response(resp.status, dict(resp.headers),
                                raw.decode("utf-8", "replace"), elapsed(), None, None)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return Response(None, None, None, elapsed(), ErrorClass.TIMEOUT,
                            str(exc) or "no complete answer within the time limit")
        except aiohttp.ClientConnectorCertificateError as exc:
            return Response(None, None, None, elapsed(), ErrorClass.TLS, str(exc))
        except aiohttp.ClientSSLError as exc:
            return Response(None, None, None, elapsed(), ErrorClass.TLS, str(exc))
        except aiohttp.ClientConnectorError as exc:
            kind = ErrorClass.DNS if _nxdomain(exc) else ErrorClass.CONNECTION
            return Response(None, None, None, elapsed(), kind, str(exc))
        except aiohttp.InvalidURL as exc:
            return Response(None, None, None, elapsed(), ErrorClass.INVALID_URL, str(exc))
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return Response(None, None, None, elapsed(), ErrorClass.CONNECTION,
                            f"{type(exc).__name__}: {exc}")
