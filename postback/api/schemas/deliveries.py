"""Deliveries and their attempts (``services/deliveries.py``: ``delivery_out``,
``attempt_out``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    change_id: str | None = Field(description="the ledger change it tells of: {ChangeId}, "
                                  "the same in the updates feed")
    replay_id: int | None = Field(description="the replay that sent this notification again "
                                  "(same event_id as the original); null for an original")
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


class ReplayOut(Out):
    """A replay and how its deliveries are doing (``services/replay.py``: ``replay_out``).
    ``total`` is how many original deliveries the window held when it started; each is
    ``replayed`` (a new delivery, counted by status in ``pending``, ``held``,
    ``succeeded`` and ``failed``) or ``skipped`` (its setting was deleted); ``queued`` is
    true once every new delivery is written."""

    id: int
    since: Timestamp
    until: Timestamp | None
    type: NotificationType | None
    url: str | None
    total: int
    replayed: int
    skipped: int
    queued: bool
    pending: int
    held: int
    succeeded: int
    failed: int
    created_at: Timestamp
    queued_at: Timestamp | None


class ReplayStartedOut(ReplayOut):
    """``warnings``: what needs attention but did not stop it, such as a one-off URL's
    host name that does not resolve now."""

    warnings: list[str]


class ReplayPage(Paged[ReplayOut]):
    pass
