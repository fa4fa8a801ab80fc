"""The action ledger: report, modify, reverse, approve, lock and clear actions.

Every change writes its ActionUpdate row and, through the outbox, the postbacks it
triggers, in the caller's one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from postback.core.lifecycle import (
    ClearingRule,
    LockingRule,
    RuleViolation,
    Status,
    Terms,
    Trigger,
    check_changeable,
    check_reason,
    status_detail,
)
from postback.core.values import format_date, format_money, units_problem
from postback.db.ids import allocate_ids
from postback.db.schema import action, action_update, contract, event_type, program
from postback.models import ActionIn, ActionPatchIn
from postback.services.errors import Invalid, NotFound
from postback.services.integrity import unique_violation
from postback.services.outbox import ActionEvent, enqueue_action_events
from postback.services.paging import page


def _terms(row: Any) -> Terms:
    return Terms(LockingRule(row.locking_rule), row.locking_days,
                 ClearingRule(row.clearing_rule), row.clearing_days)


def report_actions(conn: Connection, brand_id: int, actions: Sequence[ActionIn],
                   now: datetime, batch: bool = False) -> list[dict[str, Any]]:
    """Record new actions (all or none) and queue their TRACKED postbacks."""
    return [out for out in _report(conn, brand_id, actions, now, batch, each=False)
            if not isinstance(out, Exception)]


Outcome = dict[str, Any] | Exception


def report_each(conn: Connection, reports: Sequence[tuple[int, ActionIn]],
                now: datetime) -> list[Outcome]:
    """Record each ``(brand_id, action)`` on its own: the recorded row, or the error it
    would have had alone (with the others recorded). The API's group commit runs
    concurrent ``POST /v1/actions`` requests through this in one transaction, one round
    trip per table for the lot; requests are taken in order, so of two with one oid the
    first is recorded and the second is told the oid is taken, as if they had come one
    after the other."""
    outcomes: list[Outcome | None] = [None] * len(reports)
    by_brand: dict[int, list[int]] = {}
    for i, (brand_id, _) in enumerate(reports):
        by_brand.setdefault(brand_id, []).append(i)
    for brand_id, indexes in sorted(by_brand.items()):  # every group locks in one order
        got = _report(conn, brand_id, [reports[i][1] for i in indexes], now, False, each=True)
        for i, out in zip(indexes, got, strict=True):
            outcomes[i] = out
    return [out for out in outcomes if out is not None]


def _report(conn: Connection, brand_id: int, actions: Sequence[ActionIn], now: datetime,
            batch: bool, each: bool) -> list[Outcome]:
    """The rows recorded, in order; with ``each``, a refused action has its error in its
    place instead of failing the others (``batch`` names fields ``actions[i].…``)."""
    outcomes: list[Outcome | None] = [None] * len(actions)

    def refuse(i: int, error: Exception) -> None:
        if not each:
            raise error
        outcomes[i] = error

    def where(i: int, field: str) -> str:
        return f"actions[{i}].{field}" if batch else field

    def taken(i: int) -> RuleViolation:
        return RuleViolation("oid_reused", f"{where(i, 'oid')}: oid {actions[i].oid!r} is "
                             f"already used by an action of event type "
                             f"{actions[i].event_type_id}")

    program_ids = {a.program_id for a in actions}
    programs = {r.id: r for r in conn.execute(select(program).where(
        program.c.id.in_(program_ids), program.c.brand_id == brand_id))}
    types = {r.id: r for r in conn.execute(select(event_type).where(
        event_type.c.program_id.in_(program_ids)))}
    contracts = {(r.program_id, r.partner_id): r for r in conn.execute(select(contract).where(
        contract.c.program_id.in_(program_ids)))}

    seen: dict[tuple[int, str], int] = {}
    for i, a in enumerate(actions):
        problem = _problem(a, programs, types, contracts, partial(where, i))
        key = (a.event_type_id, a.oid)
        if problem is None and key in seen:
            problem = taken(i) if each else RuleViolation(
                "oid_reused", f"{where(i, 'oid')}: oid {a.oid!r} appears twice for event "
                f"type {a.event_type_id} (also at index {seen[key]})")
        if problem is not None:
            refuse(i, problem)
            continue
        seen[key] = i

    live = [i for i, out in enumerate(outcomes) if out is None]
    rows: dict[int, dict[str, Any]] = {}
    for i, new_id in zip(live, allocate_ids(conn, action, len(live)), strict=True):
        a = actions[i]
        terms = _terms(contracts[(a.program_id, a.partner_id)])
        locking = terms.locking_date(a.event_date)
        fields = a.model_dump(exclude={"items"})
        fields["currency"] = a.currency or programs[a.program_id].currency
        rows[i] = {
            **fields,
            "id": new_id,
            "brand_id": brand_id,
            "status": Status.PENDING.value,
            "status_detail": status_detail(Status.PENDING, False, None),
            "original_amount": a.amount,
            "original_payout": a.payout,
            "creation_date": now,
            "locking_date": locking,
            "clearing_date": terms.clearing_date(locking),
            "sequence": 1,
            "items": [item.model_dump() for item in a.items],
            "updated_at": now,
        }
    while live:
        try:
            # the unique index answers "is this oid taken?" as it inserts: one probe per
            # row, whatever the table's size or statistics (a separate "oid IN (...)"
            # look-up was planned as a scan of the whole event type on a freshly loaded
            # PostgreSQL table)
            with conn.begin_nested():
                # in key order: two transactions inserting overlapping oids then lock
                # the unique index's entries in one order, and one waits, not deadlocks
                conn.execute(insert(action), [rows[i] for i in sorted(
                    live, key=lambda i: (actions[i].event_type_id, actions[i].oid))])
            break
        except IntegrityError as exc:
            # also the answer when another request reports the same oid at the same time:
            # PostgreSQL's insert waits for it and fails once it commits
            if not unique_violation(exc, action, "event_type_id", "oid"):
                raise
            # only now: which ones, for the message
            keys = {(actions[i].event_type_id, actions[i].oid): i for i in live}
            gone = {keys[k] for k in _taken_oids(conn, keys, first_only=not each)}
            if not gone:
                raise  # nothing is taken after all: not ours to explain
            for i in sorted(gone):
                refuse(i, taken(i))
            live = [i for i in live if i not in gone]
    recorded = [rows[i] for i in live]
    if not recorded:
        return [out for out in outcomes if out is not None]
    conn.execute(insert(action_update), [
        {"action_id": r["id"], "sequence": 1, "trigger": Trigger.TRACKED.value, "reason": None,
         "status": r["status"], "amount": r["amount"], "payout": r["payout"],
         "delta_amount": r["amount"], "delta_payout": r["payout"], "created_at": now}
        for r in recorded
    ])
    enqueue_action_events(conn, [
        ActionEvent(r, Trigger.TRACKED, r["amount"], r["payout"]) for r in recorded
    ], now)
    for i in live:
        outcomes[i] = rows[i]
    return [out for out in outcomes if out is not None]


def _problem(a: ActionIn, programs: dict[int, Any], types: dict[int, Any],
             contracts: dict[tuple[int, int], Any],
             where: Callable[[str], str]) -> Exception | None:
    """Why ``a`` cannot be recorded (program, event type, contract, currency), if it cannot."""
    if a.program_id not in programs:
        return NotFound("program", where("program_id"))
    etype = types.get(a.event_type_id)
    if etype is None or etype.program_id != a.program_id:
        return Invalid(where("event_type_id"),
                       f"event type {a.event_type_id} is not in program {a.program_id}")
    terms_row = contracts.get((a.program_id, a.partner_id))
    if terms_row is None:
        return RuleViolation("no_contract", f"{where('partner_id')}: partner "
                             f"{a.partner_id} has no contract on program {a.program_id}", 422)
    if a.event_type_id not in terms_row.event_type_ids:
        return RuleViolation("event_type_not_in_contract", f"{where('event_type_id')}: "
                             f"event type {a.event_type_id} is outside partner "
                             f"{a.partner_id}'s contract on program {a.program_id}", 422)
    misfit = None if a.currency else units_problem(programs[a.program_id].currency, {
        "amount": a.amount, "payout": a.payout,
        **{f"items[{j}].{name}": getattr(item, name) for j, item in enumerate(a.items)
           for name in ("amount", "payout")}})
    if misfit is not None:
        return Invalid(where(misfit[0]), f"{misfit[1]} (the program's currency)")
    return None


def _taken_oids(conn: Connection, keys: Iterable[tuple[int, str]],
                first_only: bool) -> set[tuple[int, str]]:
    """Those of ``keys`` (event type, oid) already in the ledger (one of them, with
    ``first_only``). Looked up per event type in chunks: a 10,000-pair row-value IN list is
    too deep for PostgreSQL."""
    by_type: dict[int, list[str]] = {}
    for event_type_id, oid in keys:
        by_type.setdefault(event_type_id, []).append(oid)
    found: set[tuple[int, str]] = set()
    for event_type_id, oids in by_type.items():
        for start in range(0, len(oids), 1000):
            query = select(action.c.oid).where(action.c.event_type_id == event_type_id,
                                               action.c.oid.in_(oids[start:start + 1000]))
            found |= {(event_type_id, str(oid)) for oid in
                      conn.execute(query.limit(1) if first_only else query).scalars()}
            if found and first_only:
                return found
    return found


def _load(conn: Connection, brand_id: int, action_id: int) -> Row[Any]:
    row = conn.execute(select(action).where(action.c.id == action_id,
                                            action.c.brand_id == brand_id)
                       .with_for_update()).first()
    if row is None:
        raise NotFound("action")
    return row


def _apply(conn: Connection, before: Row[Any], trigger: Trigger, reason: str | None,
           now: datetime, **changes: Any) -> dict[str, Any]:
    """Write one change of one action: the row, its history, its postbacks."""
    after = {**before._mapping, **changes, "sequence": before.sequence + 1, "updated_at": now}
    conn.execute(update(action).where(action.c.id == before.id).values(
        **changes, sequence=after["sequence"], updated_at=now))
    delta_amount = after["amount"] - before.amount
    delta_payout = after["payout"] - before.payout
    conn.execute(insert(action_update).values(
        action_id=before.id, sequence=after["sequence"], trigger=trigger.value, reason=reason,
        status=after["status"], amount=after["amount"], payout=after["payout"],
        delta_amount=delta_amount, delta_payout=delta_payout, created_at=now))
    enqueue_action_events(conn, [ActionEvent(after, trigger, delta_amount, delta_payout)], now)
    return after


def modify_action(conn: Connection, brand_id: int, action_id: int, patch: ActionPatchIn,
                  now: datetime) -> dict[str, Any]:
    before = _load(conn, brand_id, action_id)
    check_changeable(Status(before.status), before.locking_date, now, "modify")
    check_reason(patch.reason)
    amount = before.amount if patch.amount is None else patch.amount
    payout = before.payout if patch.payout is None else patch.payout
    misfit = units_problem(before.currency, {"amount": patch.amount, "payout": patch.payout})
    if misfit is not None:
        raise Invalid(*misfit)
    if amount == before.amount and payout == before.payout:
        raise RuleViolation("no_change", "amount and payout are unchanged; send a new amount "
                            "or payout", 422)
    return _apply(conn, before, Trigger.MODIFIED, patch.reason, now, amount=amount, payout=payout)


def reverse_action(conn: Connection, brand_id: int, action_id: int, reason: str,
                   now: datetime) -> dict[str, Any]:
    before = _load(conn, brand_id, action_id)
    check_changeable(Status(before.status), before.locking_date, now, "reverse")
    check_reason(reason)
    return _apply(conn, before, Trigger.REVERSED, reason, now, amount=0, payout=0,
                  status=Status.REVERSED.value,
                  status_detail=status_detail(Status.REVERSED, False, reason))


def approve_action(conn: Connection, brand_id: int, action_id: int,
                   now: datetime) -> dict[str, Any]:
    """Lock a pending action by hand (impact.com: no postback for locking)."""
    before = _load(conn, brand_id, action_id)
    check_changeable(Status(before.status), before.locking_date, now, "approve")
    terms_row = conn.execute(select(contract).where(
        contract.c.program_id == before.program_id,
        contract.c.partner_id == before.partner_id)).first()
    clearing = _terms(terms_row).clearing_date(now) if terms_row else None
    return _apply(conn, before, Trigger.APPROVED, None, now, status=Status.APPROVED.value,
                  status_detail=status_detail(Status.APPROVED, False, None),
                  locking_date=now, locked_at=now, clearing_date=clearing)


def run_lifecycle(conn: Connection, as_of: datetime, now: datetime,
                  limit: int = 1000) -> dict[str, int]:
    """Lock actions whose locking date has passed and clear those whose clearing date has.

    Processes at most ``limit`` of each; callers loop until both counts are zero.
    """
    locked = 0
    for row in conn.execute(select(action).where(
            action.c.status == Status.PENDING.value, action.c.locking_date <= as_of)
            .order_by(action.c.locking_date).limit(limit).with_for_update(skip_locked=True)).all():
        _apply(conn, row, Trigger.LOCKED, None, now, status=Status.APPROVED.value,
               status_detail=status_detail(Status.APPROVED, False, None),
               locked_at=row.locking_date)
        locked += 1
    cleared = 0
    for row in conn.execute(select(action).where(
            action.c.status == Status.APPROVED.value, action.c.cleared_at.is_(None),
            action.c.clearing_date <= as_of)
            .order_by(action.c.clearing_date).limit(limit).with_for_update(skip_locked=True)).all():
        _apply(conn, row, Trigger.CLEARED, None, now, cleared_at=row.clearing_date,
               status_detail=status_detail(Status.APPROVED, True, None))
        cleared += 1
    return {"locked": locked, "cleared": cleared}


def action_out(row: Any) -> dict[str, Any]:
    """An action as the API shows it: money as decimal strings, dates with offset."""
    m = row if isinstance(row, dict) else row._mapping
    money = ("amount", "payout", "original_amount", "original_payout")
    dates = ("event_date", "creation_date", "locking_date", "clearing_date", "locked_at",
             "cleared_at", "referring_date", "updated_at")
    out = {"id": m["id"], **{k: v for k, v in m.items() if k not in ("brand_id", "id")}}
    for k in money:
        out[k] = format_money(m[k])
    for k in dates:
        out[k] = format_date(m.get(k)) or None
    out["items"] = [
        {**item, "amount": format_money(item.get("amount")) or None,
         "payout": format_money(item.get("payout")) or None}
        for item in m.get("items") or []
    ]
    return out


def update_out(row: Any) -> dict[str, Any]:
    return {
        "sequence": row.sequence, "trigger": row.trigger, "reason": row.reason,
        "status": row.status, "amount": format_money(row.amount),
        "payout": format_money(row.payout), "delta_amount": format_money(row.delta_amount),
        "delta_payout": format_money(row.delta_payout), "created_at": format_date(row.created_at),
    }


def get_action(conn: Connection, action_id: int, *, brand_id: int | None = None,
               partner_id: int | None = None) -> dict[str, Any]:
    query = select(action).where(action.c.id == action_id)
    if brand_id is not None:
        query = query.where(action.c.brand_id == brand_id)
    if partner_id is not None:
        query = query.where(action.c.partner_id == partner_id)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("action")
    out = action_out(row)
    out["updates"] = [update_out(u) for u in conn.execute(
        select(action_update).where(action_update.c.action_id == action_id)
        .order_by(action_update.c.sequence))]
    return out


def list_actions(conn: Connection, *, brand_id: int | None = None,
                 partner_id: int | None = None, status: str | None = None,
                 program_id: int | None = None, oid: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 cursor: int | None = None, limit: int = 100) -> dict[str, Any]:
    query = select(action)
    for column, value in ((action.c.brand_id, brand_id), (action.c.partner_id, partner_id),
                          (action.c.status, status), (action.c.program_id, program_id),
                          (action.c.oid, oid)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(action.c.event_date >= since)
    if until is not None:
        query = query.where(action.c.event_date < until)
    return page(conn, query, action, cursor, limit, action_out)
