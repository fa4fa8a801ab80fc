"""Request dependencies: the caller's identity and a database transaction."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Engine

from postback.db.engine import reader
from postback.models import MAX_ID
from postback.services.accounts import Principal, Role, authenticate
from postback.services.key_cache import KeyCache


def _db(request: Request) -> Engine:
    engine: Engine = request.app.state.db
    return engine


async def principal(request: Request) -> Principal:
    """Who sent the request. A key seen within the last second is answered from memory on
    the event loop (``services/key_cache.py``); otherwise the database is asked on a
    thread."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "send Authorization: Bearer <api key>",
                            headers={"WWW-Authenticate": "Bearer"})
    keys: KeyCache = request.app.state.keys
    found = keys.get(token)
    if found is not None:
        return found
    generation = keys.generation
    found = await run_in_threadpool(_authenticate, request, token)
    if found is None:
        raise HTTPException(401, "unknown or revoked API key",
                            headers={"WWW-Authenticate": "Bearer"})
    keys.remember(token, found, generation)
    return found


def _authenticate(request: Request, token: str) -> Principal | None:
    with reader(_db(request)).connect() as conn:
        return authenticate(conn, token, request.app.state.settings.admin_token)


def role(*allowed: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role not in allowed:
            raise HTTPException(403, f"this endpoint is for {' or '.join(allowed)} keys; "
                                f"you are signed in as {who.role}")
        return who

    return check


def write(request: Request) -> AbstractContextManager[Connection]:
    """One write transaction; committed when the block ends without an exception."""
    return _db(request).begin()


def read(request: Request) -> AbstractContextManager[Connection]:
    """One read-only transaction (no write lock on SQLite)."""
    return reader(_db(request)).begin()


def wake(request: Request) -> None:
    """Tell the delivery engines that new deliveries were committed (in every process:
    ``db.wakeup``)."""
    request.app.state.wake()


IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Operator = Annotated[Principal, Depends(role("operator"))]
Brand = Annotated[Principal, Depends(role("brand"))]
Partner = Annotated[Principal, Depends(role("partner"))]
BrandOrPartner = Annotated[Principal, Depends(role("brand", "partner"))]
