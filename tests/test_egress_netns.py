"""Published egress, across a real (namespaced) network: with
POSTBACK_EGRESS_SOURCE_ADDRESS the receiver sees that source address.

The test makes its own network namespace and veth pair (root and iproute2 needed; it
skips locally without them, never in CI) and removes them after."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from postback.core.addresses import AddressPolicy
from postback.delivery.curl import CurlSender
from postback.delivery.http import AiohttpSender, Sender
from tests.conftest import IN_CI

pytestmark = pytest.mark.serial  # see pyproject.toml

RECEIVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("10.231.7.2", 8080), H).serve_forever()
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if IN_CI:
            pytest.fail("network namespace tests need root and iproute2 in CI")
        pytest.skip("needs root and iproute2")
    name = f"pb{uuid.uuid4().hex[:8]}"
    host, peer = f"{name}a", f"{name}b"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", name)
        sh("ip", "addr", "add", "10.231.7.1/24", "dev", host)
        sh("ip", "addr", "add", "10.231.7.3/24", "dev", host)  # a second, unused address
        sh("ip", "link", "set", host, "up")
        sh("ip", "netns", "exec", name, "ip", "addr", "add", "10.231.7.2/24", "dev", peer)
        sh("ip", "netns", "exec", name, "ip", "link", "set", peer, "up")
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.mark.parametrize("driver", [CurlSender, AiohttpSender], ids=["curl", "aiohttp"])
def test_the_receiver_sees_the_configured_source_address(driver: type[Sender],
                                                         namespace: str) -> None:
    receiver = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c",
                                 RECEIVER])
    try:
        async def go(source: str | None) -> str:
            async with driver(2.0, 5.0, 4, "test", AddressPolicy.parse("10.231.7.0/24"),
                              source_address=source) as sender:
                for _ in range(50):  # the receiver may still be starting
                    got = await sender.send("GET", "http://10.231.7.2:8080/pb", {}, None)
                    if got.status == 200:
                        return str(got.text)
                    await asyncio.sleep(0.1)
            raise AssertionError(f"no answer from the namespace: {got}")

        assert asyncio.run(go("10.231.7.3")) == "10.231.7.3"
        assert asyncio.run(go("10.231.7.1")) == "10.231.7.1"
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
