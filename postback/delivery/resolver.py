"""DNS resolution that refuses non-public targets, inside the connector.

aiohttp connects to exactly the addresses its resolver returns, so checking them here
checks the address that is dialled: no second lookup, so a DNS answer that changes
between the check and the connection (rebinding) cannot switch targets. TLS still
verifies the certificate against the host name.
"""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from postback.core.addresses import AddressPolicy
from postback.core.retry import ErrorClass


class BlockedAddress(OSError):
    """The host resolves to an address postbacks may not be sent to."""


class ResolverTimeout(OSError):
    """The resolver gave no answer in time (an OSError, as a lookup failure is, so aiohttp
    reports it as a DNS error; not a TimeoutError, which it would take for its own)."""


#: getaddrinfo's "this name has no address" answers (NXDOMAIN, or no record of the type)
_NO_SUCH_NAME = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})


def resolver_failure(exc: BaseException, host: str) -> tuple[ErrorClass, str]:
    """The error class and message of a failed lookup of ``host``, the same for every
    driver: a refused address is ``BLOCKED``; a name that does not exist (EAI_NONAME,
    EAI_NODATA: NXDOMAIN or no address) is ``DNS``, permanent; any other failure
    (EAI_AGAIN, EAI_FAIL = SERVFAIL, a resolver timeout or error) is ``DNS_TEMPORARY``,
    retried."""
    if isinstance(exc, BlockedAddress):
        return ErrorClass.BLOCKED, f"refused: {exc}"
    reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
              or type(exc).__name__)
    if isinstance(exc, socket.gaierror) and exc.errno in _NO_SUCH_NAME:
        return ErrorClass.DNS, f"{host} does not resolve: {reason}"
    return ErrorClass.DNS_TEMPORARY, f"{host} could not be resolved now: {reason}"


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (getaddrinfo in a thread by default) and refuses a name
    with any address the policy refuses; a lookup taking over ``timeout`` seconds fails
    with ``ResolverTimeout``."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None,
                 exempt: frozenset[str] = frozenset(), timeout: float | None = None) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()
        self.exempt = exempt  # the egress proxy's own host, which the operator chose
        self.timeout = timeout

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            async with asyncio.timeout(self.timeout):
                results = await self.inner.resolve(host, port, family)
        except TimeoutError as exc:
            if exc.errno is not None:
                raise  # a socket's ETIMEDOUT: an OSError like any other lookup failure
            within = f" within {self.timeout:g} s" if self.timeout is not None else ""
            raise ResolverTimeout(f"no DNS answer{within}") from None
        if host not in self.exempt:
            reason = self.policy.first_refusal(r["host"] for r in results)
            if reason is not None:
                raise BlockedAddress(f"{reason} ({host} resolves to it)")
        return results

    async def close(self) -> None:
        await self.inner.close()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"GuardedResolver({self.policy!r})"


# RFC 2606 / 6761 names that never resolve on the public internet: not looked up at all.
_NEVER_PUBLIC = (".example", ".invalid", ".test")
_lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="save-dns")


def vet_host_now(host: str, policy: AddressPolicy, timeout: float) -> tuple[str | None, str | None]:
    """Resolve a host name once, at save time: ``(refusal, warning)``.

    A name that resolves to a refused address is refused now, not at the first postback. A
    name that does not resolve (yet) is saved with a warning: DNS may follow, and every send
    resolves and checks again anyway. ``localhost`` names are loopback by definition
    (RFC 6761) and the reserved example/test names are never sent to DNS.
    """
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        addresses = ["127.0.0.1", "::1"]
    elif name.endswith(_NEVER_PUBLIC) or name in {n[1:] for n in _NEVER_PUBLIC}:
        return None, f"{host} is a reserved name that never resolves on the public internet"
    else:
        lookup = _lookups.submit(socket.getaddrinfo, name, None, proto=socket.IPPROTO_TCP)
        try:
            addresses = [str(info[4][0]) for info in lookup.result(timeout)]
        except FutureTimeout:
            return None, f"{host} did not resolve within {timeout:g} s; it is checked again " \
                "on every send"
        except OSError as exc:
            return None, f"{host} does not resolve now ({exc}); postbacks fail until it does"
        except UnicodeError:  # the IDNA codec: a label over 63 characters, or an empty one
            return (f"{host} is not a host name: each part between dots must be 1 to 63 "
                    "letters, digits or hyphens"), None
    reason = policy.first_refusal(addresses)
    return (None if reason is None else f"{reason} ({host} resolves to it)"), None
