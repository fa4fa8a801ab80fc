"""Event Notifications settings: validated on save, compiled once, masked on read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from postback.config import Settings
from postback.core.addresses import AddressPolicy, literal_ip
from postback.core.inquiries import INQUIRY_PARTNER_TYPES
from postback.core.lifecycle import RuleViolation
from postback.core.render import (
    BodyFormat,
    Problem,
    Template,
    TemplateError,
    Value,
    compile_template,
)
from postback.core.routing import CLEARING, EXTRA_TRIGGERS, INQUIRY, LIFECYCLE, PRODUCT
from postback.core.signing import PRIVATE, SYMMETRIC, new_secret, public_key
from postback.core.template_syntax import check_body
from postback.core.tokens import ACTION_TOKENS, CATALOG_TOKENS, INQUIRY_TOKENS, Kind, Token
from postback.core.values import format_date
from postback.db.schema import (
    contract,
    delivery,
    event_type,
    notification_setting,
    partner,
    program,
)
from postback.db.wakeup import notify_due
from postback.delivery import queue
from postback.delivery.resolver import vet_host_now
from postback.models import BrandPostbackIn, EventLevelSettingIn, NotificationSettingIn
from postback.sealing import MASK
from postback.services.errors import Invalid, NotFound
from postback.services.integrity import unique_violation
from postback.services.programs import contracted_partner


@dataclass(frozen=True)
class NotificationType:
    slug: str
    title: str
    vocabulary: Mapping[str, Token]
    fires_on: tuple[str, ...]
    partner_types: frozenset[str] | None = None  # None: every partner


_ACTION_VOCABULARY = {t.name: t for t in ACTION_TOKENS}
TYPES: dict[str, NotificationType] = {
    LIFECYCLE: NotificationType(LIFECYCLE, "Action Life Cycle Events", _ACTION_VOCABULARY,
                                ("TRACKED", "MODIFIED", "REVERSED")),
    CLEARING: NotificationType(CLEARING, "Action Clearing Events", _ACTION_VOCABULARY,
                               ("CLEARED",)),
    INQUIRY: NotificationType(INQUIRY, "Action Inquiry Events",
                              {t.name: t for t in INQUIRY_TOKENS},
                              ("INQUIRY_CREATED", "INQUIRY_RESOLVED"), INQUIRY_PARTNER_TYPES),
    PRODUCT: NotificationType(PRODUCT, "Product Data Change Events",
                              {t.name: t for t in CATALOG_TOKENS},
                              ("ADDED", "UPDATED", "REMOVED")),
}


def example_values(slug: str) -> dict[str, Value]:
    """Every token of the type with its registry example: the test tool's sample values and
    the values of the documented examples."""
    return {t.name: json.loads(t.example) if t.kind is Kind.ITEMS else t.example
            for t in notification_type(slug).vocabulary.values()}


def unavailable_reason(slug: str, partner_type: str) -> str | None:
    allowed = TYPES[slug].partner_types
    if allowed is None or partner_type in allowed:
        return None
    return (f"{TYPES[slug].title} are only for {' and '.join(sorted(allowed))} partners "
            f"(impact.com's rule); this partner is of type {partner_type}")


def check_available(conn: Connection, partner_id: int, slug: str) -> None:
    """403 when this partner's type may not use this notification type."""
    notification_type(slug)
    kind = conn.execute(select(partner.c.partner_type)
                        .where(partner.c.id == partner_id)).scalar_one()
    reason = unavailable_reason(slug, kind)
    if reason is not None:
        raise RuleViolation("not_available_for_partner_type", reason, 403)


def notification_type(slug: str) -> NotificationType:
    found = TYPES.get(slug)
    if found is None:
        raise NotFound("event notification type")
    return found


@dataclass(frozen=True)
class Compiled:
    url: Template
    body: Template | None

    @property
    def tokens(self) -> frozenset[str]:
        """Every token the setting uses: the only values a notification must compute."""
        return self.url.tokens | (self.body.tokens if self.body else frozenset())


@lru_cache(maxsize=4096)
def compile_setting(slug: str, url: str, method: str, body_format: str, body: str) -> Compiled:
    """Compile a setting's URL and body templates (cached: settings change rarely)."""
    vocabulary = TYPES[slug].vocabulary
    problems: list[Problem] = []
    url_template = body_template = None
    try:
        url_template = compile_template(url, "url", vocabulary)
    except TemplateError as exc:
        problems.extend(exc.problems)
    if method == "POST":
        try:
            body_template = compile_template(body, "body", vocabulary, BodyFormat(body_format))
        except TemplateError as exc:
            problems.extend(exc.problems)
    if problems:
        raise TemplateError(problems)
    assert url_template is not None
    return Compiled(url_template, body_template)


def check_setting(slug: str, body: NotificationSettingIn) -> Compiled:
    """Validate a setting and compile it; raises :class:`Invalid` naming the field."""
    scheme, _, rest = body.url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest:
        raise Invalid("url", "must start with http:// or https://")
    literal_host = urlsplit(body.url.split("{", 1)[0]).hostname
    if "@" in rest.split("/", 1)[0].split("?", 1)[0]:
        raise Invalid("url", "must not carry user:password@; use a header instead")
    if not literal_host:
        raise Invalid("url", "needs a host name, e.g. https://postbacks.example.com/in")
    if body.method == "GET" and body.body:
        raise Invalid("body", "a GET postback carries its values in the url; "
                      "remove body or use method POST")
    allowed = EXTRA_TRIGGERS.get(slug, frozenset())
    for trigger in body.extra_triggers:
        if trigger not in allowed:
            raise Invalid("extra_triggers", f"{trigger} is not an opt-in trigger of {slug}; "
                          f"it accepts {sorted(allowed) or 'none'}")
    try:
        return checked_setting(slug, body.url, body.method, body.body_format.value, body.body)
    except TemplateError as exc:
        first = exc.problems[0]
        raise Invalid(first.field, "; ".join(f"{p.field}: {p.message}" for p in exc.problems),
                      {"problems": problems_out(exc)}) from None


def checked_setting(slug: str, url: str, method: str, body_format: str, body: str) -> Compiled:
    """:func:`compile_setting`, and the body checked as the document its format says: what
    a save must pass (settings saved before the check was added still send as saved)."""
    compiled = compile_setting(slug, url, method, body_format, body)
    if compiled.body is not None:
        check_body(body, compiled.body, BodyFormat(body_format))
    return compiled


def problems_out(exc: TemplateError) -> list[dict[str, Any]]:
    """A template's problems as the API and the live preview show them."""
    return [{"field": p.field, "message": p.message, "token": p.token, "position": p.position,
             "line": p.line, "column": p.column, "suggestions": list(p.suggestions)}
            for p in exc.problems]


def setting_out(row: Any) -> dict[str, Any]:
    """A setting as its owner reads it: header values masked, disabled state explained."""
    return {
        "id": row["id"], "type": row["type"], "scope": row["scope"],
        "program_id": row["program_id"], "event_type_id": row["event_type_id"],
        "brand_id": row["brand_id"], "url": row["url"], "method": row["method"],
        "body_format": row["body_format"], "body": row["body"],
        "headers": {name: MASK for name in row["headers"]},
        "enabled": row["enabled"],
        "minimum_delay_seconds": row["minimum_delay_seconds"],
        "max_requests_per_second": row["max_requests_per_second"],
        "success_response": row["success_response"], "error_response": row["error_response"],
        "extra_triggers": row["extra_triggers"],
        "signed": bool(row["signing_secret"]),
        "signing_scheme": ("v1a" if row["signing_public_key"] else "v1")
        if row["signing_secret"] else None,
        "signing_public_key": row["signing_public_key"],
        "signing_rotation_ends_at": format_date(row["previous_secret_expires_at"]) or None,
        "disabled_at": format_date(row["disabled_at"]) or None,
        "disabled_reason": row["disabled_reason"],
        "created_at": format_date(row["created_at"]),
        "updated_at": format_date(row["updated_at"]),
    }


def _refuse(reason: str) -> Invalid:
    return Invalid("url", f"{reason}: postbacks go to public addresses only (an operator "
                   "can open ranges for testing with POSTBACK_ALLOW_TARGETS)")


def _target_host(url: str) -> str | None:
    return urlsplit(url.split("{", 1)[0]).hostname


def check_target(url: str, policy: AddressPolicy) -> None:
    """Refuse a URL whose host is a non-public IP literal (pure: no lookup)."""
    host = _target_host(url)
    literal = literal_ip(host) if host else None
    reason = policy.refusal(literal) if literal is not None else None
    if reason is not None:
        raise _refuse(reason)


def vet_target(url: str, config: Settings) -> list[str]:
    """The save-time SSRF check, run before the write transaction (a lookup can take
    seconds): refuse a literal or a host name that resolves to a non-public address; return
    warnings for a name that does not resolve now. Every send resolves and checks again,
    since what a name resolves to can change."""
    host = _target_host(url)
    if not host:
        return []
    literal = literal_ip(host)
    if literal is not None:
        reason, warning = config.allow_targets.refusal(literal), None
    else:
        reason, warning = vet_host_now(host, config.allow_targets,
                                       min(config.connect_timeout, 3.0))
    if reason is not None:
        raise _refuse(reason)
    return [f"url: {warning}"] if warning else []


def setting_values(slug: str, body: NotificationSettingIn, now: datetime,
                   config: Settings) -> dict[str, Any]:
    """Validated column values for a setting, header values sealed; saving also lifts an
    automatic disable."""
    check_setting(slug, body)
    check_target(body.url, config.allow_targets)
    return {"url": body.url, "method": body.method, "body_format": body.body_format.value,
            "body": body.body, "headers": config.sealer.seal_values(body.headers),
            "enabled": body.enabled,
            "minimum_delay_seconds": body.minimum_delay_seconds,
            "max_requests_per_second": body.max_requests_per_second,
            "success_response": body.success_response, "error_response": body.error_response,
            "extra_triggers": sorted(set(body.extra_triggers)),
            "failing_since": None, "consecutive_failures": 0,
            "disabled_at": None, "disabled_reason": None, "updated_at": now}


def _global(partner_id: int, slug: str) -> tuple[Any, ...]:
    return (notification_setting.c.partner_id == partner_id,
            notification_setting.c.type == slug, notification_setting.c.scope == "global")


def list_settings(conn: Connection, partner_id: int) -> list[dict[str, Any]]:
    rows = {r["type"]: r for r in conn.execute(select(notification_setting).where(
        notification_setting.c.partner_id == partner_id,
        notification_setting.c.scope == "global")).mappings()}
    kind = conn.execute(select(partner.c.partner_type)
                        .where(partner.c.id == partner_id)).scalar_one()
    held = held_counts(conn, partner_id)
    return [
        {"type": t.slug, "title": t.title, "fires_on": list(t.fires_on),
         "tokens": sorted(t.vocabulary),
         "available": unavailable_reason(t.slug, kind) is None,
         "unavailable_reason": unavailable_reason(t.slug, kind),
         "setting": {**setting_out(rows[t.slug]),
                     "held_deliveries": held.get(rows[t.slug]["id"], 0)}
         if t.slug in rows else None}
        for t in TYPES.values()
    ]


def held_counts(conn: Connection, partner_id: int) -> dict[int, int]:
    """How many deliveries each of the partner's settings holds while it is off."""
    return {row.setting_id: row.n for row in conn.execute(
        select(delivery.c.setting_id, func.count().label("n"))
        .where(delivery.c.status == "held", delivery.c.partner_id == partner_id)
        .group_by(delivery.c.setting_id))}


def put_setting(conn: Connection, partner_id: int, slug: str, body: NotificationSettingIn,
                config: Settings) -> dict[str, Any]:
    check_available(conn, partner_id, slug)
    now = datetime.now(UTC)
    values = setting_values(slug, body, now, config)
    where = _global(partner_id, slug)
    existing = conn.execute(select(notification_setting.c.id,
                                   notification_setting.c.signing_secret)
                            .where(*where)).first()
    revealed = _signing(values, body, existing.signing_secret if existing else None, config)
    if existing is None:
        try:
            with conn.begin_nested():
                conn.execute(insert(notification_setting).values(
                    partner_id=partner_id, type=slug, created_at=now, **values))
        except IntegrityError as exc:
            # saved by a request at the same time: this one comes after it
            if not unique_violation(exc, notification_setting, "partner_id", "type"):
                raise
            existing = conn.execute(select(notification_setting.c.id).where(*where)).one()
    if existing is not None:
        conn.execute(update(notification_setting).where(*where).values(**values))
        # off means off from this commit; on again, what was held goes out
        if body.enabled:
            if queue.resume(conn, [existing.id], now):
                notify_due(conn)
        else:
            queue.hold(conn, [existing.id])
    out = setting_out(conn.execute(select(notification_setting).where(*where)).mappings().one())
    return out if revealed is None else {**out, "signing_secret": revealed}


def _signing(values: dict[str, Any], body: NotificationSettingIn, sealed: str | None,
             config: Settings) -> str | None:
    """Start, keep, switch or stop signing; returns a newly made secret, which is shown
    only this once (for v1a, the private key: its public key is in every read)."""
    if not body.signed:
        values.update(signing_secret=None, previous_signing_secret=None,
                      previous_secret_expires_at=None, signing_public_key=None)
        return None
    wanted = PRIVATE if body.signing_scheme == "v1a" else SYMMETRIC
    if sealed is not None and config.sealer.open(sealed).startswith(wanted):
        return None
    secret = new_secret(body.signing_scheme)
    values.update(signing_secret=config.sealer.seal(secret),
                  signing_public_key=public_key(secret))
    return secret


def rotate_signing_secret(conn: Connection, partner_id: int, slug: str, grace_seconds: int,
                          config: Settings, now: datetime) -> dict[str, Any]:
    """A new secret (shown once); the old one keeps signing beside it for the grace period."""
    notification_type(slug)
    where = _global(partner_id, slug)
    row = conn.execute(select(notification_setting).where(*where)).mappings().first()
    if row is None:
        raise NotFound("event notification setting")
    if not row["signing_secret"]:
        raise RuleViolation("not_signed", "this setting does not sign its postbacks; save it "
                            "with \"signed\": true first", 409)
    current = config.sealer.open(row["signing_secret"])
    secret = new_secret("v1a" if current.startswith(PRIVATE) else "v1")
    expires = now + timedelta(seconds=grace_seconds)
    conn.execute(update(notification_setting).where(*where).values(
        signing_secret=config.sealer.seal(secret), signing_public_key=public_key(secret),
        previous_signing_secret=row["signing_secret"], previous_secret_expires_at=expires,
        updated_at=now))
    return {"signing_secret": secret, "signing_public_key": public_key(secret),
            "previous_secret_expires_at": format_date(expires)}


def delete_setting(conn: Connection, partner_id: int, slug: str) -> None:
    """Delete a setting. Its pending deliveries are cancelled (failed, ``setting_deleted``):
    the partner took that endpoint away. Past deliveries stay readable and resendable."""
    notification_type(slug)
    where = _global(partner_id, slug)
    setting_id = conn.execute(select(notification_setting.c.id).where(*where)).scalar()
    if setting_id is None:
        raise NotFound("event notification setting")
    _delete(conn, setting_id)


def discard_held(conn: Connection, partner_id: int, slug: str) -> dict[str, int]:
    """Give up what a turned-off setting holds: its held deliveries end as failed
    (``discarded``), still readable and resendable one by one."""
    notification_type(slug)
    setting_id = conn.execute(select(notification_setting.c.id)
                              .where(*_global(partner_id, slug))).scalar()
    if setting_id is None:
        raise NotFound("event notification setting")
    return {"discarded": queue.discard_held(conn, [setting_id], datetime.now(UTC))}


def _delete(conn: Connection, setting_id: int) -> None:
    cancel = (update(delivery).where(delivery.c.setting_id == setting_id,
                                     delivery.c.status.in_(("pending", "held")))
              .values(status="failed", last_error="setting_deleted", lease_owner=None,
                      completed_at=datetime.now(UTC)))
    conn.execute(cancel)
    # then the setting's row lock (deliveries first, as the engine's record takes them): a
    # transaction still writing deliveries for it (it holds the row FOR KEY SHARE, see
    # outbox.active_settings) has committed once this returns, and what it wrote is
    # cancelled too, so no delivery is left pending without its setting (PostgreSQL;
    # SQLite's writers never overlap)
    conn.execute(select(notification_setting.c.id)
                 .where(notification_setting.c.id == setting_id).with_for_update())
    conn.execute(cancel)
    conn.execute(delete(notification_setting).where(notification_setting.c.id == setting_id))


def _contracted_event_type(conn: Connection, partner_id: int, event_type_id: int,
                           field: str, brand_id: int | None = None) -> Any:
    """The event type, if the caller may see it, and the partner's contract on its program
    includes it. A brand (``brand_id``) sees its own programs' event types; a partner those
    of the programs it has a contract on. Any other event type is another tenant's: not
    found, exactly like a made-up id (404). Outside the contract: 422."""
    on_contract = (contract.c.program_id == event_type.c.program_id) & (
        contract.c.partner_id == partner_id)
    query = (select(event_type.c.id, event_type.c.program_id, contract.c.event_type_ids)
             .join(program, program.c.id == event_type.c.program_id)
             .outerjoin(contract, on_contract)
             .where(event_type.c.id == event_type_id))
    if brand_id is not None:
        query = query.where(program.c.brand_id == brand_id)
    else:
        query = query.where(contract.c.id.is_not(None))
    etype = conn.execute(query).first()
    if etype is None:
        raise NotFound("event type", field)
    if etype.event_type_ids is None or event_type_id not in etype.event_type_ids:
        whose = "your contract" if brand_id is None else f"partner {partner_id}'s contract"
        raise RuleViolation("event_type_not_in_contract", f"{field}: event type "
                            f"{event_type_id} is not in {whose} on program "
                            f"{etype.program_id}", 422)
    return etype


def add_event_level(conn: Connection, partner_id: int, body: EventLevelSettingIn,
                    config: Settings) -> dict[str, Any]:
    etype = _contracted_event_type(conn, partner_id, body.event_type_id, "event_type_id")
    if etype.program_id != body.program_id:
        raise Invalid("program_id", f"event type {body.event_type_id} belongs to program "
                      f"{etype.program_id}, not {body.program_id}")
    return _insert_scoped(conn, partner_id, "event_level", body, config,
                          program_id=body.program_id,
                          event_type_id=body.event_type_id)


def add_brand_postback(conn: Connection, brand_id: int, partner_id: int,
                       body: BrandPostbackIn, config: Settings) -> dict[str, Any]:
    contracted_partner(conn, brand_id, partner_id)  # another brand's partner: 404
    etype = _contracted_event_type(conn, partner_id, body.event_type_id, "event_type_id",
                                   brand_id)
    return _insert_scoped(conn, partner_id, "brand", body, config, program_id=etype.program_id,
                          event_type_id=body.event_type_id, brand_id=brand_id)


def _insert_scoped(conn: Connection, partner_id: int, scope: str,
                   body: NotificationSettingIn, config: Settings,
                   **where: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    values = setting_values(LIFECYCLE, body, now, config)
    revealed = _signing(values, body, None, config)
    new_id = conn.execute(insert(notification_setting).values(
        partner_id=partner_id, type=LIFECYCLE, scope=scope, created_at=now, **where,
        **values)).inserted_primary_key
    assert new_id is not None
    out = setting_out(conn.execute(select(notification_setting).where(
        notification_setting.c.id == new_id[0])).mappings().one())
    return out if revealed is None else {**out, "signing_secret": revealed}


def list_scoped(conn: Connection, partner_id: int, scope: str,
                brand_id: int | None = None) -> list[dict[str, Any]]:
    """A partner's settings of one scope; with ``brand_id``, those that brand made for a
    partner it contracts (another brand's partner: 404)."""
    if brand_id is not None:
        contracted_partner(conn, brand_id, partner_id)
    query = select(notification_setting).where(
        notification_setting.c.partner_id == partner_id, notification_setting.c.scope == scope)
    if brand_id is not None:
        query = query.where(notification_setting.c.brand_id == brand_id)
    return [setting_out(r) for r in conn.execute(
        query.order_by(notification_setting.c.id)).mappings()]


def scoped_setting(conn: Connection, partner_id: int, scope: str | None,
                   setting_id: int) -> Any:
    """The partner's event-level or brand-created setting (``scope`` None: either)."""
    row = conn.execute(select(notification_setting).where(
        notification_setting.c.id == setting_id, notification_setting.c.partner_id == partner_id,
        notification_setting.c.scope == scope if scope is not None
        else notification_setting.c.scope != "global")).mappings().first()
    if row is None:
        raise NotFound("event notification setting")
    return row


def delete_scoped(conn: Connection, partner_id: int, scope: str, setting_id: int,
                  brand_id: int | None = None) -> None:
    if brand_id is not None:
        contracted_partner(conn, brand_id, partner_id)
    row = scoped_setting(conn, partner_id, scope, setting_id)
    if brand_id is not None and row["brand_id"] != brand_id:
        raise NotFound("event notification setting")
    _delete(conn, setting_id)
