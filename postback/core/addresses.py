"""Which addresses a postback may be sent to: globally routable ones only.

``ipaddress``'s ``is_global`` is not enough on its own: it calls IPv6 forms that embed an
IPv4 address (6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) global even when the embedded
address is 127.0.0.1, and multicast global too. So every embedded IPv4 address (mapped,
6to4, NAT64, Teredo) is checked as well, and cloud metadata addresses are named outright.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_METADATA = (ip_network("169.254.169.254/32"), ip_network("fd00:ec2::254/128"),
             ip_network("100.100.100.200/32"))
_NAT64 = (ip_network("64:ff9b::/96"), ip_network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ip_network("2002::/16")
_CGNAT = ip_network("100.64.0.0/10")
_ULA = ip_network("fc00::/7")
_RFC1918 = (ip_network("10.0.0.0/8"), ip_network("172.16.0.0/12"),
            ip_network("192.168.0.0/16"))


def _embedded(addr: IPv6Address) -> list[IPv4Address]:
    found: list[IPv4Address] = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    if addr in _SIX_TO_FOUR:
        found.append(IPv4Address((int(addr) >> 80) & 0xFFFFFFFF))
    if any(addr in net for net in _NAT64):
        found.append(IPv4Address(int(addr) & 0xFFFFFFFF))
    if addr.teredo is not None:
        found.extend(addr.teredo)
    return found


def _why_not_global(addr: IPAddress) -> str | None:
    if any(addr in net for net in _METADATA):
        return "a cloud metadata address"
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_multicast:
        return "a multicast address"
    if isinstance(addr, IPv4Address) and addr in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if isinstance(addr, IPv6Address) and addr in _ULA:
        return "a unique-local address"
    if addr.is_reserved:
        return "a reserved address"
    if any(addr in net for net in _RFC1918):
        return "a private address (RFC 1918)"
    if not addr.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses only, except the operator's allow-list (``POSTBACK_ALLOW_TARGETS``)."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AddressPolicy:
        try:
            return cls(tuple(ip_network(part.strip(), strict=False)
                             for part in text.split(",") if part.strip()))
        except ValueError as exc:
            raise ValueError(f"POSTBACK_ALLOW_TARGETS must be comma-separated CIDRs: {exc}") \
                from None

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` may not be a target, or None if it may."""
        addr = ip_address(address) if isinstance(address, str) else address
        if isinstance(addr, IPv6Address) and addr.scope_id:
            addr = ip_address(str(addr).split("%", 1)[0])
        if any(addr in net for net in self.allow):
            return None
        if isinstance(addr, IPv6Address):
            embedded = _embedded(addr)
            for inner in embedded:
                inner_reason = self.refusal(inner)
                if inner_reason is not None:
                    return f"{addr} is an IPv6 form of {inner} ({inner_reason})"
            if embedded and addr.teredo is None:
                return None  # mapped, 6to4 or NAT64 of a public address: that is the target
        reason = _why_not_global(addr)
        return None if reason is None else f"{addr} is {reason}"

    def first_refusal(self, addresses: Iterable[str]) -> str | None:
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                return reason
        return None


def literal_ip(host: str) -> IPAddress | None:
    """The address if ``host`` is an IP literal (with or without IPv6 brackets)."""
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        return None
