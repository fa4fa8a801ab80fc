"""Operator settings, read from ``POSTBACK_*`` environment variables."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from postback.core.addresses import AddressPolicy
from postback.core.retry import DEFAULT_SCHEDULE, RetryPolicy, parse_schedule
from postback.sealing import Sealer


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./postback.db"
    admin_token: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 5.0
    total_timeout: float = 15.0
    lease_seconds: float = 120.0
    #: how often each worker proves it is alive; one silent for 4 heartbeats is presumed
    #: dead and the others take up its work
    heartbeat_seconds: float = 2.0
    claim_batch: int = 500
    max_in_flight: int = 512
    endpoint_concurrency: int = 32
    poll_interval: float = 0.5
    lifecycle_interval: float = 60.0
    disable_after_hours: float = 72.0
    disable_after_failures: int = 10
    user_agent: str = "postback/0.1 (+https://github.com/postback)"
    allow_targets: AddressPolicy = field(default_factory=AddressPolicy)
    egress_source_address: str | None = None
    egress_proxy: str | None = None
    egress_ranges: tuple[str, ...] = ()
    tls_ca_file: str | None = None
    http_client: str = "curl"
    secret_key: str | None = None
    # data feeds' destinations (delivery/feed_destinations.py): SFTP and email
    #: TCP connect plus the SSH handshake or the SMTP greeting
    destination_connect_timeout: float = 15.0
    #: a destination that takes or answers nothing for this long has stalled
    destination_idle_timeout: float = 60.0
    #: one delivery (connect, upload or send, rename) at most
    destination_total_timeout: float = 1800.0
    #: the operator's mail relay for email feeds; None: email feeds are refused
    smtp_host: str | None = None
    #: None: 587 with starttls, 465 with tls, 25 with none
    smtp_port: int | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str | None = None
    smtp_tls: str = "starttls"
    #: a larger file is sent as its link (when the feed has one) instead of attached
    smtp_max_attachment_mb: float = 10.0
    # data feeds (services/feeds.py)
    #: how long a feed run's file is kept (hosted downloads, signed links), in days
    feed_retention_days: int = 30
    #: how many feed runs the scheduler works at once (one slow destination holds one)
    feed_workers: int = 4
    #: the address partners reach this service at: signed download links start with it
    public_url: str = "http://127.0.0.1:8000"
    #: an attempt's response body is emptied this many days after it was sent (the attempt,
    #: its status, headers, timing and error stay); 0 keeps bodies for ever
    attempt_body_retention_days: int = 90

    @cached_property
    def sealer(self) -> Sealer:
        if self.secret_key is None:
            raise RuntimeError("no POSTBACK_SECRET_KEY: secrets cannot be sealed or opened")
        return Sealer(self.secret_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def num(name: str, default: float, zero_ok: bool = False) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError as exc:
                raise ValueError(f"{name} must be a number, got {raw!r}") from exc
            if value < 0 or (value == 0 and not zero_ok):
                raise ValueError(f"{name} must be {'non-negative' if zero_ok else 'positive'}"
                                 f", got {raw!r}")
            return value

        schedule = env.get("POSTBACK_RETRY_SCHEDULE")
        retry = RetryPolicy(
            schedule=parse_schedule(schedule) if schedule else DEFAULT_SCHEDULE,
            jitter=num("POSTBACK_RETRY_JITTER", 0.2, zero_ok=True),
            throttle_floor=num("POSTBACK_RETRY_THROTTLE_FLOOR", 60.0, zero_ok=True),
        )
        ranges = tuple(r.strip() for r in env.get("POSTBACK_EGRESS_RANGES", "").split(",")
                       if r.strip())
        AddressPolicy.parse(",".join(ranges))  # the same CIDR syntax: fail early on typos
        key = env.get("POSTBACK_SECRET_KEY") or None
        key_file = env.get("POSTBACK_SECRET_KEY_FILE")
        if key is None and key_file:
            try:
                key = Path(key_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"POSTBACK_SECRET_KEY_FILE {key_file!r}: {exc.strerror}") \
                    from None
        ca_file = env.get("POSTBACK_TLS_CA_FILE") or None
        if ca_file is not None:
            try:  # a missing or malformed bundle fails at start, not on every https send
                ssl.create_default_context().load_verify_locations(ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"POSTBACK_TLS_CA_FILE {ca_file!r}: {exc}") from None
        client = env.get("POSTBACK_HTTP_CLIENT") or cls.http_client
        if client not in ("curl", "aiohttp"):
            raise ValueError(f"POSTBACK_HTTP_CLIENT must be curl or aiohttp, got {client!r}")
        if key is not None:
            Sealer(key)  # refuse a malformed key at start, not at the first secret
        smtp = _smtp_settings(env)
        return cls(
            **_feed_settings(env),
            **smtp,
            destination_connect_timeout=num("POSTBACK_DESTINATION_CONNECT_TIMEOUT",
                                            cls.destination_connect_timeout),
            destination_idle_timeout=num("POSTBACK_DESTINATION_IDLE_TIMEOUT",
                                         cls.destination_idle_timeout),
            destination_total_timeout=num("POSTBACK_DESTINATION_TOTAL_TIMEOUT",
                                          cls.destination_total_timeout),
            smtp_max_attachment_mb=num("POSTBACK_SMTP_MAX_ATTACHMENT_MB",
                                       cls.smtp_max_attachment_mb),
            secret_key=key,
            allow_targets=AddressPolicy.parse(env.get("POSTBACK_ALLOW_TARGETS", "")),
            egress_source_address=env.get("POSTBACK_EGRESS_SOURCE_ADDRESS") or None,
            egress_proxy=env.get("POSTBACK_EGRESS_PROXY") or None,
            egress_ranges=ranges,
            tls_ca_file=ca_file,
            http_client=client,
            database_url=env.get("POSTBACK_DATABASE_URL") or cls.database_url,
            admin_token=env.get("POSTBACK_ADMIN_TOKEN") or None,
            retry=retry,
            connect_timeout=num("POSTBACK_CONNECT_TIMEOUT", cls.connect_timeout),
            total_timeout=num("POSTBACK_TOTAL_TIMEOUT", cls.total_timeout),
            lease_seconds=num("POSTBACK_LEASE_SECONDS", cls.lease_seconds),
            heartbeat_seconds=num("POSTBACK_HEARTBEAT_SECONDS", cls.heartbeat_seconds),
            claim_batch=int(num("POSTBACK_CLAIM_BATCH", cls.claim_batch)),
            max_in_flight=int(num("POSTBACK_MAX_IN_FLIGHT", cls.max_in_flight)),
            endpoint_concurrency=int(num("POSTBACK_ENDPOINT_CONCURRENCY",
                                         cls.endpoint_concurrency)),
            poll_interval=num("POSTBACK_POLL_INTERVAL", cls.poll_interval),
            lifecycle_interval=num("POSTBACK_LIFECYCLE_INTERVAL", cls.lifecycle_interval),
            disable_after_hours=num("POSTBACK_DISABLE_AFTER_HOURS", cls.disable_after_hours),
            disable_after_failures=int(num("POSTBACK_DISABLE_AFTER_FAILURES",
                                           cls.disable_after_failures)),
        )


SMTP_TLS_MODES = ("starttls", "tls", "none")
#: each feed worker holds a database connection while it makes a file (the pool has 20)
MAX_FEED_WORKERS = 16


def _smtp_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The email feeds' relay (``POSTBACK_SMTP_*``), checked: a typo fails at start, not at
    the first feed run."""
    host = (env.get("POSTBACK_SMTP_HOST") or "").strip() or None
    tls = (env.get("POSTBACK_SMTP_TLS") or "starttls").strip().lower()
    if tls not in SMTP_TLS_MODES:
        raise ValueError(f"POSTBACK_SMTP_TLS must be starttls, tls or none, got {tls!r}")
    raw_port = (env.get("POSTBACK_SMTP_PORT") or "").strip()
    port: int | None = None
    if raw_port:
        if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
            raise ValueError(f"POSTBACK_SMTP_PORT must be a port number (1 to 65535), "
                             f"got {raw_port!r}")
        port = int(raw_port)
    username = env.get("POSTBACK_SMTP_USERNAME") or None
    password = env.get("POSTBACK_SMTP_PASSWORD") or None
    password_file = env.get("POSTBACK_SMTP_PASSWORD_FILE")
    if password is None and password_file:
        try:
            password = Path(password_file).read_text().strip() or None
        except OSError as exc:
            raise ValueError(f"POSTBACK_SMTP_PASSWORD_FILE {password_file!r}: "
                             f"{exc.strerror}") from None
    if (username is None) != (password is None):
        raise ValueError("POSTBACK_SMTP_USERNAME and POSTBACK_SMTP_PASSWORD go together: "
                         "set both, or neither for a relay that needs no login")
    sender = (env.get("POSTBACK_SMTP_FROM") or "").strip() or None
    if sender is not None and (
            "@" not in sender or any(c in sender for c in "\r\n\0") or not sender.isascii()):
        raise ValueError(f"POSTBACK_SMTP_FROM must be an email address, got {sender!r}")
    if host is not None and sender is None:
        raise ValueError("POSTBACK_SMTP_FROM (the feeds' sender address) is needed when "
                         "POSTBACK_SMTP_HOST is set")
    if host is not None and (any(c.isspace() or c in "/@" for c in host) or not host.isascii()):
        raise ValueError(f"POSTBACK_SMTP_HOST must be a host name or an IP address, got "
                         f"{host!r}")
    return {"smtp_host": host, "smtp_port": port, "smtp_tls": tls, "smtp_username": username,
            "smtp_password": password, "smtp_from": sender}


def _feed_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """``POSTBACK_FEED_RETENTION_DAYS`` (1 to 3650, default 30), ``POSTBACK_FEED_WORKERS``
    (1 to 16, default 4), ``POSTBACK_PUBLIC_URL`` (``http(s)://host[:port][/path]``,
    default http://127.0.0.1:8000) and ``POSTBACK_ATTEMPT_BODY_RETENTION_DAYS`` (0 to
    36500, default 90), checked at start."""
    raw = (env.get("POSTBACK_FEED_RETENTION_DAYS") or "").strip()
    days = Settings.feed_retention_days
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 3650:
            raise ValueError(f"POSTBACK_FEED_RETENTION_DAYS must be a whole number of days "
                             f"from 1 to 3650, got {raw!r}")
        days = int(raw)
    raw = (env.get("POSTBACK_FEED_WORKERS") or "").strip()
    workers = Settings.feed_workers
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_FEED_WORKERS:
            raise ValueError(f"POSTBACK_FEED_WORKERS must be a whole number of feed runs "
                             f"worked at once, from 1 to {MAX_FEED_WORKERS}, got {raw!r}")
        workers = int(raw)
    url = (env.get("POSTBACK_PUBLIC_URL") or "").strip().rstrip("/") or Settings.public_url
    scheme, _, rest = url.partition("://")
    if (scheme.lower() not in ("http", "https") or not rest or rest.startswith("/")
            or any(c.isspace() or c in "?#@" for c in url) or not url.isascii()):
        raise ValueError(f"POSTBACK_PUBLIC_URL must be the http(s) address partners reach "
                         f"this service at, e.g. https://postbacks.example.com, got {url!r}")
    raw = (env.get("POSTBACK_ATTEMPT_BODY_RETENTION_DAYS") or "").strip()
    bodies = Settings.attempt_body_retention_days
    if raw:
        if not raw.isdigit() or not 0 <= int(raw) <= 36500:
            raise ValueError(f"POSTBACK_ATTEMPT_BODY_RETENTION_DAYS must be a whole number of "
                             f"days (0 keeps response bodies for ever, at most 36500), "
                             f"got {raw!r}")
        bodies = int(raw)
    return {"feed_retention_days": days, "feed_workers": workers, "public_url": url,
            "attempt_body_retention_days": bodies}
