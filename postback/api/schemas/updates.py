"""The updates feeds (``services/updates.py``): every change of a caller's actions,
inquiries or a program's catalog, in commit order, each with the token values its postbacks
carry. ``next_cursor`` is never null: pass it as ``after`` for the next page, forever."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from postback.api.schemas.actions import ActionItemOut
from postback.api.schemas.base import ErrorOut, Out
from postback.core.lifecycle import Trigger

#: a token's value as postbacks render it: text (money as a decimal string, dates in ISO
#: 8601 UTC, an unset field as ""), or the line items of ``Items``
TokenValue = str | list[ActionItemOut] | None

_CURSOR = Field(description="this change's position: pass it as `after` to read on from "
                "just after it")
_VALUES = Field(description="every token of the notification type, `{Token: value}`, as "
                "the postbacks of this change compute them (`ChangeId` included; "
                "`EventId`, which each postback has its own of, left out)")
_NEXT = Field(description="pass it as `after` for the next page: the last change's "
                "cursor, or the `after` sent when nothing new is there yet (never null)")


class ActionChangeOut(Out):
    cursor: str = _CURSOR
    change_id: str = Field(description="the change's id, also `{ChangeId}` in its postbacks")
    sequence: int = Field(description="the action's update number (`{Sequence}`)")
    trigger: Literal[Trigger.TRACKED, Trigger.MODIFIED, Trigger.REVERSED, Trigger.LOCKED,
                     Trigger.CLEARED]
    action_id: int
    values: dict[str, TokenValue] = _VALUES


class InquiryChangeOut(Out):
    cursor: str = _CURSOR
    change_id: str = Field(description="the change's id, also `{ChangeId}` in its postbacks")
    sequence: int = Field(description="the inquiry's update number (`{Sequence}`)")
    trigger: str = Field(description="the inquiry postback's `{Trigger}`")
    inquiry_id: int
    values: dict[str, TokenValue] = _VALUES


class CatalogChangeOut(Out):
    cursor: str = _CURSOR
    change_id: str = Field(description="the change's id, also `{ChangeId}` in its postbacks")
    trigger: Literal["ADDED", "UPDATED", "REMOVED"]
    item_id: str
    values: dict[str, TokenValue] = _VALUES


class ActionUpdatesPage(Out):
    """Changes of actions, oldest first, in commit order."""

    items: list[ActionChangeOut]
    next_cursor: str = _NEXT


class InquiryUpdatesPage(Out):
    """Changes of inquiries, oldest first, in commit order."""

    items: list[InquiryChangeOut]
    next_cursor: str = _NEXT


class CatalogChangesPage(Out):
    """Changes of a program's catalog items, oldest first, in commit order."""

    items: list[CatalogChangeOut]
    next_cursor: str = _NEXT


#: what a 503 of a long poll says (``responses=``)
BUSY: dict[int | str, dict[str, Any]] = {503: {
    "model": ErrorOut, "description": "Too many requests are waiting (`wait`) on this server; "
    "ask again after `Retry-After` seconds, or without `wait`.",
    "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}}}
