"""Liveness, readiness and the address ranges postbacks come from."""

from __future__ import annotations

from typing import Literal

from postback.api.schemas.base import Out


class HealthOut(Out):
    status: Literal["ok"]
    version: str


class ComponentOut(Out):
    ok: bool
    detail: str


class ComponentsOut(Out):
    database: ComponentOut
    migrations: ComponentOut
    engine: ComponentOut
    scheduler: ComponentOut


class ReadinessOut(Out):
    status: Literal["ready", "not_ready"]
    components: ComponentsOut


class IpRangesOut(Out):
    postbacks: list[str]
