"""The address policy: every class of non-public address is refused, in every disguise."""

from __future__ import annotations

import pytest

from postback.core.addresses import AddressPolicy

POLICY = AddressPolicy()


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"), ("169.254.1.1", "link-local"),
    ("fd00:ec2::254", "cloud metadata"), ("100.100.100.200", "cloud metadata"),
    ("fe80::1", "link-local"), ("100.64.0.1", "carrier-grade NAT"),
    ("fd12:3456::1", "unique-local"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("240.0.0.1", "reserved"),
    ("192.0.2.1", "not a globally routable"),  # documentation range
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::7f00:1", "IPv6 form of 127.0.0.1"),
    ("64:ff9b:1::a00:1", "IPv6 form of 10.0.0.1"),
    ("2002:7f00:1::", "IPv6 form of 127.0.0.1"),
    ("2002:a9fe:a9fe::", "IPv6 form of 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "IPv6 form of 127.0.0.1"),  # Teredo client
])
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    reason = POLICY.refusal(address)
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111",
                                     "64:ff9b::808:808", "2002:808:808::"])
def test_public_addresses_pass(address: str) -> None:
    assert POLICY.refusal(address) is None


def test_the_allow_list_opens_exact_ranges() -> None:
    policy = AddressPolicy.parse("127.0.0.0/8, ::1/128")
    assert policy.refusal("127.0.0.1") is None and policy.refusal("::1") is None
    assert policy.refusal("10.0.0.1") is not None
    with pytest.raises(ValueError, match="POSTBACK_ALLOW_TARGETS"):
        AddressPolicy.parse("localhost")
