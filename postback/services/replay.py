"""Replay: every notification of a window sent again, succeeded ones too, as new deliveries
with the original ``event_id`` (so ``webhook-id`` and ``{EventId}``) and ``{Sequence}``.

A replay selects a partner's *original* deliveries (``replay_id IS NULL``: replays are not
replayed again) created in ``[since, until)``, optionally of one notification type, and
writes one new delivery for each, made from its setting as the setting is *now*:

* a delivery whose ledger change is in the change log (``change_id``) is rendered again from
  the setting's current URL, method and body, with the change's values, its own
  ``{EventId}`` and ``{ChangeId}``: a partner that moved or rebuilt its receiver gets the
  request its setting describes today;
* an older one (no change-log row) is sent as it was stored (method, body), to the setting's
  current URL when that URL has no tokens, else to the stored URL;
* with a one-off ``url``, to that URL as written (a GET keeps its query string, where its
  values travel), unsigned and without the setting's custom headers (whose values are
  secrets of the setting's own receiver), whatever state the setting is in.

A delivery whose setting was deleted is skipped (``skipped``). One whose setting is off is
``held`` and goes when the setting is turned on, as every delivery of an off setting does.

The same request (since, until, type, url) from the same partner within
:data:`REPEAT_WINDOW` is the same replay: the same answer, no new deliveries, even when two
come at once (a unique key on the replay, the loser reads the winner's). The window is closed
when the replay starts (``last_id``), and the deliveries are written a chunk per transaction
in id order with the replay's ``cursor`` in the same transaction, so memory stays bounded
and a replay stopped part way (the process died) is taken up where it stopped by the same
request again; two processes working one replay take turns chunk by chunk (the replay's row
is locked), never writing one delivery twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from postback.config import Settings
from postback.core.render import CONTENT_TYPES, TOKEN_RE, BodyFormat
from postback.core.values import format_date, utc
from postback.db.engine import reader
from postback.db.schema import change_log, delivery, notification_setting, replay
from postback.services.errors import Invalid, NotFound
from postback.services.notification_settings import compile_setting, vet_target
from postback.services.outbox import insert_deliveries
from postback.services.paging import page

#: how long the same request is the same replay
REPEAT_WINDOW = timedelta(hours=24)
#: original deliveries read and new ones written per transaction
CHUNK = 500
STATUSES = ("pending", "held", "succeeded", "failed")


@dataclass(frozen=True)
class ReplayRequest:
    since: datetime
    until: datetime | None = None
    type: str | None = None
    url: str | None = None

    @property
    def key(self) -> str:
        """What makes two requests the same (times to the microsecond, in UTC)."""
        canonical = json.dumps({
            "since": utc(self.since).isoformat(),
            "until": utc(self.until).isoformat() if self.until else None,
            "type": self.type, "url": self.url}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def check_request(req: ReplayRequest, config: Settings) -> list[str]:
    """Refuse what cannot be replayed (``Invalid`` naming the field), before any write: a
    window that ends before it begins, a one-off URL with tokens or to an address postbacks
    may not reach (looked up now, as when a setting is saved). Returns warnings (a name
    that does not resolve now)."""
    if req.until is not None and req.until <= req.since:
        raise Invalid("until", "must be after since")
    if req.url is None:
        return []
    if TOKEN_RE.search(req.url):
        raise Invalid("url", "a one-off replay URL is sent as written and cannot hold "
                      "tokens such as {EventId}; remove them")
    return vet_target(req.url, config)


def replay_deliveries(engine: Engine, partner_id: int, req: ReplayRequest, now: datetime, *,
           chunk: int = CHUNK, progress: Callable[[int, int], None] | None = None
           ) -> tuple[dict[str, Any], bool]:
    """Start (or find, or take up) the replay of this request and write all its
    deliveries; returns it as :func:`get_replay` does, and whether this request started
    it (False: the same request came within 24 hours). ``progress(done, total)`` is
    called after each chunk."""
    replay_id, new = _start(engine, partner_id, req, now)
    _run(engine, replay_id, now, chunk, progress)
    with reader(engine).begin() as conn:
        return get_replay(conn, partner_id, replay_id), new


def _start(engine: Engine, partner_id: int, req: ReplayRequest, now: datetime
           ) -> tuple[int, bool]:
    key = req.key
    for _ in range(5):
        with engine.begin() as conn:
            found = conn.execute(select(replay.c.id).where(
                replay.c.partner_id == partner_id, replay.c.request_key == key,
                replay.c.created_at > now - REPEAT_WINDOW)).scalar()
            if found is not None:
                return int(found), False
            # the same request more than 24 hours ago: that replay lets its key go
            # (only that one: a replay another request has just made keeps its key, and
            # this request's insert below then fails and reads it)
            conn.execute(update(replay).where(replay.c.partner_id == partner_id,
                                              replay.c.request_key == key,
                                              replay.c.created_at <= now - REPEAT_WINDOW)
                         .values(request_key=None))
            last_id = conn.execute(select(func.max(delivery.c.id)).where(
                delivery.c.partner_id == partner_id)).scalar() or 0
            total = conn.execute(select(func.count()).select_from(delivery).where(
                *_window(partner_id, req.since, req.until, req.type, last_id))).scalar_one()
            try:
                with conn.begin_nested():
                    return int(conn.execute(insert(replay).values(
                        partner_id=partner_id, request_key=key, since=req.since,
                        until=req.until, type=req.type, url=req.url, total=total,
                        last_id=last_id, cursor=0, replayed=0, skipped=0, created_at=now)
                        .returning(replay.c.id)).scalar_one()), True
            except IntegrityError:
                pass  # the same request at the same time, committed first: read it
    raise RuntimeError("could neither find nor create the replay")  # pragma: no cover


def _window(partner_id: int, since: datetime, until: datetime | None, type: str | None,
            last_id: int) -> list[Any]:
    where = [delivery.c.partner_id == partner_id, delivery.c.replay_id.is_(None),
             delivery.c.id <= last_id, delivery.c.created_at >= since]
    if until is not None:
        where.append(delivery.c.created_at < until)
    if type is not None:
        where.append(delivery.c.notification_type == type)
    return where


def _run(engine: Engine, replay_id: int, now: datetime, chunk: int,
         progress: Callable[[int, int], None] | None) -> None:
    while True:
        with engine.begin() as conn:
            r = conn.execute(select(replay).where(replay.c.id == replay_id)
                             .with_for_update()).one()
            if r.queued_at is not None:
                return
            sources = conn.execute(select(delivery).where(
                *_window(r.partner_id, r.since, r.until, r.type, r.last_id),
                delivery.c.id > r.cursor).order_by(delivery.c.id).limit(chunk)).all()
            if not sources:
                conn.execute(update(replay).where(replay.c.id == replay_id)
                             .values(queued_at=now))
                return
            rows, skipped = _new_deliveries(conn, r, sources, now)
            insert_deliveries(conn, rows)
            done = r.replayed + r.skipped + len(rows) + skipped
            conn.execute(update(replay).where(replay.c.id == replay_id).values(
                cursor=sources[-1].id, replayed=replay.c.replayed + len(rows),
                skipped=replay.c.skipped + skipped))
        if progress is not None:
            progress(done, r.total)


def _new_deliveries(conn: Connection, r: Any, sources: Sequence[Any], now: datetime
                    ) -> tuple[list[dict[str, Any]], int]:
    setting_ids = {s.setting_id for s in sources if s.setting_id is not None}
    settings = {row["id"]: dict(row) for row in conn.execute(select(notification_setting).where(
        notification_setting.c.id.in_(setting_ids))).mappings()} if setting_ids else {}
    change_ids = {s.change_id for s in sources if s.change_id is not None}
    values = {row[0]: row[1] for row in conn.execute(
        select(change_log.c.change_id, change_log.c["values"])
        .where(change_log.c.change_id.in_(change_ids)))} if change_ids else {}
    rows: list[dict[str, Any]] = []
    skipped = 0
    for source in sources:
        setting = settings.get(source.setting_id)
        if setting is None:  # deleted: nothing says where or how to send it now
            skipped += 1
            continue
        logged = values.get(source.change_id)
        method, url, headers, body = _request(setting, source, logged)
        one_off = r.url is not None
        if one_off:
            url = _one_off_url(r.url, url, method)
        off = not setting["enabled"] or setting["disabled_at"] is not None
        rows.append({
            "event_id": source.event_id, "partner_id": source.partner_id,
            # a one-off URL goes out on its own: not signed, no custom headers (the
            # engine adds the setting's), and not counted in the setting's health
            "setting_id": None if one_off else setting["id"],
            "action_id": source.action_id, "inquiry_id": source.inquiry_id,
            "item_id": source.item_id, "notification_type": source.notification_type,
            "trigger": source.trigger,
            "status": "held" if off and not one_off else "pending",
            "method": method, "url": url, "headers": headers, "body": body,
            "attempt_count": 0, "failures": 0, "next_attempt_at": now, "open_claims": 0,
            "created_at": now, "change_id": source.change_id, "replay_id": r.id,
        })
    return rows, skipped


def _request(setting: Mapping[str, Any], source: Any, logged: Mapping[str, Any] | None
             ) -> tuple[str, str, dict[str, str], str | None]:
    """(method, url, headers, body) of a replayed delivery, before a one-off URL."""
    compiled = compile_setting(setting["type"], setting["url"], setting["method"],
                               setting["body_format"], setting["body"])
    if logged is not None and isinstance(logged, Mapping):
        values = {**logged, "Trigger": source.trigger, "EventId": source.event_id,
                  "ChangeId": source.change_id}
        is_post = setting["method"] == "POST"
        return (setting["method"], compiled.url.render(values),
                {"Content-Type": CONTENT_TYPES[BodyFormat(setting["body_format"])]}
                if is_post else {},
                compiled.body.render(values) if is_post and compiled.body else None)
    url = setting["url"] if not compiled.url.tokens else source.url
    headers = source.headers if isinstance(source.headers, dict) else {}
    return source.method, url, headers, source.body


def _one_off_url(one_off: str, rendered: str, method: str) -> str:
    """A one-off URL as sent: as written, and for a GET with the query string its values
    travel in."""
    query = urlsplit(rendered).query if method == "GET" else ""
    if not query:
        return one_off
    return f"{one_off}{'&' if '?' in one_off else '?'}{query}"


# -- reading ----------------------------------------------------------------------------


def replay_out(row: Any, counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "id": row.id, "since": format_date(row.since),
        "until": format_date(row.until) or None, "type": row.type, "url": row.url,
        "total": row.total, "replayed": row.replayed, "skipped": row.skipped,
        "queued": row.queued_at is not None,
        **{status: counts.get(status, 0) for status in STATUSES},
        "created_at": format_date(row.created_at),
        "queued_at": format_date(row.queued_at) or None,
    }


def _counts(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Each replay's deliveries by status."""
    out: dict[int, dict[str, int]] = {}
    if not ids:
        return out
    for row in conn.execute(select(delivery.c.replay_id, delivery.c.status,
                                   func.count().label("n"))
                            .where(delivery.c.replay_id.in_(ids))
                            .group_by(delivery.c.replay_id, delivery.c.status)):
        out.setdefault(row.replay_id, {})[row.status] = row.n
    return out


def get_replay(conn: Connection, partner_id: int, replay_id: int) -> dict[str, Any]:
    row = conn.execute(select(replay).where(replay.c.id == replay_id,
                                            replay.c.partner_id == partner_id)).first()
    if row is None:
        raise NotFound("replay")
    return replay_out(row, _counts(conn, [row.id]).get(row.id, {}))


def list_replays(conn: Connection, partner_id: int, *, cursor: int | None = None,
                 limit: int = 20) -> dict[str, Any]:
    found = page(conn, select(replay).where(replay.c.partner_id == partner_id), replay,
                 cursor, limit, lambda row: row)
    counts = _counts(conn, [row.id for row in found["items"]])
    return {"items": [replay_out(row, counts.get(row.id, {})) for row in found["items"]],
            "next_cursor": found["next_cursor"]}
