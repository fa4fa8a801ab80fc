"""Deliveries and their attempts (``services/deliveries.py``: ``delivery_out``,
``attempt_out``)."""

from __future__ import annotations

from typing import Literal

from postback.api.schemas.base import Method, NotificationType, Out, Paged, Timestamp
from postback.api.schemas.settings import Trigger
from postback.core.retry import ErrorClass, Outcome


class DeliveryRequestOut(Out):
    method: Method
    url: str
    headers: dict[str, str]
    body: str | None


class DeliveryOut(Out):
    id: int
    event_id: str
    type: NotificationType
    trigger: Trigger
    status: Literal["pending", "held", "succeeded", "failed"]
    held_by: Literal["auto", "partner"] | None
    held_reason: str | None
    setting_id: int | None
    action_id: int | None
    request: DeliveryRequestOut
    attempt_count: int
    next_attempt_at: Timestamp | None
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    completed_at: Timestamp | None


class AttemptRequestOut(Out):
    method: Method
    url: str
    headers: dict[str, str]


class AttemptResponseOut(Out):
    status: int
    headers: dict[str, str] | None
    body: str | None
    body_base64: str | None


class AttemptOut(Out):
    number: int
    started_at: Timestamp
    request: AttemptRequestOut
    response: AttemptResponseOut | None
    latency_ms: float
    error_class: ErrorClass | None
    error: str | None
    outcome: Outcome


class DeliveryDetailOut(DeliveryOut):
    attempts: list[AttemptOut]


class RequeuedOut(Out):
    requeued: int


class DeliveryPage(Paged[DeliveryOut]):
    pass
