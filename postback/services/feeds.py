"""Scheduled data feeds: a partner's feeds (create, read, update, delete, with every input
checked and refused in plain words), "run now", its runs, and the runs' files (by key or by
a signed, expiring link).

The functions the API and the web screen call, each inside the caller's transaction
unless it says otherwise:

* :func:`vet_destination` — before the write transaction: the SFTP host's address check
  (a name is resolved once; a non-public address is refused), returns warnings;
* :func:`create_feed`, :func:`update_feed`, :func:`delete_feed`, :func:`get_feed`,
  :func:`list_feeds` — the feed as :func:`feed_out` shows it (no secret, ever);
* :func:`request_run` — "run now": the run that will make the next file;
* :func:`list_runs`, :func:`get_run` — runs as :func:`run_out` shows them, with
  ``download_url`` (a signed link) while the file is kept;
* :func:`run_file` (by key) and :func:`linked_file` (by a link's token) — what to send,
  then :func:`file_bytes` streams it (outside any transaction, a chunk at a time);
* :func:`test_destination` — connect to the SFTP server now (no transaction held) and pin
  its host key if none is pinned;
* :func:`column_choices` — every column a content may have, for a form.

Running feeds (the scheduler, the executor, retention) is ``services/feed_runs.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from postback.config import Settings
from postback.core.addresses import literal_ip
from postback.core.feed_format import content_type
from postback.core.feed_schedule import ScheduleError, next_run, parse_schedule
from postback.core.feed_schedule import from_json as schedule_from_json
from postback.core.lifecycle import RuleViolation
from postback.core.render import suggest
from postback.core.tokens import ACTION_TOKENS, CATALOG_TOKENS
from postback.core.values import format_date
from postback.db.clock import db_now
from postback.db.engine import reader
from postback.db.schema import contract, feed, feed_file_chunk, feed_run
from postback.delivery.feed_destinations import (
    DestinationError,
    MailTarget,
    SftpTarget,
    host_key_fingerprint,
    mail_target_problem,
    probe_sftp,
    sftp_target_problem,
)
from postback.delivery.resolver import vet_host_now
from postback.models import FeedIn, FeedWindowIn, SftpDestinationIn
from postback.sealing import SealError
from postback.services.errors import Invalid, NotFound

#: how long a signed download link is good for (never past the file's own expiry)
LINK_DAYS = 7
#: a feed's file is stored in chunks of this size
CHUNK_BYTES = 1 << 20
#: columns a feed cannot have: a postback's own id (a feed row is a change: ChangeId)
NOT_COLUMNS = frozenset({"EventId"})
#: the statuses partners see, by phase
STATUS = {"queued": "queued", "producing": "running", "produced": "running",
          "delivering": "running", "succeeded": "succeeded", "failed": "failed"}


def column_choices(content: str) -> list[str]:
    """The columns a feed of ``content`` (``actions`` or ``catalog``) may have, in the
    token registry's order: the same names and values as postbacks."""
    tokens = ACTION_TOKENS if content == "actions" else CATALOG_TOKENS
    return [t.name for t in tokens if t.name not in NOT_COLUMNS]


# -- checks ---------------------------------------------------------------------------------

def _check_columns(content: str, columns: list[str]) -> list[str]:
    if not columns:
        raise Invalid("columns", "choose at least one column, e.g. "
                      + ("ActionId, Status, Payout" if content == "actions"
                         else "CatalogItemId, Name, CurrentPrice"))
    allowed = column_choices(content)
    seen: dict[str, int] = {}
    for i, name in enumerate(columns):
        if name in NOT_COLUMNS:
            raise Invalid(f"columns[{i}]", f"{name} is a postback's own id and no column of "
                          "a feed; use ChangeId, the id of the change a row shows")
        if name not in allowed:
            hints = suggest(name, frozenset(allowed))
            hint = f"; did you mean {', '.join(hints)}?" if hints else \
                f" (see GET /v1/feeds/columns?content={content} for the names)"
            kind = "an actions" if content == "actions" else "a catalog"
            raise Invalid(f"columns[{i}]", f"{name[:64]!r} is not a column of {kind} "
                          f"feed{hint}")
        if name in seen:
            raise Invalid(f"columns[{i}]", f"{name} is already column {seen[name] + 1}; "
                          "list each column once")
        seen[name] = i
    return list(columns)


def _contracted(conn: Connection, partner_id: int, program_id: int, field: str) -> None:
    """A program the partner has a contract on; any other is not found (404), exactly like
    a program that does not exist."""
    if conn.execute(select(contract.c.id).where(
            contract.c.program_id == program_id,
            contract.c.partner_id == partner_id).limit(1)).first() is None:
        raise NotFound("program", field)


def _schedule(body: FeedIn) -> dict[str, object]:
    s = body.schedule
    try:
        return parse_schedule(s.every, s.at, s.day, s.time_zone).to_json()
    except ScheduleError as exc:
        raise Invalid(f"schedule.{exc.field}", exc.message) from None


def _window(body: FeedIn) -> int | None:
    if body.content == "catalog":
        if isinstance(body.window, FeedWindowIn):
            raise Invalid("window", "a catalog feed is always the whole current catalog; "
                          "leave window out")
        return None
    return body.window.days if isinstance(body.window, FeedWindowIn) else None


_SFTP_FIELDS = (("host key", "host_key"), ("private key", "private_key"),
                ("password", "password"), ("host", "host"), ("port", "port"),
                ("username", "username"), ("directory", "directory"))


def _sftp_field(reason: str) -> str:
    for words, name in _SFTP_FIELDS:
        if words in reason:
            return f"destination.{name}"
    return "destination"


def vet_destination(body: FeedIn, config: Settings) -> list[str]:
    """The save-time address check of an SFTP destination, run before the write transaction
    (a lookup can take seconds): a literal or a name resolving to a non-public address is
    refused; a name that does not resolve now is a warning. Every delivery checks again."""
    dest = body.destination
    if not isinstance(dest, SftpDestinationIn):
        return []
    host = dest.host.strip("[]")
    literal = literal_ip(host)
    if literal is not None:
        reason, warning = config.allow_targets.refusal(literal), None
    else:
        labels = host.rstrip(".").split(".")
        try:
            host.encode("idna")
        except UnicodeError:
            labels = [""]
        if not all(0 < len(label) <= 63 for label in labels) or any(
                c.isspace() or c in "/@:\\" for c in host):
            raise Invalid("destination.host", "must be a host name (labels of 1 to 63 "
                          "characters between dots) or an IP address, e.g. "
                          "sftp.partner.example")
        try:
            reason, warning = vet_host_now(host, config.allow_targets,
                                           min(config.connect_timeout, 3.0))
        except (UnicodeError, ValueError):
            raise Invalid("destination.host", "must be a host name or an IP address, e.g. "
                          "sftp.partner.example") from None
    if reason is not None:
        raise Invalid("destination.host", f"{reason}: feeds go to public addresses only (an "
                      "operator can open ranges for testing with POSTBACK_ALLOW_TARGETS)")
    return [f"destination.host: {warning}"] if warning else []


@dataclass(frozen=True)
class _Destination:
    public: dict[str, Any]  # stored in ``destination``: no secret
    secret: str | None  # sealed
    host_key: str | None
    rev: int


def _destination(body: FeedIn, stored: Any, config: Settings) -> _Destination:
    """The destination to store: checked, its secret sealed (or kept from ``stored`` when
    the server is the same), the pinned host key kept, set or cleared."""
    dest = body.destination
    old = dict(stored["destination"]) if stored is not None else {}
    rev = stored["destination_rev"] if stored is not None else 0
    if dest.kind == "hosted":
        public: dict[str, Any] = {"kind": "hosted"}
        return _Destination(public, None, None, rev + (public != old))
    if dest.kind == "email":
        if not config.smtp_host:
            raise Invalid("destination.kind", "email feeds are not available on this server: "
                          "the operator has not set up a mail relay (POSTBACK_SMTP_HOST); "
                          "use hosted or sftp")
        to = [a.strip() for a in dest.to]
        problem = mail_target_problem(MailTarget(tuple(to), dest.attach,
                                                 None if dest.attach else config.public_url))
        if problem is not None:
            raise Invalid("destination.to", problem)
        public = {"kind": "email", "to": to, "attach": dest.attach}
        return _Destination(public, None, None, rev + (public != old))
    assert isinstance(dest, SftpDestinationIn)
    public = {"kind": "sftp", "host": dest.host, "port": dest.port, "username": dest.username,
              "directory": dest.directory}
    same_server = stored is not None and old.get("kind") == "sftp" and all(
        old.get(k) == public[k] for k in ("host", "port", "username"))
    secret: dict[str, str | None]
    if dest.password is not None or dest.private_key is not None:
        secret = {"password": dest.password, "private_key": dest.private_key}
    elif same_server and stored["destination_secret"]:
        try:
            secret = json.loads(config.sealer.open(stored["destination_secret"]))
        except SealError:
            what = "private_key" if _secret_flags(stored)[1] and not _secret_flags(stored)[0] \
                else "password"
            raise Invalid(f"destination.{what}", unopenable(what)) from None
    elif stored is not None and old.get("kind") == "sftp":
        raise Invalid("destination.password", "give the password or private_key again when "
                      "you change the host, port or username: the stored one is never sent "
                      "to another server")
    else:
        raise Invalid("destination.password", "an SFTP destination needs a password or a "
                      "private_key")
    if "host_key" in dest.model_fields_set:
        host_key = dest.host_key.strip() if dest.host_key else None
    else:  # kept, unless the server changed: the pin belongs to the old one
        host_key = stored["host_key"] if same_server else None
    problem = sftp_target_problem(SftpTarget(
        host=dest.host, port=dest.port, username=dest.username, password=secret["password"],
        private_key=secret["private_key"], directory=dest.directory, host_key=host_key))
    if problem is not None:
        raise Invalid(_sftp_field(problem), problem)
    public["password_set"] = bool(secret["password"])
    public["private_key_set"] = bool(secret["private_key"])
    changed = public != old or not same_server or host_key != (
        stored["host_key"] if stored is not None else None) or (
        dest.password is not None or dest.private_key is not None)
    return _Destination(public, config.sealer.seal(json.dumps(secret)), host_key,
                        rev + bool(changed))


def _values(conn: Connection, partner_id: int, body: FeedIn, stored: Any,
            config: Settings, now: datetime) -> dict[str, Any]:
    if body.content == "catalog" and body.program_id is None:
        raise Invalid("program_id", "a catalog feed is one program's catalog: give its "
                      "program_id (a program you are contracted on)")
    if body.program_id is not None:
        _contracted(conn, partner_id, body.program_id, "program_id")
    schedule = _schedule(body)
    window_days = _window(body)
    columns = _check_columns(body.content, body.columns)
    dest = _destination(body, stored, config)
    same_schedule = stored is not None and stored["schedule"] == schedule and \
        stored["enabled"] and stored["next_run_at"] is not None
    next_at = None
    if body.enabled:
        next_at = stored["next_run_at"] if same_schedule else next_run(
            schedule_from_json(schedule), now)
    return {"name": body.name.strip(), "content": body.content,
            "program_id": body.program_id, "schedule": schedule,
            "window_days": window_days, "format": body.format, "gzip": body.gzip,
            "header": body.header, "columns": columns, "destination": dest.public,
            "destination_secret": dest.secret, "destination_rev": dest.rev,
            "host_key": dest.host_key, "enabled": body.enabled, "next_run_at": next_at,
            "updated_at": now}


# -- reads ---------------------------------------------------------------------------------

def unopenable(what: str) -> str:
    """What a partner is told when the stored password or key no longer opens (the
    operator changed POSTBACK_SECRET_KEY without keeping the old key)."""
    words = "private key" if what == "private_key" else "password"
    return (f"the stored {words} cannot be opened with this server's POSTBACK_SECRET_KEY; "
            "enter it again")


def _secret_flags(row: Any) -> tuple[bool, bool]:
    """Whether the feed stores a password, a private key: read from the destination as it
    was saved (``password_set`` / ``private_key_set`` beside the sealed secret), never by
    opening the secret, so a read never fails on a secret this server cannot open. A feed
    saved before the flags were kept, with a secret stored, counts as a password."""
    dest = dict(row["destination"])
    if not row["destination_secret"]:
        return False, False
    if "password_set" in dest or "private_key_set" in dest:
        return bool(dest.get("password_set")), bool(dest.get("private_key_set"))
    return True, False


def _destination_out(row: Any, config: Settings) -> dict[str, Any]:
    dest = dict(row["destination"])
    if dest["kind"] == "hosted":
        return {"kind": "hosted", "retention_days": config.feed_retention_days}
    if dest["kind"] == "email":
        return {"kind": "email", "to": list(dest["to"]), "attach": bool(dest["attach"])}
    password_set, private_key_set = _secret_flags(row)
    host_key = row["host_key"]
    try:
        fingerprint = host_key_fingerprint(host_key) if host_key else None
    except DestinationError:
        fingerprint = None
    return {"kind": "sftp", "host": dest["host"], "port": dest["port"],
            "username": dest["username"], "directory": dest["directory"],
            "password_set": password_set, "private_key_set": private_key_set,
            "host_key": host_key, "host_key_fingerprint": fingerprint}


def feed_out(row: Any, config: Settings) -> dict[str, Any]:
    """A feed as its partner reads it: the destination's secret never, only whether one is
    set (``password_set``, ``private_key_set``)."""
    days = row["window_days"]
    return {
        "id": row["id"], "name": row["name"], "content": row["content"],
        "program_id": row["program_id"], "schedule": dict(row["schedule"]),
        "window": None if row["content"] == "catalog" else
        ({"days": days} if days is not None else "since_last_run"),
        "format": row["format"], "gzip": row["gzip"], "header": row["header"],
        "columns": list(row["columns"]), "destination": _destination_out(row, config),
        "enabled": row["enabled"], "next_run_at": format_date(row["next_run_at"]) or None,
        "created_at": format_date(row["created_at"]),
        "updated_at": format_date(row["updated_at"]),
    }


def _own_feed(conn: Connection, partner_id: int, feed_id: int, lock: bool = False) -> Any:
    query = select(feed).where(feed.c.id == feed_id, feed.c.partner_id == partner_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound("feed")
    return row


def get_feed(conn: Connection, partner_id: int, feed_id: int, config: Settings
             ) -> dict[str, Any]:
    return feed_out(_own_feed(conn, partner_id, feed_id), config)


def list_feeds(conn: Connection, partner_id: int, config: Settings) -> list[dict[str, Any]]:
    """Every feed of the partner, oldest first."""
    return [feed_out(r, config) for r in conn.execute(
        select(feed).where(feed.c.partner_id == partner_id).order_by(feed.c.id)).mappings()]


# -- writes --------------------------------------------------------------------------------

def create_feed(conn: Connection, partner_id: int, body: FeedIn, config: Settings
                ) -> dict[str, Any]:
    """A new feed; its first scheduled run is the schedule's next slot from now."""
    now = datetime.now(UTC)
    values = _values(conn, partner_id, body, None, config, now)
    new_id = conn.execute(insert(feed).values(partner_id=partner_id, created_at=now,
                                              **values)).inserted_primary_key
    assert new_id is not None
    return get_feed(conn, partner_id, new_id[0], config)


def update_feed(conn: Connection, partner_id: int, feed_id: int, body: FeedIn,
                config: Settings) -> dict[str, Any]:
    """Replace a feed (PUT). The stored SFTP password or key is kept when none is given and
    the server (host, port, username) is the same; the pinned host key is kept unless
    ``host_key`` is given (``null`` clears it). A new schedule starts from now; turning a
    feed off cancels its runs that have not started."""
    stored = _own_feed(conn, partner_id, feed_id, lock=True)
    now = datetime.now(UTC)
    values = _values(conn, partner_id, body, stored, config, now)
    conn.execute(update(feed).where(feed.c.id == feed_id).values(**values))
    if not body.enabled and stored["enabled"]:
        conn.execute(update(feed_run).where(feed_run.c.feed_id == feed_id,
                                            feed_run.c.phase == "queued").values(
            status="failed", phase="failed", error="cancelled: the feed was turned off",
            finished_at=now))
    return get_feed(conn, partner_id, feed_id, config)


def delete_feed(conn: Connection, partner_id: int, feed_id: int) -> None:
    """Delete a feed, its runs and their files. A run under way stops at its next step."""
    _own_feed(conn, partner_id, feed_id, lock=True)
    runs = select(feed_run.c.id).where(feed_run.c.feed_id == feed_id).scalar_subquery()
    conn.execute(delete(feed_file_chunk).where(feed_file_chunk.c.run_id.in_(runs)))
    conn.execute(delete(feed_run).where(feed_run.c.feed_id == feed_id))
    conn.execute(delete(feed).where(feed.c.id == feed_id))


def request_run(conn: Connection, partner_id: int, feed_id: int) -> dict[str, Any]:
    """Run now. A run that has not started yet already makes the next file, so it is the
    answer (``created: false``: a second click queues nothing more); otherwise a new run is
    queued, which starts at once, or as soon as the run under way has finished (one run
    of a feed at a time)."""
    _own_feed(conn, partner_id, feed_id, lock=True)
    waiting = conn.execute(select(feed_run.c.id).where(
        feed_run.c.feed_id == feed_id, feed_run.c.phase == "queued")
        .order_by(feed_run.c.id).limit(1)).scalar()
    if waiting is not None:
        return {"run_id": waiting, "created": False}
    now = db_now(conn)
    new_id = conn.execute(insert(feed_run).values(
        feed_id=feed_id, trigger="manual", scheduled_for=None, status="queued",
        phase="queued", next_attempt_at=now, created_at=now)).inserted_primary_key
    assert new_id is not None
    return {"run_id": new_id[0], "created": True}


# -- runs ----------------------------------------------------------------------------------

def _has_file(row: Any) -> bool:
    return row["produced_at"] is not None and row["file_deleted_at"] is None


def run_out(row: Any, feed_row: Any, config: Settings, now: datetime | None = None
            ) -> dict[str, Any]:
    """A run as its partner reads it. ``download_url`` is a signed link, good for
    :data:`LINK_DAYS` days (never past the file's deletion), while the file is kept."""
    now = now or datetime.now(UTC)
    url = None
    if _has_file(row) and config.secret_key is not None:
        url = download_url(config, row["id"], min(now + timedelta(days=LINK_DAYS),
                                                  row["file_expires_at"]))
    waiting = row["status"] == "running" and row["lease_owner"] is None and \
        row["next_attempt_at"] > now
    return {
        "id": row["id"], "feed_id": row["feed_id"], "status": row["status"],
        "phase": row["phase"], "trigger": row["trigger"],
        "scheduled_for": format_date(row["scheduled_for"]) or None,
        "created_at": format_date(row["created_at"]),
        "started_at": format_date(row["started_at"]) or None,
        "produced_at": format_date(row["produced_at"]) or None,
        "finished_at": format_date(row["finished_at"]) or None,
        "rows": row["rows"], "bytes": row["bytes"], "duration_ms": row["duration_ms"],
        "file_name": row["file_name"],
        "content_type": content_type(feed_row["format"], feed_row["gzip"])
        if row["file_name"] else None,
        "file_expires_at": format_date(row["file_expires_at"]) or None,
        "file_deleted": row["file_deleted_at"] is not None,
        "download_url": url, "attempts": row["attempts"],
        "next_attempt_at": format_date(row["next_attempt_at"]) if waiting else None,
        "answer": row["answer"], "error": row["error"],
    }


def list_runs(conn: Connection, partner_id: int, feed_id: int, config: Settings,
              cursor: int | None = None, limit: int = 50) -> dict[str, Any]:
    """A feed's runs, newest first, a page at a time (``next_cursor``: pass as cursor)."""
    owner = _own_feed(conn, partner_id, feed_id)
    query = (select(feed_run).where(feed_run.c.feed_id == feed_id)
             .order_by(feed_run.c.id.desc()).limit(limit + 1))
    if cursor is not None:
        query = query.where(feed_run.c.id < cursor)
    rows = conn.execute(query).mappings().all()
    now = datetime.now(UTC)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [run_out(r, owner, config, now) for r in rows],
            "next_cursor": str(rows[-1]["id"]) if more and rows else None}


def _own_run(conn: Connection, partner_id: int, feed_id: int, run_id: int) -> tuple[Any, Any]:
    owner = _own_feed(conn, partner_id, feed_id)
    row = conn.execute(select(feed_run).where(feed_run.c.id == run_id,
                                              feed_run.c.feed_id == feed_id)).mappings().first()
    if row is None:
        raise NotFound("feed run")
    return row, owner


def get_run(conn: Connection, partner_id: int, feed_id: int, run_id: int,
            config: Settings) -> dict[str, Any]:
    row, owner = _own_run(conn, partner_id, feed_id, run_id)
    return run_out(row, owner, config)


# -- files ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredFile:
    """What a download sends: :func:`file_bytes` streams the chunks."""

    run_id: int
    file_name: str
    content_type: str
    size: int
    chunks: int


def _stored(row: Any, owner: Any) -> StoredFile:
    if row["file_deleted_at"] is not None:
        raise RuleViolation("file_deleted", f"this run's file was deleted on "
                            f"{format_date(row['file_deleted_at'])[:10]}: files are kept for "
                            "the retention period (POSTBACK_FEED_RETENTION_DAYS)", 410)
    if row["produced_at"] is None:
        raise RuleViolation("file_not_ready", f"this run has no file yet (it is "
                            f"{row['status']}); try again when its status is succeeded", 409)
    return StoredFile(row["id"], row["file_name"], content_type(owner["format"], owner["gzip"]),
                      row["bytes"], row["file_chunks"])


def run_file(conn: Connection, partner_id: int, feed_id: int, run_id: int) -> StoredFile:
    """A run's file, for its partner's key: 404 for another partner's, 409 before it is
    made, 410 once retention has deleted it."""
    row, owner = _own_run(conn, partner_id, feed_id, run_id)
    return _stored(row, owner)


def file_bytes(engine: Engine, stored: StoredFile) -> Iterator[bytes]:
    """The file's bytes, a chunk (1 MiB) per short read: memory stays flat whatever the
    size. Ends early if retention deletes the file meanwhile."""
    for seq in range(stored.chunks):
        with reader(engine).connect() as conn:
            data = conn.execute(select(feed_file_chunk.c.data).where(
                feed_file_chunk.c.run_id == stored.run_id,
                feed_file_chunk.c.seq == seq)).scalar()
        if data is None:
            return
        yield bytes(data)


# -- signed links ----------------------------------------------------------------------------

_LINK = re.compile(r"([0-9]{1,10})\.([0-9]{1,11})\.([A-Za-z0-9_-]{43})", re.ASCII)


def _link_keys(config: Settings) -> list[bytes]:
    assert config.secret_key is not None
    return [hashlib.sha256(b"postback feed file link\0" + k.strip().encode()).digest()
            for k in config.secret_key.split(",") if k.strip()]


def _sign(key: bytes, run_id: int, expires: int) -> str:
    mac = hmac.new(key, f"feed-file:{run_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def link_token(config: Settings, run_id: int, expires: datetime) -> str:
    """``run.expires.signature``: HMAC-SHA256 under a key derived from
    ``POSTBACK_SECRET_KEY`` (its first key signs; every configured key verifies)."""
    at = int(expires.timestamp())
    return f"{run_id}.{at}.{_sign(_link_keys(config)[0], run_id, at)}"


def download_url(config: Settings, run_id: int, expires: datetime) -> str:
    return f"{config.public_url}/v1/feed-files/{link_token(config, run_id, expires)}"


def linked_file(conn: Connection, token: str, config: Settings) -> StoredFile:
    """The file a signed link opens: 404 for a token we did not sign (changed by a single
    character), 410 once it has expired or the file is deleted."""
    found = _LINK.fullmatch(token)
    if found is None or config.secret_key is None:
        raise NotFound("feed file")
    run_id, expires, signature = int(found[1]), int(found[2]), found[3]
    if not any(hmac.compare_digest(_sign(k, run_id, expires), signature)
               for k in _link_keys(config)):
        raise NotFound("feed file")
    if expires < datetime.now(UTC).timestamp():
        raise RuleViolation("link_expired", "this download link has expired; the run's "
                            "page (GET /v1/feeds/{id}/runs/{run_id}) gives a new one while "
                            "the file is kept", 410)
    row = conn.execute(select(feed_run).where(feed_run.c.id == run_id)).mappings().first()
    if row is None:
        raise NotFound("feed file")
    owner = conn.execute(select(feed).where(feed.c.id == row["feed_id"])).mappings().one()
    return _stored(row, owner)


# -- test connection ---------------------------------------------------------------------------

class UnopenableSecret(Exception):
    """The feed's stored password or key does not open with this server's key: the run
    (or the test) fails with this reason; the partner enters the secret again."""


def sftp_target(row: Any, config: Settings) -> SftpTarget:
    """The feed's SFTP target with its secret opened (never shown, never logged);
    :class:`UnopenableSecret` if it cannot be opened."""
    dest = dict(row["destination"])
    try:
        secret = json.loads(config.sealer.open(row["destination_secret"]))
    except SealError:
        password, key = _secret_flags(row)
        raise UnopenableSecret(unopenable("private_key" if key and not password
                                          else "password")) from None
    return SftpTarget(host=dest["host"], port=dest["port"], username=dest["username"],
                      password=secret.get("password"), private_key=secret.get("private_key"),
                      directory=dest["directory"], host_key=row["host_key"])


def pin_host_key(conn: Connection, feed_id: int, rev: int, host_key: str | None) -> None:
    """Pin the key the server presented, if none is pinned and the destination is still the
    one that was connected to."""
    if host_key:
        conn.execute(update(feed).where(feed.c.id == feed_id, feed.c.host_key.is_(None),
                                        feed.c.destination_rev == rev).values(host_key=host_key))


def test_destination(engine: Engine, partner_id: int, feed_id: int, config: Settings
                     ) -> dict[str, Any]:
    """Connect to the feed's SFTP server now, log in and write and remove a test file; the
    host key is pinned if none is. No transaction is held while connecting."""
    with reader(engine).begin() as conn:
        row = _own_feed(conn, partner_id, feed_id)
    if dict(row["destination"])["kind"] != "sftp":
        raise Invalid("destination.kind", "only an SFTP destination can be tested: a hosted "
                      "feed needs no connection, and an email feed's test is a run")
    try:
        done = probe_sftp(sftp_target(row, config), config)
    except UnopenableSecret as exc:
        return {"ok": False, "answer": str(exc), "host_key": row["host_key"]}
    except DestinationError as exc:
        return {"ok": False, "answer": exc.reason, "host_key": row["host_key"]}
    with engine.begin() as conn:
        pin_host_key(conn, feed_id, row["destination_rev"], done.host_key)
        pinned = conn.execute(select(feed.c.host_key).where(feed.c.id == feed_id)).scalar()
    return {"ok": True, "answer": done.answer, "host_key": pinned}
