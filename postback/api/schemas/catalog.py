"""A program's catalog items (``services/catalog.py``: ``item_out``). An item carries the
fields it was saved with: one it was saved without is left out, never null."""

from __future__ import annotations

from typing import Literal

from pydantic import MISSING, Field

from postback.api.schemas.base import Money, Out, Paged, Timestamp


class CatalogItemFieldsOut(Out):
    """An item as saved (a save's answer has no ``updated_at``)."""

    item_id: str
    name: str
    description: str | MISSING = MISSING
    manufacturer: str | MISSING = MISSING
    url: str | MISSING = MISSING
    mobile_url: str | MISSING = MISSING
    image_url: str | MISSING = MISSING
    current_price: Money | MISSING = MISSING
    original_price: Money | MISSING = MISSING
    currency: str | MISSING = MISSING
    stock_availability: str | MISSING = MISSING
    gtin: str | MISSING = MISSING
    asin: str | MISSING = MISSING
    mpn: str | MISSING = MISSING
    category: str | MISSING = MISSING
    sub_category: str | MISSING = MISSING
    parent_sku: str | MISSING = MISSING
    colors: str | MISSING = MISSING
    size: str | MISSING = MISSING
    condition: str | MISSING = MISSING
    gender: str | MISSING = MISSING
    age_group: str | MISSING = MISSING


class CatalogItemOut(CatalogItemFieldsOut):
    updated_at: Timestamp


class CatalogPutOut(Out):
    item: CatalogItemFieldsOut
    change: Literal["ADDED", "UPDATED", "UNCHANGED"]


class CatalogBulkOut(Out):
    added: int
    updated: int
    removed: int
    unchanged: int


class CatalogItemPage(Paged[CatalogItemOut]):
    """Items by ``item_id`` (with ``updated_since``: by when they changed, oldest first):
    pass ``next_cursor`` as ``after`` for the next page (null on the last page)."""

    changes_cursor: str = Field(description="where the catalog's changes feed "
                                "(`.../catalog/changes?after=`) reads on from: every change "
                                "committed after this read comes after it (keep the first "
                                "page's)")
