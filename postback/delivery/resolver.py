"""DNS resolution that refuses non-public targets, inside the connector.

aiohttp connects to exactly the addresses its resolver returns, so checking them here
checks the address that is dialled: no second lookup, so a DNS answer that changes
between the check and the connection (rebinding) cannot switch targets. TLS still
verifies the certificate against the host name.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from postback.core.addresses import AddressPolicy


class BlockedAddress(OSError):
    """The host resolves to an address postbacks may not be sent to."""


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None,
                 exempt: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.inner = inner or ThreadedResolver()
        self.exempt = exempt  # the egress proxy's own host, which the operator chose

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
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
    reason = policy.first_refusal(addresses)
    return (None if reason is None else f"{reason} ({host} resolves to it)"), None
