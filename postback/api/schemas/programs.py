"""Programs, their event types and partner contracts (``services/programs.py``)."""

from __future__ import annotations

from postback.api.schemas.base import Listed, Out, Timestamp
from postback.core.lifecycle import ClearingRule, LockingRule


class ProgramEventTypeOut(Out):
    id: int
    name: str
    action_type: str


class EventTypeOut(Out):
    id: int
    program_id: int
    name: str
    action_type: str


class LockingOut(Out):
    rule: LockingRule
    days: int


class ClearingOut(Out):
    rule: ClearingRule
    days: int


class ContractOut(Out):
    program_id: int
    partner_id: int
    event_type_ids: list[int]
    locking: LockingOut
    clearing: ClearingOut
    updated_at: Timestamp


class ProgramOut(Out):
    id: int
    name: str
    currency: str
    created_at: Timestamp
    event_types: list[ProgramEventTypeOut]
    contracts: list[ContractOut]


class ProgramList(Listed[ProgramOut]):
    pass
