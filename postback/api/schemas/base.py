"""What every answer is made of: the base model, money and times, lists and pages, and the
refusal every 4xx answer is (``postback/api/errors.py`` writes them)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import MISSING, BaseModel, ConfigDict, Field


class Out(BaseModel):
    """An answer: exactly these fields (an unknown one is an error, not dropped)."""

    model_config = ConfigDict(extra="forbid")


#: cents as a decimal string with exactly two decimals, e.g. ``"100.50"``, ``"-7.50"``
Money = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["100.00"])]
#: ISO 8601 in UTC with its offset, e.g. ``2026-11-02T18:04:05+00:00``
Timestamp = Annotated[str, Field(
    pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?\+00:00$",
    json_schema_extra={"format": "date-time"}, examples=["2026-11-02T18:04:05+00:00"])]
NotificationType = Literal["action-lifecycle", "action-clearing", "action-inquiry",
                           "product-data-change"]
Method = Literal["GET", "POST"]

T = TypeVar("T")


class Listed(Out, Generic[T]):
    """Every item at once: ``next_cursor`` is always null. Each use is a named subclass
    (``class BrandList(Listed[BrandOut])``), which names its schema in ``/openapi.json``."""

    items: list[T]
    next_cursor: None


class Paged(Out, Generic[T]):
    """One page, newest first: pass ``next_cursor`` as ``cursor`` for the next one (null on
    the last page)."""

    items: list[T]
    next_cursor: str | None


# -- refusals ---------------------------------------------------------------------------

class FieldError(Out):
    """One field the request's schema refuses."""

    field: str
    message: str


class TemplateProblem(Out):
    """One problem of a URL or body template, where it is and what would fix it."""

    field: str
    message: str
    token: str | None
    position: int | None
    line: int | None
    column: int | None
    suggestions: list[str]


class ErrorOut(Out):
    """A refusal: ``error`` is a stable code (``invalid``, ``not_found``, ``unauthorized``,
    or the rule a change breaks, e.g. ``action_locked``), ``message`` says what is wrong and
    how to fix it in the caller's language, ``field`` names the field when there is one."""

    error: str
    message: str
    field: str | MISSING = MISSING
    rule: str | MISSING = Field(MISSING, description="the rule a change breaks (as `error`)")
    errors: list[FieldError] | MISSING = Field(
        MISSING, description="every field the request's schema refuses (up to 100)")
    problems: list[TemplateProblem] | MISSING = Field(
        MISSING, description="every problem of a URL or body template")
    allowed: list[str] | MISSING = Field(MISSING, description="the values the field accepts")


_WHY = {
    400: "The body could not be read: it must be UTF-8 JSON.",
    401: "No API key, or an unknown or revoked one.",
    403: "This key's role may not use this endpoint (or this partner's type may not use "
         "this notification type).",
    404: "Not found, or another account's (the same answer, so nothing leaks).",
    409: "The object's state forbids the change (e.g. a locked action, an inquiry that is "
         "no longer open); `error` names the rule.",
    413: "The body is over 32 MiB.",
    422: "A field is invalid or breaks a rule; `field` names it, `errors` lists every "
         "field the schema refuses.",
    429: "Too many tests at once on this server; test again after `Retry-After` seconds.",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
}
#: what any route with a JSON body may answer besides its own refusals
BODY = (400, 413, 422)


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented refusals of a route (``responses=``), each an :class:`ErrorOut`."""
    return {status: {"model": ErrorOut, "description": _WHY[status],
                     **({"headers": _HEADERS[status]} if status in _HEADERS else {})}
            for status in sorted(set(statuses))}
