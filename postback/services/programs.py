"""Programs (campaigns), their event types (action trackers) and partner contracts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from postback.core.values import format_date
from postback.db.schema import contract, event_type, partner, program
from postback.models import ContractIn, EventTypeIn, ProgramIn
from postback.services.errors import Invalid, NotFound
from postback.services.integrity import unique_violation


def _program_row(conn: Connection, brand_id: int, program_id: int) -> Any:
    row = conn.execute(select(program).where(
        program.c.id == program_id, program.c.brand_id == brand_id)).first()
    if row is None:
        raise NotFound("program")
    return row


def create_program(conn: Connection, brand_id: int, body: ProgramIn) -> dict[str, Any]:
    now = datetime.now(UTC)
    result = conn.execute(insert(program).values(
        brand_id=brand_id, name=body.name, currency=body.currency, created_at=now))
    assert result.inserted_primary_key is not None
    return get_program(conn, brand_id, result.inserted_primary_key[0])


def get_program(conn: Connection, brand_id: int, program_id: int) -> dict[str, Any]:
    row = _program_row(conn, brand_id, program_id)
    types = conn.execute(select(event_type).where(event_type.c.program_id == program_id)
                         .order_by(event_type.c.id)).mappings().all()
    contracts = conn.execute(select(contract).where(contract.c.program_id == program_id)
                             .order_by(contract.c.id)).mappings().all()
    return {
        "id": row.id, "name": row.name, "currency": row.currency,
        "created_at": format_date(row.created_at),
        "event_types": [
            {"id": t["id"], "name": t["name"], "action_type": t["action_type"]} for t in types
        ],
        "contracts": [contract_out(c) for c in contracts],
    }


def list_programs(conn: Connection, brand_id: int) -> list[dict[str, Any]]:
    ids = conn.execute(select(program.c.id).where(program.c.brand_id == brand_id)
                       .order_by(program.c.id)).scalars().all()
    return [get_program(conn, brand_id, pid) for pid in ids]


def add_event_type(conn: Connection, brand_id: int, program_id: int,
                   body: EventTypeIn) -> dict[str, Any]:
    _program_row(conn, brand_id, program_id)
    result = conn.execute(insert(event_type).values(
        program_id=program_id, name=body.name, action_type=body.action_type,
        created_at=datetime.now(UTC)))
    assert result.inserted_primary_key is not None
    return {"id": result.inserted_primary_key[0], "program_id": program_id, "name": body.name,
            "action_type": body.action_type}


def contract_out(row: Any) -> dict[str, Any]:
    return {
        "program_id": row["program_id"], "partner_id": row["partner_id"],
        "event_type_ids": row["event_type_ids"],
        "locking": {"rule": row["locking_rule"], "days": row["locking_days"]},
        "clearing": {"rule": row["clearing_rule"], "days": row["clearing_days"]},
        "updated_at": format_date(row["updated_at"]),
    }


def put_contract(conn: Connection, brand_id: int, program_id: int, partner_id: int,
                 body: ContractIn) -> dict[str, Any]:
    _program_row(conn, brand_id, program_id)
    if conn.execute(select(partner.c.id).where(partner.c.id == partner_id)).first() is None:
        raise NotFound("partner")
    known = set(conn.execute(select(event_type.c.id).where(
        event_type.c.program_id == program_id)).scalars())
    unknown = sorted(set(body.event_type_ids) - known)
    if unknown:
        raise Invalid("event_type_ids", f"event types {unknown} are not in program {program_id}; "
                      f"its event types are {sorted(known)}")
    now = datetime.now(UTC)
    values = {
        "event_type_ids": sorted(set(body.event_type_ids)),
        "locking_rule": body.locking.rule.value, "locking_days": body.locking.days,
        "clearing_rule": body.clearing.rule.value, "clearing_days": body.clearing.days,
        "updated_at": now,
    }
    where = (contract.c.program_id == program_id, contract.c.partner_id == partner_id)
    if conn.execute(update(contract).where(*where).values(**values)).rowcount == 0:
        try:
            with conn.begin_nested():
                conn.execute(insert(contract).values(program_id=program_id,
                                                     partner_id=partner_id, created_at=now,
                                                     **values))
        except IntegrityError as exc:
            # the same contract written by a request at the same time: this one comes after
            if not unique_violation(exc, contract, "program_id", "partner_id"):
                raise
            conn.execute(update(contract).where(*where).values(**values))
    row = conn.execute(select(contract).where(*where)).mappings().one()
    return contract_out(row)


def contracted_partners(conn: Connection, brand_id: int) -> list[Row[Any]]:
    """The partners a brand sees: those with a contract on one of its programs (id, name,
    type), by id. Other partners are other tenants: a brand never learns of them."""
    contracted = (select(contract.c.partner_id)
                  .join(program, program.c.id == contract.c.program_id)
                  .where(program.c.brand_id == brand_id))
    return list(conn.execute(select(partner.c.id, partner.c.name, partner.c.partner_type)
                             .where(partner.c.id.in_(contracted)).order_by(partner.c.id)))


def contracted_partner(conn: Connection, brand_id: int, partner_id: int) -> None:
    """404 unless the brand contracts this partner: another brand's partner is not found,
    exactly like a made-up id."""
    if conn.execute(select(contract.c.id).join(program, program.c.id == contract.c.program_id)
                    .where(program.c.brand_id == brand_id, contract.c.partner_id == partner_id)
                    .limit(1)).first() is None:
        raise NotFound("partner")


def contracted_event_types(conn: Connection, partner_id: int) -> list[dict[str, Any]]:
    """Every (program, event type) a partner's contracts cover, by program then type."""
    rows = conn.execute(
        select(contract.c.event_type_ids, program.c.id, program.c.name)
        .join(program, program.c.id == contract.c.program_id)
        .where(contract.c.partner_id == partner_id).order_by(program.c.id)).all()
    out = []
    for ids, program_id, program_name in rows:
        for t in conn.execute(select(event_type.c.id, event_type.c.name).where(
                event_type.c.id.in_(list(ids))).order_by(event_type.c.id)):
            out.append({"program_id": program_id, "program_name": program_name,
                        "event_type_id": t.id, "event_type_name": t.name})
    return out
