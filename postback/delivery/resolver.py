"""DNS resolution that refuses non-public targets, inside the connector.

aiohttp connects to exactly the addresses its resolver returns, so checking them here
checks the address that is dialled: no second lookup, so a DNS answer that changes
between the check and the connection (rebinding) cannot switch targets. TLS still
verifies the certificate against the host name.
"""

from __future__ import annotations

import socket

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
                raise BlockedAddress(f"{host} resolves to {reason}")
        return results

    async def close(self) -> None:
        await self.inner.close()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"GuardedResolver({self.policy!r})"


