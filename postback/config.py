"""Operator settings, read from ``POSTBACK_*`` environment variables."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

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
        return cls(
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
