"""A program's product catalog: its brand writes it; the brand and the partners
contracted on the program read it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from postback.api.deps import Brand, BrandOrPartner, IdPath, read, wake, write
from postback.api.schemas.base import BODY, refusals
from postback.api.schemas.catalog import (
    CatalogBulkOut,
    CatalogItemOut,
    CatalogItemPage,
    CatalogPutOut,
)
from postback.models import AwareDatetime, CatalogBulkIn, CatalogItemIn
from postback.services import catalog
from postback.services.errors import Invalid

router = APIRouter(prefix="/v1/programs/{program_id}/catalog/items", tags=["catalog"])


def _id(who: Brand | BrandOrPartner) -> int:
    assert who.account_id is not None
    return who.account_id


@router.post("/bulk", response_model=CatalogBulkOut,
             responses=refusals(401, 403, 404, 409, *BODY))
def bulk(program_id: IdPath, body: CatalogBulkIn, request: Request, who: Brand) -> dict[str, int]:
    """Upsert up to 10,000 items; only real changes notify partners."""
    with write(request) as conn:
        out = catalog.bulk_upsert(conn, _id(who), program_id, body, datetime.now(UTC))
    wake(request)
    return out


@router.put("/{item_id}", response_model=CatalogPutOut,
            responses=refusals(401, 403, 404, 409, *BODY))
def put(program_id: IdPath, item_id: str, body: CatalogItemIn, request: Request,
        who: Brand) -> dict[str, Any]:
    with write(request) as conn:
        out = catalog.put_item(conn, _id(who), program_id, item_id, body, datetime.now(UTC))
    wake(request)
    return out


@router.delete("/{item_id}", status_code=204, responses=refusals(401, 403, 404, 422))
def remove(program_id: IdPath, item_id: str, request: Request, who: Brand) -> Response:
    with write(request) as conn:
        catalog.delete_item(conn, _id(who), program_id, item_id, datetime.now(UTC))
    wake(request)
    return Response(status_code=204)


@router.get("", response_model=CatalogItemPage,
            responses=refusals(401, 403, 404, 422))
def list_items(
    program_id: IdPath, request: Request, who: BrandOrPartner,
    after: Annotated[str | None, Query(
        description="a page's `next_cursor`; leave it out for the first page")] = None,
    updated_since: Annotated[AwareDatetime | None, Query(
        description="only the items added or updated at or after this time (ISO 8601 "
        "with an offset), oldest change first")] = None,
    cursor: Annotated[str | None, Query(
        description="the former name of `after` (still read)", deprecated=True)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A program's items, for the brand that owns it and the partners contracted on it: a
    full copy, a page at a time. Keep `changes_cursor` of the first page and read
    `.../catalog/changes?after=` from it afterwards to keep the copy current."""
    if after is not None and cursor is not None and after != cursor:
        raise Invalid("after", "send the page's next_cursor as after only (cursor is its "
                      "former name)")
    with read(request) as conn:
        return catalog.read_items(conn, who.role, _id(who), program_id,
                                  after=after if after is not None else cursor,
                                  updated_since=updated_since, limit=limit)


@router.get("/{item_id}", response_model=CatalogItemOut,
            responses=refusals(401, 403, 404, 422))
def get(program_id: IdPath, item_id: str, request: Request,
        who: BrandOrPartner) -> dict[str, Any]:
    """One item, for the program's brand and the partners contracted on it."""
    with read(request) as conn:
        return catalog.get_item(conn, _id(who), program_id, item_id, role=who.role)
