"""The updates feeds: ``/v1/action-updates``, ``/v1/inquiry-updates`` and
``/v1/programs/{id}/catalog/changes`` (partner and brand, each its own changes).

With ``wait`` a request that finds nothing new waits for a change (a long poll). The
handlers are ``async`` and read the database on the thread pool a moment at a time, so a
waiting client holds no thread: between reads it sleeps on the event loop, and reads again
when the change log's signature (``services/updates.signature``, shared by every waiter in
the process and refreshed at most every ``FRESH`` seconds) says something was committed,
by this process or any other (the scheduler's, another API's). At most ``MAX_WAITING``
requests wait at once per process; past it a long poll is a 503 with ``Retry-After``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from postback.api.deps import BrandOrPartner, IdPath, read
from postback.api.schemas.base import refusals
from postback.api.schemas.updates import (
    BUSY,
    ActionUpdatesPage,
    CatalogChangesPage,
    InquiryUpdatesPage,
)
from postback.db.engine import reader
from postback.services import updates
from postback.services.updates import Kind, Role

router = APIRouter(tags=["updates"])

#: how many requests may wait (``wait`` > 0, nothing new yet) at once in one process
MAX_WAITING = 200
#: how often a waiting request looks whether its disconnected client, or its deadline, or a
#: new signature calls it (seconds)
TICK = 0.05
#: how old the shared signature may be before a waiter reads it again (seconds)
FRESH = 0.15

After = Annotated[str | None, Query(
    description="the cursor to read on from: a page's `next_cursor` (or a change's "
    "`cursor`); leave it out to start from the first change")]
Limit = Annotated[int, Query(ge=1, le=1000, description="changes per page (1 to 1000)")]
Wait = Annotated[int, Query(ge=0, le=30, description="seconds to wait for a change when "
                            "there is none yet (0 to 30); the answer comes as soon as one "
                            "is committed, or empty when the time is up")]


class LongPolls:
    """The waiting requests of one API process: how many (bounded), and the change log's
    signature they share (one read every ``fresh`` seconds for all of them). Thread-safe and
    tied to no event loop."""

    def __init__(self, limit: int = MAX_WAITING, fresh: float = FRESH) -> None:
        self.limit = limit
        self.fresh = fresh
        self.waiting = 0
        self._lock = threading.Lock()
        self._signature: tuple[int, ...] | None = None
        self._read_at = float("-inf")
        self._reading = False

    def enter(self) -> bool:
        with self._lock:
            if self.waiting >= self.limit:
                return False
            self.waiting += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.waiting -= 1

    async def signature(self, db: Engine) -> tuple[int, ...] | None:
        """The change log's signature, read again when it is older than ``fresh`` seconds
        (by one waiter; the others take the last one)."""
        with self._lock:
            due = not self._reading and time.monotonic() - self._read_at >= self.fresh
            if due:
                self._reading = True
        if due:
            try:
                found = await run_in_threadpool(_signature, db)
                with self._lock:
                    self._signature, self._read_at = found, time.monotonic()
            finally:
                with self._lock:
                    self._reading = False
        return self._signature


def _signature(db: Engine) -> tuple[int, ...]:
    with reader(db).begin() as conn:
        return updates.signature(conn)


def long_polls(request: Request) -> LongPolls:
    """This app's :class:`LongPolls` (made on first use)."""
    state = request.app.state
    polls: LongPolls | None = getattr(state, "long_polls", None)
    if polls is None:
        with _MAKING:
            polls = getattr(state, "long_polls", None)
            if polls is None:
                polls = state.long_polls = LongPolls()
    return polls


_MAKING = threading.Lock()


async def _page(request: Request, wait: int, read_page: Callable[[], dict[str, Any]]
                ) -> dict[str, Any]:
    """``read_page`` now, and again whenever a change may have come, until it has items,
    ``wait`` seconds pass or the client goes away."""
    polls = long_polls(request)
    db: Engine = request.app.state.db
    if wait == 0:
        return await run_in_threadpool(read_page)
    seen = await polls.signature(db)  # before the read: a change after it changes this
    page = await run_in_threadpool(read_page)
    if page["items"]:
        return page
    if not polls.enter():
        raise Busy(polls.limit)
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            await asyncio.sleep(min(TICK, max(0.0, deadline - time.monotonic())))
            if await request.is_disconnected():
                return page
            now = await polls.signature(db)
            if now != seen:
                seen = now
                page = await run_in_threadpool(read_page)
                if page["items"]:
                    return page
        return page
    finally:
        polls.leave()


class Busy(Exception):
    """Too many requests wait already: a 503 with ``Retry-After``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"wait: {limit} requests are already waiting for changes on this "
                         "server; ask again after Retry-After seconds, or without wait")


def busy_answer(exc: Busy) -> JSONResponse:
    return JSONResponse(status_code=503, headers={"Retry-After": "1"}, content={
        "error": "too_many_waiting", "message": str(exc), "field": "wait"})


def _id(who: BrandOrPartner) -> int:
    assert who.account_id is not None
    return who.account_id


def _reader(request: Request, kind: Kind, who: BrandOrPartner, after: str | None,
            limit: int, program_id: int | None = None) -> Callable[[], dict[str, Any]]:
    cursor = updates.parse_cursor(after)
    role: Role = "brand" if who.role == "brand" else "partner"

    def read_page() -> dict[str, Any]:
        with read(request) as conn:
            return updates.read_updates(conn, kind, role, _id(who), cursor, limit,
                                        program_id=program_id)

    return read_page


async def _answer(request: Request, wait: int, read_page: Callable[[], dict[str, Any]]
                  ) -> Any:
    try:
        return await _page(request, wait, read_page)
    except Busy as exc:
        return busy_answer(exc)


_REFUSALS = {**refusals(401, 403, 422), **BUSY}


@router.get("/v1/action-updates", response_model=ActionUpdatesPage, responses=_REFUSALS)
async def action_updates(request: Request, who: BrandOrPartner, after: After = None,
                         limit: Limit = 100, wait: Wait = 0) -> Any:
    """Every change of your actions (a partner's own; a brand's programs'): TRACKED,
    MODIFIED, REVERSED, LOCKED, CLEARED, in commit order, each with the action's token
    values as its postbacks carry them. Pass `next_cursor` as `after` to read on; no
    change is ever skipped or repeated, whatever commits at the same time."""
    return await _answer(request, wait, _reader(request, "action", who, after, limit))


@router.get("/v1/inquiry-updates", response_model=InquiryUpdatesPage, responses=_REFUSALS)
async def inquiry_updates(request: Request, who: BrandOrPartner, after: After = None,
                          limit: Limit = 100, wait: Wait = 0) -> Any:
    """Every change of your inquiries, as `/v1/action-updates` does for actions."""
    return await _answer(request, wait, _reader(request, "inquiry", who, after, limit))


@router.get("/v1/programs/{program_id}/catalog/changes", response_model=CatalogChangesPage,
            responses={**refusals(401, 403, 404, 422), **BUSY})
async def catalog_changes(program_id: IdPath, request: Request, who: BrandOrPartner,
                          after: After = None, limit: Limit = 100,
                          wait: Wait = 0) -> Any:
    """Every change of a program's catalog (ADDED, UPDATED, REMOVED), for the brand that
    owns it and the partners contracted on it. Start from the `changes_cursor` of the
    catalog read (`GET .../catalog/items`) to keep a full copy current."""
    return await _answer(request, wait, _reader(request, "catalog", who, after, limit,
                                                program_id))
