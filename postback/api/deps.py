"""Request dependencies: the caller's identity and a database transaction."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from sqlalchemy import Connection, Engine

from postback.db.engine import reader
from postback.models import MAX_ID
from postback.services.accounts import Principal, Role, authenticate


def _db(request: Request) -> Engine:
    engine: Engine = request.app.state.db
    return engine


def principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "send Authorization: Bearer <api key>",
                            headers={"WWW-Authenticate": "Bearer"})
    with reader(_db(request)).connect() as conn:
        found = authenticate(conn, token.strip(), request.app.state.settings.admin_token)
    if found is None:
        raise HTTPException(401, "unknown or revoked API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return found


def role(*allowed: Role) -> Callable[[Principal], Principal]:
    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
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
