"""Choosing the HTTP driver: the one place that knows every driver (``http`` holds what
they share and the aiohttp driver, ``curl`` the pycurl one; neither imports this)."""

from __future__ import annotations

from aiohttp.abc import AbstractResolver

from postback.config import Settings
from postback.delivery.curl import CurlSender
from postback.delivery.http import AiohttpSender, Sender

DRIVERS: dict[str, type[Sender]] = {"curl": CurlSender, "aiohttp": AiohttpSender}


def sender_for(settings: Settings, max_connections: int,
               resolver: AbstractResolver | None = None) -> Sender:
    """The driver ``POSTBACK_HTTP_CLIENT`` names (pycurl unless told otherwise), configured
    from the settings; ``resolver`` replaces the system's DNS (tests)."""
    driver = DRIVERS.get(settings.http_client, CurlSender)
    return driver(settings.connect_timeout, settings.total_timeout, max_connections,
                  settings.user_agent, settings.allow_targets, settings.egress_source_address,
                  settings.egress_proxy, resolver, settings.tls_ca_file)
