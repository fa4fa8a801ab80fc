"""Brand screens: programs with their event types and partner contracts (locking and
clearing rules); actions to report, modify, reverse and approve; the product catalog (one
item, or a CSV/JSON file as one bulk upsert); inquiries to resolve with the exact reject
reasons; postbacks the brand creates for a partner.

A refused form comes back as it was sent, each problem beside its field; a form that
changes something redirects to its page (Post/Redirect/Get) with a notice shown once."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from postback.core.inquiries import REJECT_REASONS
from postback.core.lifecycle import REASON_CODES, ClearingRule, LockingRule, RuleViolation
from postback.core.messages import describe, refusal
from postback.db.engine import reader
from postback.models import (
    MAX_ID,
    ActionIn,
    ActionPatchIn,
    BrandPostbackIn,
    CatalogBulkIn,
    CatalogItemIn,
    ContractIn,
    EventTypeIn,
    ProgramIn,
    ResolveIn,
)
from postback.services import catalog, inquiries, ledger, programs
from postback.services import notification_settings as ns
from postback.services.errors import Invalid, NotFound
from postback.web.pages import EMPTY, Filled, Forbidden, Form, Id, Page, page

router = APIRouter(prefix="/brand", include_in_schema=False)
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
Refusal = (ValidationError, Invalid, RuleViolation, NotFound)


def _partners(p: Page) -> list[Any]:
    """The partners this brand contracts (never every partner on the platform)."""
    with reader(p.request.app.state.db).begin() as conn:
        return programs.contracted_partners(conn, p.account_id)


# -- programs, event types, contracts --------------------------------------------------------

PROGRAM_FIELDS = ("name", "currency")
EVENT_TYPE_FIELDS = ("name", "action_type")
CONTRACT_FIELDS = ("partner_id", "new_partner_id", "event_type_ids", "locking_rule",
                   "locking_days", "clearing_rule", "clearing_days")
#: a contract's model fields → the form's
CONTRACT_NAMES = {"locking.rule": "locking_rule", "locking.days": "locking_days",
                  "clearing.rule": "clearing_rule", "clearing.days": "clearing_days",
                  "locking": "locking_rule", "clearing": "clearing_rule"}


def _programs(p: Page, status: int = 200, filled: Filled = EMPTY) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        found = programs.list_programs(conn, p.account_id)
    partners = _partners(p)
    return p.render("brand/programs.html", status=status, programs=found, filled=filled,
                    partners=partners, partner_names={a.id: a.name for a in partners},
                    type_names_of={g["id"]: {t["id"]: t["name"] for t in g["event_types"]}
                                   for g in found},
                    locking_rules=[r.value for r in LockingRule],
                    clearing_rules=[r.value for r in ClearingRule])


@router.get("")
def overview(request: Request) -> Response:
    return _programs(page(request, "brand"))


@router.post("/programs")
def add_program(request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    form = p.form(sent)
    try:
        body = ProgramIn.model_validate({"name": form.get("name", "").strip(),
                                         "currency": form.get("currency", "").strip().upper()})
        with request.app.state.db.begin() as conn:
            made = programs.create_program(conn, p.account_id, body)
    except Refusal as exc:
        return _programs(p, 422, Filled("program", form, p.refusal(exc), PROGRAM_FIELDS))
    return p.done(f"/brand#program-{made['id']}",
                  p.gettext("Program %(name)s added.", name=body.name))


@router.post("/programs/{program_id}/event-types")
def add_event_type(program_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    form = p.form(sent)
    try:
        body = EventTypeIn.model_validate({"name": form.get("name", "").strip(),
                                           "action_type": form.get("action_type", "").strip()})
        with request.app.state.db.begin() as conn:
            programs.add_event_type(conn, p.account_id, program_id, body)
    except Refusal as exc:
        return _programs(p, 422, Filled(f"event-type-{program_id}", form, p.refusal(exc),
                                        EVENT_TYPE_FIELDS))
    return p.done(f"/brand#program-{program_id}",
                  p.gettext("Event type %(name)s added.", name=body.name))


@router.post("/programs/{program_id}/contracts")
def put_contract(program_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    p.form(sent)
    lists = sent.lists
    one = {k: v[-1] for k, v in lists.items()}
    values = {**one, "event_type_ids": lists.get("event_type_ids", [])}
    name = f"contract-{program_id}"
    new_text = one.get("new_partner_id", "").strip()
    partner_text = new_text or one.get("partner_id", "").strip()
    field = "new_partner_id" if new_text or "partner_id" not in one else "partner_id"
    if not partner_text.isdigit() or not 1 <= int(partner_text) <= MAX_ID:
        return _programs(p, 422, Filled(name, values, {field: p.gettext(
            "Partner: choose one, or enter a partner's ID (a number)")}, CONTRACT_FIELDS))
    try:
        body = ContractIn.model_validate({
            "event_type_ids": lists.get("event_type_ids", []),
            "locking": {"rule": one.get("locking_rule"), "days": one.get("locking_days") or 0},
            "clearing": {"rule": one.get("clearing_rule"),
                         "days": one.get("clearing_days") or 0}})
        with request.app.state.db.begin() as conn:
            programs.put_contract(conn, p.account_id, program_id, int(partner_text), body)
    except NotFound as exc:
        if str(exc) != "partner not found":
            raise  # not this brand's program: there is no form of it on the page
        return _programs(p, 422, Filled(name, values, {field: p.gettext(
            "Partner: no partner has the ID %(id)s; check it with the partner",
            id=partner_text)}, CONTRACT_FIELDS))
    except Refusal as exc:
        return _programs(p, 422, Filled(name, values, p.refusal(exc, names=CONTRACT_NAMES),
                                        CONTRACT_FIELDS))
    return p.done(f"/brand#program-{program_id}", p.gettext(
        "Contract saved for partner %(id)s.", id=partner_text))


# -- actions -------------------------------------------------------------------------------

REPORT_FIELDS = ("event_type", "partner_id", "oid", "amount", "payout", "sub_id1")
#: the report's model fields → the form's (program and event type are one choice)
REPORT_NAMES = {"program_id": "event_type", "event_type_id": "event_type"}
CHANGE_FIELDS = ("amount", "payout", "reason")


def _actions(p: Page, status: int = 200, filled: Filled = EMPTY,
             error: str | None = None) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        found = ledger.list_actions(conn, brand_id=p.account_id, limit=100)
        progs = programs.list_programs(conn, p.account_id)
    return p.render("brand/actions.html", status=status, items=found["items"], error=error,
                    filled=filled, programs=progs, partners=_partners(p),
                    reasons=sorted(REASON_CODES))


@router.get("/actions")
def actions(request: Request) -> Response:
    return _actions(page(request, "brand"))


@router.post("/actions")
def report(request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    form = p.form(sent)
    program_id, _, event_type_id = form.get("event_type", "").partition(":")
    try:
        body = ActionIn.model_validate({
            "program_id": program_id or None, "event_type_id": event_type_id or None,
            "partner_id": form.get("partner_id") or None, "oid": form.get("oid", "").strip(),
            "amount": form.get("amount", "").strip(), "payout": form.get("payout", "").strip(),
            "event_date": datetime.now(UTC),
            "sub_id1": form.get("sub_id1", "").strip() or None})
        with request.app.state.db.begin() as conn:
            rows = ledger.report_actions(conn, p.account_id, [body], datetime.now(UTC))
    except Refusal as exc:
        return _actions(p, 422, Filled("report", form, p.refusal(exc, names=REPORT_NAMES),
                                       REPORT_FIELDS))
    request.app.state.wake()
    return p.done("/brand/actions", p.gettext("Action %(id)s reported.", id=rows[0]["id"]))


@router.post("/actions/{action_id}/{change}")
def change(action_id: Id, change: str, request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    form = p.form(sent)
    now = datetime.now(UTC)
    if change not in ("modify", "reverse", "approve"):
        raise Forbidden(p.gettext("There is no such change."), 404)
    try:
        with request.app.state.db.begin() as conn:
            if change == "modify":
                patch = ActionPatchIn.model_validate({
                    "amount": form.get("amount", "").strip() or None,
                    "payout": form.get("payout", "").strip() or None,
                    "reason": form.get("reason", "")})
                ledger.modify_action(conn, p.account_id, action_id, patch, now)
            elif change == "reverse":
                ledger.reverse_action(conn, p.account_id, action_id,
                                      form.get("reason") or "REJECTED", now)
            else:
                ledger.approve_action(conn, p.account_id, action_id, now)
    except NotFound as exc:  # not this brand's: there is no form of it on the page
        return _actions(p, 422, error=p.refusal_text(exc))
    except Refusal as exc:
        return _actions(p, 422, Filled(f"{change}-{action_id}", form, p.refusal(exc),
                                       CHANGE_FIELDS if change == "modify" else ("reason",)))
    request.app.state.wake()
    notice = {"modify": p.gettext("Action %(id)s modified.", id=action_id),
              "reverse": p.gettext("Action %(id)s reversed.", id=action_id),
              "approve": p.gettext("Action %(id)s approved.", id=action_id)}[change]
    return p.done("/brand/actions", notice)


# -- catalog -------------------------------------------------------------------------------

ITEM_FIELDS = ("item_id", "name", "current_price", "currency", "stock_availability", "url")
#: the catalog's fields are named as in a file's header row, so its forms use those names
CATALOG_LABELS: dict[str, str] = {}
_ROW = re.compile(r"items\[(\d+)\](?:\.(\w+))?")


def _catalog(p: Page, program_id: int | None, status: int = 200, filled: Filled = EMPTY,
             error: str | None = None) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        progs = programs.list_programs(conn, p.account_id)
        chosen = program_id or (progs[0]["id"] if progs else None)
        items = (catalog.list_items(conn, p.account_id, chosen, None, 100)["items"]
                 if chosen and any(x["id"] == chosen for x in progs) else [])
    return p.render("brand/catalog.html", status=status, programs=progs, program_id=chosen,
                    items=items, fields=list(CatalogItemIn.model_fields), filled=filled,
                    error=error)


@router.get("/catalog")
def catalog_page(request: Request, program_id: str = "") -> Response:
    return _catalog(page(request, "brand"), int(program_id) if program_id.isdigit() else None)


def _item(raw: dict[str, Any]) -> dict[str, Any]:
    """Blank cells are absent fields."""
    return {k.strip(): v for k, v in raw.items() if k and v not in ("", None)}


@router.post("/catalog/{program_id}/items")
def put_item(program_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    form = p.form(sent)
    fields = dict(form)
    item_id = fields.pop("item_id", "").strip()
    try:
        if not item_id:
            raise Invalid("item_id", p.gettext("enter the item's id, e.g. SKU-1"))
        body = CatalogItemIn.model_validate(_item(fields))
        with request.app.state.db.begin() as conn:
            catalog.put_item(conn, p.account_id, program_id, item_id, body, datetime.now(UTC))
    except Refusal as exc:
        return _catalog(p, program_id, 422, Filled(
            "item", form, p.refusal(exc, labels=CATALOG_LABELS), ITEM_FIELDS))
    request.app.state.wake()
    return p.done(f"/brand/catalog?program_id={program_id}",
                  p.gettext("Item %(id)s saved.", id=item_id))


def parse_items(name: str, data: bytes) -> list[dict[str, Any]]:
    """The rows of an uploaded CSV (a header row of field names) or JSON (a list of
    objects, or ``{"items": [...]}``) file."""
    text = data.decode("utf-8-sig")
    if name.lower().endswith(".json") or text.lstrip().startswith(("[", "{")):
        loaded = json.loads(text)
        rows = loaded.get("items") if isinstance(loaded, dict) else loaded
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise Invalid("file", 'a JSON upload is a list of items or {"items": [...]}')
        return [_item(r) for r in rows]
    return [_item(r) for r in csv.DictReader(io.StringIO(text))]


def _row_problem(p: Page, exc: Exception) -> str:
    """What is wrong with an uploaded file, naming the row (counted from 1) and the
    column."""
    if isinstance(exc, ValidationError):
        path, problem = describe(exc.errors()[0])
    elif isinstance(exc, Invalid):
        path, problem = exc.field, refusal(exc.message, exc.field, plain=True)[1]
    else:
        return p.refusal_text(exc, labels=CATALOG_LABELS)
    row = _ROW.fullmatch(path)
    if row is None:
        return p.gettext("The file: %(problem)s", problem=p.say(problem))
    if row.group(2):
        return p.gettext("row %(row)s, %(field)s: %(problem)s", row=int(row.group(1)) + 1,
                         field=row.group(2), problem=p.say(problem))
    return p.gettext("row %(row)s: %(problem)s", row=int(row.group(1)) + 1,
                     problem=p.say(problem))


@router.post("/catalog/upload")
def upload_chosen(request: Request, sent: Form) -> Response:
    """An upload into the program chosen in the form itself (the one named beside the
    button), not the one the page was showing."""
    chosen = sent.fields.get("program_id", "").strip()
    if not chosen.isdigit() or not 1 <= int(chosen) <= MAX_ID:
        p = page(request, "brand")
        p.form(sent)
        return _catalog(p, None, 422, Filled("upload", sent.fields, {
            "program_id": p.gettext("Choose a program.")}, ("program_id", "file")))
    return upload(int(chosen), request, sent)


@router.post("/catalog/{program_id}/upload")
def upload(program_id: Id, request: Request, sent: Form) -> Response:
    """A CSV or JSON file of up to 10,000 items, upserted all or nothing; with "remove
    missing" the catalog becomes exactly the file. A bad row is named by its number."""
    p = page(request, "brand")
    form = p.form(sent)
    upload = sent.files.get("file")

    def refused(message: str) -> Response:
        # the file itself cannot be put back in the form (no browser allows it)
        return _catalog(p, program_id, 422, Filled(
            "upload", {**form, "program_id": str(program_id)}, {"file": message},
            ("program_id", "file", "remove_missing")))

    if upload is None or not upload.filename:
        return refused(p.gettext("Choose a CSV or JSON file."))
    data = upload.file.read(MAX_UPLOAD_BYTES + 1)  # on this request's thread
    try:
        if len(data) > MAX_UPLOAD_BYTES:
            return refused(p.gettext("The file is over 20 MB; split it."))
        rows = parse_items(upload.filename, data)
        body = CatalogBulkIn.model_validate({"items": rows,
                                             "remove_missing": "remove_missing" in form})
        with request.app.state.db.begin() as conn:
            out = catalog.bulk_upsert(conn, p.account_id, program_id, body, datetime.now(UTC))
    except Invalid as exc:
        if exc.field == "file":
            return refused(p.gettext('The file: a JSON upload is a list of items or '
                                     '{"items": [...]}'))
        return refused(_row_problem(p, exc))
    except ValidationError as exc:
        return refused(_row_problem(p, exc))
    except (RuleViolation, NotFound) as exc:
        return refused(p.refusal_text(exc))
    except (ValueError, csv.Error) as exc:  # undecodable, or not CSV or JSON at all
        return refused(p.gettext("The file is not UTF-8 CSV or JSON: %(e)s", e=exc))
    request.app.state.wake()
    return p.done(f"/brand/catalog?program_id={program_id}", p.gettext(
        "%(n)s rows read: %(a)s added, %(u)s updated, %(r)s removed, %(s)s unchanged.",
        n=len(rows), a=out.get("added", 0), u=out.get("updated", 0),
        r=out.get("removed", 0), s=out.get("unchanged", 0)))


# -- inquiries ------------------------------------------------------------------------------

def _accept_choice(prog: dict[str, Any], auto_event_type: int | None,
                   partner_id: int) -> dict[str, Any]:
    """The event types an accepted inquiry's action may get, and the one chosen at first:
    the program's auto-approval event type, else the first one of the partner's contract."""
    contracted: list[int] = next((c["event_type_ids"] for c in prog["contracts"]
                                  if c["partner_id"] == partner_id), [])
    ids = [t["id"] for t in prog["event_types"]]
    default = (auto_event_type if auto_event_type in ids
               else next((i for i in contracted if i in ids), ids[0] if ids else None))
    return {"event_types": prog["event_types"], "default": default}


def _inquiries(p: Page, status: int = 200, filled: Filled = EMPTY,
               error: str | None = None) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        found = inquiries.list_inquiries(conn, brand_id=p.account_id, limit=100)
        progs = {prog["id"]: prog for prog in programs.list_programs(conn, p.account_id)}
        auto = {pid: inquiries.policy(conn, pid).event_type_id for pid in progs}
    choices = {i["id"]: _accept_choice(progs[i["program_id"]], auto[i["program_id"]],
                                       i["partner_id"])
               for i in found["items"] if i["program_id"] in progs}
    return p.render("brand/inquiries.html", status=status, items=found["items"],
                    reasons=REJECT_REASONS, error=error, choices=choices, filled=filled)


@router.get("/inquiries")
def inquiry_list(request: Request) -> Response:
    return _inquiries(page(request, "brand"))


@router.post("/inquiries/{inquiry_id}/resolve")
def resolve(inquiry_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    form = p.form(sent)
    declined = form.get("resolution_status") == "DECLINED"
    try:
        body = ResolveIn.model_validate({
            "resolution_status": "DECLINED" if declined else "VALID",
            "reject_reason": form.get("reject_reason") if declined else None,
            "event_type_id": None if declined else (form.get("event_type_id") or None),
            "payout": None if declined else (form.get("payout", "").strip() or None)})
        with request.app.state.db.begin() as conn:
            inquiries.resolve_inquiry(conn, p.account_id, inquiry_id, body, datetime.now(UTC))
    except NotFound as exc:  # not this brand's: there is no form of it on the page
        return _inquiries(p, 422, error=p.refusal_text(exc))
    except Refusal as exc:
        kind = "decline" if declined else "accept"
        return _inquiries(p, 422, Filled(
            f"{kind}-{inquiry_id}", form, p.refusal(exc),
            ("reject_reason",) if declined else ("event_type_id", "payout")))
    request.app.state.wake()
    return p.done("/brand/inquiries", p.gettext("Inquiry %(id)s declined.", id=inquiry_id)
                  if declined else p.gettext("Inquiry %(id)s accepted: its action is created.",
                                             id=inquiry_id))


# -- postbacks for a partner --------------------------------------------------------------

POSTBACK_FIELDS = ("partner_id", "event_type_id", "url", "method", "body_format", "body")


def _postbacks(p: Page, status: int = 200, filled: Filled = EMPTY) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        made = {row.id: ns.list_scoped(conn, row.id, "brand", brand_id=p.account_id)
                for row in _partners(p)}
        progs = programs.list_programs(conn, p.account_id)
    return p.render("brand/postbacks.html", status=status, made=made, partners=_partners(p),
                    programs=progs, filled=filled)


@router.get("/postbacks")
def postbacks(request: Request) -> Response:
    return _postbacks(page(request, "brand"))


@router.post("/postbacks")
def add_postback(request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    form = p.form(sent)
    config = request.app.state.settings
    partner_text = form.get("partner_id", "").strip()
    if not partner_text.isdigit():
        return _postbacks(p, 422, Filled("postback", form, {"partner_id": p.gettext(
            "Partner: choose one")}, POSTBACK_FIELDS))
    try:
        body = BrandPostbackIn.model_validate({
            "url": form.get("url", "").strip(), "method": form.get("method") or "GET",
            "body_format": form.get("body_format") or "json",
            "body": form.get("body", "") if form.get("method") == "POST" else "",
            "event_type_id": form.get("event_type_id") or None})
        ns.vet_target(body.url, config)
        with request.app.state.db.begin() as conn:
            ns.add_brand_postback(conn, p.account_id, int(partner_text), body, config)
    except Refusal as exc:
        return _postbacks(p, 422, Filled("postback", form, p.refusal(exc), POSTBACK_FIELDS))
    return p.done("/brand/postbacks", p.gettext("Postback added for partner %(id)s.",
                                                id=partner_text))


@router.post("/postbacks/{partner_id}/{setting_id}/delete")
def delete_postback(partner_id: Id, setting_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "brand")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            ns.delete_scoped(conn, partner_id, "brand", setting_id, brand_id=p.account_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such postback."), 404) from None
    return p.done("/brand/postbacks", p.gettext("Postback %(id)s deleted.", id=setting_id))
