"""Operator: brands, partners and their keys (issue, revoke); system health; the
published egress ranges. A new key is shown once, on the page Issue key redirects to (kept
sealed in the session until then): a reload shows it no more."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from postback.db.engine import reader
from postback.models import ApiKeyIn, BrandIn, PartnerIn, PartnerType
from postback.services import accounts
from postback.services.errors import NotFound
from postback.services.health import health
from postback.web.pages import EMPTY, Filled, Form, Id, Page, page

router = APIRouter(prefix="/operator", include_in_schema=False)


def _accounts(p: Page, status: int = 200, filled: Filled = EMPTY,
              error: str | None = None) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        brands = accounts.list_brands(conn)
        partners = accounts.list_partners(conn)
        keys = accounts.list_keys(conn)
    by_account: dict[tuple[str, object], list[dict[str, object]]] = {}
    for key in keys:
        by_account.setdefault((str(key["account_type"]), key["account_id"]), []).append(key)
    return p.render("operator/accounts.html", status=status, brands=brands,
                    partners=partners, keys=by_account,
                    partner_types=[t.value for t in PartnerType], filled=filled,
                    error=error, issued=p.flash.get("issued"))


@router.get("")
def overview(request: Request) -> Response:
    return _accounts(page(request, "operator"))


def _add(request: Request, sent: Form, kind: str, model: type[BrandIn] | type[PartnerIn],
         fields: tuple[str, ...]) -> Response:
    """Add a brand or a partner from its form; a refusal shows beside that form."""
    p = page(request, "operator")
    form = p.form(sent)
    try:
        body = model.model_validate({f: form.get(f, "").strip() for f in fields})
    except ValidationError as exc:
        return _accounts(p, 422, Filled(kind, form, p.refusal(exc), fields))
    with request.app.state.db.begin() as conn:
        if isinstance(body, PartnerIn):
            accounts.create_partner(conn, body)
            notice = p.gettext("Partner %(name)s added.", name=body.name)
        else:
            accounts.create_brand(conn, body)
            notice = p.gettext("Brand %(name)s added.", name=body.name)
    return p.done(f"/operator#{kind}s", notice)


@router.post("/brands")
def add_brand(request: Request, sent: Form) -> Response:
    return _add(request, sent, "brand", BrandIn, ("name",))


@router.post("/partners")
def add_partner(request: Request, sent: Form) -> Response:
    return _add(request, sent, "partner", PartnerIn, ("name", "partner_type"))


@router.post("/keys")
def issue_key(request: Request, sent: Form) -> Response:
    """Issue a key and show it on the page this redirects to, that once: it is never shown
    again (only its hash is stored; until that page, it waits sealed in the session)."""
    p = page(request, "operator")
    form = p.form(sent)
    try:
        body = ApiKeyIn.model_validate({"account_type": form.get("account_type"),
                                        "account_id": form.get("account_id")})
        with request.app.state.db.begin() as conn:
            issued = accounts.issue_key(conn, body)
    except (ValidationError, NotFound) as exc:
        return _accounts(p, 422, error=p.refusal_text(exc))
    return p.done("/operator#issued", sealed={"issued": {
        "key": issued["key"], "account_type": body.account_type,
        "account_id": body.account_id}})


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "operator")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            accounts.revoke_key(conn, key_id)
        request.app.state.keys.forget_all()  # the API refuses it from the next request on
    except NotFound:
        return _accounts(p, 404, error=p.gettext("There is no such key."))
    return p.done("/operator#keys", p.gettext("The key was revoked; the sessions it opened "
                                              "have ended."))


@router.get("/health")
def system_health(request: Request) -> Response:
    p = page(request, "operator")
    with reader(request.app.state.db).begin() as conn:
        figures = health(conn, datetime.now(UTC))
    return p.render("operator/health.html", h=figures,
                    egress=list(request.app.state.settings.egress_ranges))
