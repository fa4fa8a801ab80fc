"""The database side of the engine: claim due deliveries under a lease, record results.

A claim moves ``next_attempt_at`` to the end of the lease and stamps the worker's name; a
worker that dies lets its leases go, to be taken up by the others as soon as it stops
heartbeating (``liveness``) or, at the latest, when the lease runs out. That is what makes
delivery at-least-once. On PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED`` so any
number of workers share the table; on SQLite the claim is one write transaction.

Every row is untrusted: one that cannot become a request (a secret that will not open, a
value that does not read) fails alone (``Claim.broken``); a batch of results whose write
fails is split until the result that fails it is found, which alone is recorded as failed
(``record_isolating``); a delivery claimed again and again without a recorded result (it
kills its worker, say) is stopped after ``MAX_OPEN_CLAIMS``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InternalError, ProgrammingError

from postback.core.responses import stored_body
from postback.core.routing import PRODUCT
from postback.core.signing import SigningKey, secret_key
from postback.core.urls import wire_url
from postback.core.values import utc
from postback.db.schema import (
    FIRST_DUE,
    delivery,
    delivery_attempt,
    notification_setting,
    rate_bucket,
)
from postback.sealing import Sealer


# Job, Result and http.Response are made once per postback: plain slotted classes, which
# build about five times faster than frozen dataclasses (no object.__setattr__ per field)
@dataclass(slots=True)
class Job:
    """One claimed delivery: everything needed to send it once."""

    id: int
    event_id: str
    setting_id: int | None
    method: str
    url: str
    headers: dict[str, str]
    secret_headers: frozenset[str]
    success_response: str | None
    body: bytes | None
    attempt: int
    failures: int
    error_response: str | None = None
    signing_keys: tuple[SigningKey, ...] = ()
    #: a catalog change's postback (claimed only into the places other work leaves)
    catalog: bool = False

    @property
    def signed_content(self) -> bytes:
        """What the signature covers: the body, or for a GET the full URL as it goes on the
        wire (``wire_url``: byte for byte what the receiver is sent)."""
        if self.body is not None:
            return self.body
        try:
            return wire_url(self.url).encode("ascii")
        except ValueError:  # it will not be sent (invalid_url): nothing to match
            return self.url.encode("utf-8")


@dataclass(slots=True)
class Result:
    """One attempt's outcome, ready to be written."""

    job: Job
    started_at: datetime
    request_headers: dict[str, str]
    status_code: int | None
    response_headers: dict[str, str] | None
    response_body: bytes | None
    latency_ms: float
    error_class: str | None
    error_message: str | None
    outcome: str  # success | retry | permanent_failure
    next_attempt_at: datetime | None  # for a retry


@dataclass(frozen=True)
class Broken:
    """A claimed delivery that cannot be sent: it fails alone, recorded like an attempt."""

    job: Job
    reason: str
    permanent: bool


@dataclass(frozen=True)
class Claim:
    jobs: list[Job]
    #: seconds until deliveries held back by a Maximum Requests per second come due
    wake_in: float | None = None
    broken: list[Broken] = field(default_factory=list)


#: claims without a recorded attempt after which a delivery is stopped (each such claim
#: ended with its worker dead or its result unwritable; it may have been sent each time)
MAX_OPEN_CLAIMS = 5
SUSPECT_CLAIMS = 2


def bucket_capacity(rate: float) -> float:
    """Tokens a rate-limited endpoint may bank: a tenth of a second's worth (at least one),
    so no one-second window sees more than about 1.1 x the rate."""
    return max(1.0, rate / 10)


def _take_tokens(conn: Connection, setting_id: int, rate: float, wanted: int,
                 now: float) -> int:
    """Take up to ``wanted`` tokens from the endpoint's shared bucket (row-locked)."""
    row = conn.execute(select(rate_bucket).where(rate_bucket.c.setting_id == setting_id)
                       .with_for_update()).first()
    capacity = bucket_capacity(rate)
    tokens = capacity if row is None else min(capacity,
                                              row.tokens + max(0.0, now - row.updated) * rate)
    take = min(wanted, int(tokens))
    values = {"tokens": tokens - take, "updated": now}
    if row is None:
        conn.execute(insert(rate_bucket).values(setting_id=setting_id, **values))
    else:
        conn.execute(update(rate_bucket).where(rate_bucket.c.setting_id == setting_id)
                     .values(**values))
    return take


def _choose(candidates: Sequence[Any], limit: int, room: Mapping[int, int],
            default_room: int) -> list[int]:
    """Up to ``limit`` ids, oldest first, no endpoint given more than it has room for. A
    suspect (claimed twice already with no recorded result: it may kill its worker) is
    claimed alone, so it takes no innocent deliveries down with it."""
    left = dict(room)
    chosen: list[int] = []
    for row in candidates:
        if row.open_claims >= SUSPECT_CLAIMS:
            if not chosen:
                return [row.id]
            continue
        key = row.setting_id
        if key is not None:
            free = left.get(key, default_room)
            if free <= 0:
                continue
            left[key] = free - 1
        chosen.append(row.id)
        if len(chosen) == limit:
            break
    return chosen


def claim(engine: Engine, worker: str, limit: int, now: datetime, lease_seconds: float,
          room: Mapping[int, int] | None = None, default_room: int = 1 << 30,
          sealer: Sealer | None = None, catalog_limit: int | None = None,
          first: bool = True) -> Claim:
    """Lease up to ``limit`` due deliveries to ``worker``, oldest due first, giving no
    endpoint more than ``room`` (its free places in this worker; ``default_room`` for one
    it holds nothing of).

    Candidates are read (row-locked, skipping rows other workers hold) and only the chosen
    ones are written, so a busy endpoint costs no writes for what it cannot take now.
    Endpoints with a Maximum Requests per second get only what their shared bucket allows;
    the rest is handed back at once, spaced at the endpoint's rate, with no attempt charged.
    Held deliveries (``status = 'held'``: their setting is off) are never claimed. Catalog
    changes' postbacks are taken only when nothing else is due: a bulk change's million
    never holds up the actions and inquiries reported after it, and they fill whatever
    the others leave of ``limit`` (an endpoint without room, a rate limit), so they are not
    starved by due work this worker cannot take; at most ``catalog_limit`` of them (the
    worker keeps places that only other work may take, so that an action reported while a
    million catalog postbacks drain finds room at once). ``first=False`` takes catalog
    postbacks only: an engine claims them in a lane of their own, so that an action's
    postback never waits behind a claim of hundreds of them.
    """
    room = room or {}
    full = [key for key, free in room.items() if free <= 0]

    def candidates(ordinary: bool, up_to: int) -> Any:
        query = (select(delivery.c.id, delivery.c.setting_id, delivery.c.open_claims)
                 .where(delivery.c.status == "pending", delivery.c.next_attempt_at <= now,
                        text(FIRST_DUE) if ordinary else delivery.c.notification_type == PRODUCT)
                 .order_by(delivery.c.next_attempt_at).limit(up_to)
                 .with_for_update(skip_locked=True))
        if full:
            query = query.where(or_(delivery.c.setting_id.is_(None),
                                    delivery.c.setting_id.not_in(full)))
        return query

    wake_in: float | None = None
    with engine.begin() as conn:
        found = conn.execute(candidates(True, limit * 4)).all() if first else []
        chosen = _choose(found, limit, room, default_room)
        alone = len(chosen) == 1 and any(  # a suspect, claimed by itself
            r.id == chosen[0] and r.open_claims >= SUSPECT_CLAIMS for r in found)
        rest = limit - len(chosen) if catalog_limit is None else min(
            limit - len(chosen), catalog_limit)
        catalog: set[int] = set()
        if rest > 0 and not alone:  # catalog changes' postbacks fill the rest
            more = conn.execute(candidates(False, rest * 4)).all()
            if chosen:
                more = [r for r in more if r.open_claims < SUSPECT_CLAIMS]
            more_chosen = _choose(more, rest, room, default_room)
            catalog.update(more_chosen)
            chosen += more_chosen
        rows = sorted(conn.execute(
            update(delivery).where(delivery.c.id.in_(chosen))
            .values(lease_owner=worker, next_attempt_at=now + timedelta(seconds=lease_seconds),
                    open_claims=delivery.c.open_claims + 1)
            .returning(delivery.c.id, delivery.c.event_id, delivery.c.setting_id,
                       delivery.c.method, delivery.c.url,
                       # as text: a row whose JSON does not parse fails alone, in _job
                       type_coerce(delivery.c.headers, Text).label("headers"),
                       delivery.c.body, delivery.c.attempt_count, delivery.c.failures,
                       delivery.c.open_claims)).all(),
            key=lambda r: r.id) if chosen else []
        setting_ids = {r.setting_id for r in rows if r.setting_id is not None}
        settings: dict[int, Any] = {}
        if setting_ids:
            settings = {s.id: s for s in conn.execute(
                select(notification_setting.c.id,
                       type_coerce(notification_setting.c.headers, Text).label("headers"),
                       notification_setting.c.enabled, notification_setting.c.disabled_at,
                       notification_setting.c.success_response,
                       notification_setting.c.error_response,
                       notification_setting.c.max_requests_per_second,
                       notification_setting.c.signing_secret,
                       notification_setting.c.previous_signing_secret,
                       notification_setting.c.previous_secret_expires_at)
                .where(notification_setting.c.id.in_(setting_ids)))}
        # queued by a commit that raced the one turning its setting off: held, not sent
        off = {sid for sid, setting in settings.items()
               if not setting.enabled or setting.disabled_at is not None}
        if off:
            conn.execute(update(delivery).where(
                delivery.c.id.in_([r.id for r in rows if r.setting_id in off]))
                .values(status="held", lease_owner=None, next_attempt_at=now,
                        open_claims=delivery.c.open_claims - 1))
            rows = [r for r in rows if r.setting_id not in off]
            settings = {sid: st for sid, st in settings.items() if sid not in off}
        held: list[dict[str, Any]] = []
        for sid, setting in settings.items():
            rate = setting.max_requests_per_second
            if not rate:
                continue
            mine = [r for r in rows if r.setting_id == sid]
            take = _take_tokens(conn, sid, rate, len(mine), now.timestamp())
            for i, r in enumerate(mine[take:]):
                held.append({"b_id": r.id, "b_next": now + timedelta(seconds=(i + 1) / rate)})
            if len(mine) > take:
                wake_in = min(wake_in or 1 / rate, 1 / rate)
        if held:
            conn.execute(_hold, held)
            held_ids = {h["b_id"] for h in held}
            rows = [r for r in rows if r.id not in held_ids]
    # what depends only on the setting (opened headers, decoded keys) is resolved once
    resolved: dict[int, _Resolved | str] = {}
    for sid, setting in settings.items():
        try:
            resolved[sid] = _resolve(setting, sealer, now)
        except Exception as exc:  # a sealed value this server's key cannot open
            resolved[sid] = _unopenable(exc)
    jobs: list[Job] = []
    broken: list[Broken] = []
    for r in rows:
        res = resolved.get(r.setting_id, _NONE) if r.setting_id is not None else _NONE
        try:
            job = _job(r, res if isinstance(res, _Resolved) else _NONE, r.id in catalog)
        except Exception as exc:  # a row that does not read: it fails alone
            skeleton = _skeleton(r)
            if skeleton is not None:
                broken.append(Broken(skeleton, f"this delivery's stored request cannot be "
                                     f"read ({type(exc).__name__}); it was not sent", True))
            else:
                log.error("delivery %s cannot be read at all; its lease runs out", r.id)
            continue
        if r.open_claims > MAX_OPEN_CLAIMS:
            broken.append(Broken(job, (
                f"stopped after {r.open_claims - 1} tries whose result was never recorded "
                "(each ended with its worker stopping, or the result could not be written); "
                "it may have reached the partner: check before you resend it"), True))
        elif isinstance(res, str):
            broken.append(Broken(job, res, False))
        else:
            jobs.append(job)
    return Claim(jobs, wake_in, broken)


def _job(r: Any, res: _Resolved, catalog: bool = False) -> Job:
    # a delivery's own headers are nearly always none: "{}" needs no parsing
    headers = {} if r.headers == "{}" else _json_object(r.headers)
    if not isinstance(r.body, str | None) or not all(
            isinstance(v, str) for v in headers.values()):
        raise TypeError("headers or body of the wrong type")
    return Job(
        id=r.id, event_id=r.event_id, setting_id=r.setting_id, method=r.method, url=r.url,
        headers={**headers, **res.headers} if headers else res.headers.copy(),
        secret_headers=res.secret,
        success_response=res.success_response, error_response=res.error_response,
        body=r.body.encode("utf-8") if r.body is not None else None,
        attempt=r.attempt_count + 1, failures=r.failures, signing_keys=res.keys,
        catalog=catalog,
    )


def _json_object(value: Any) -> dict[str, Any]:
    """A JSON column read as it is stored (text on SQLite, where nothing checked it;
    already parsed by psycopg on PostgreSQL, which did)."""
    parsed = json.loads(value) if isinstance(value, str | bytes) else value
    if not isinstance(parsed, dict):
        raise TypeError("not a JSON object")
    return parsed


def _skeleton(r: Any) -> Job | None:
    """Enough of a row that does not read to record its failure (None: not even that)."""
    try:
        return Job(id=r.id, event_id=str(r.event_id), setting_id=r.setting_id,
                   method=str(r.method)[:4], url=str(r.url), headers={},
                   secret_headers=frozenset(), success_response=None, body=None,
                   attempt=int(r.attempt_count or 0) + 1, failures=int(r.failures or 0))
    except Exception:
        return None


def _unopenable(exc: Exception) -> str:
    return ("this postback's signing secret or a custom header value cannot be opened with "
            "this server's POSTBACK_SECRET_KEY "
            f"({type(exc).__name__}); nothing was sent. Give every worker the key that "
            "sealed it, or save the setting again to enter the header values anew")


@dataclass(frozen=True)
class _Resolved:
    headers: dict[str, str]
    success_response: str | None
    error_response: str | None
    keys: tuple[SigningKey, ...]
    secret: frozenset[str] = frozenset()  # the headers' names: masked in every log


_NONE = _Resolved({}, None, None, ())


def _resolve(setting: Any, sealer: Sealer | None, now: datetime) -> _Resolved:
    headers = _json_object(setting.headers)
    if sealer is None:
        return _Resolved(headers, setting.success_response, setting.error_response, (),
                         frozenset(headers))
    return _Resolved(
        sealer.open_values(headers), setting.success_response, setting.error_response,
        signing_keys(setting.signing_secret, setting.previous_signing_secret,
                     setting.previous_secret_expires_at, sealer, now), frozenset(headers))


def signing_keys(secret: str | None, previous: str | None, previous_expires: datetime | None,
                 sealer: Sealer, now: datetime) -> tuple[SigningKey, ...]:
    """The keys that sign a setting's postbacks (sealed secrets in): its secret, and during
    a rotation's grace period the previous one too."""
    if not secret:
        return ()
    keys = [secret_key(sealer.open(secret))]
    if previous and previous_expires is not None and previous_expires > now:
        keys.append(secret_key(sealer.open(previous)))
    return tuple(keys)


_hold = (update(delivery).where(delivery.c.id == bindparam("b_id"))
         .values(lease_owner=None, next_attempt_at=bindparam("b_next"),
                 open_claims=delivery.c.open_claims - 1))


def release(engine: Engine, worker: str, ids: Sequence[int], now: datetime) -> None:
    """Hand claimed but unsent deliveries back, due at once (no attempt is charged, and
    the claim does not count; a held one stays held)."""
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(update(delivery).where(delivery.c.id.in_(ids),
                                            delivery.c.lease_owner == worker)
                     .values(lease_owner=None, next_attempt_at=now,
                             open_claims=delivery.c.open_claims - 1))


@dataclass(frozen=True)
class DisablePolicy:
    """An endpoint that fails every delivery for ``hours`` and at least ``failures`` times in
    a row is disabled, with the reason recorded for the partner to read."""

    hours: float = 72.0
    failures: int = 10


_healthy = (update(notification_setting).where(notification_setting.c.id == bindparam("b_id"))
            .values(failing_since=None, consecutive_failures=0))
_failing = (update(notification_setting).where(notification_setting.c.id == bindparam("b_id"))
            .values(failing_since=func.coalesce(notification_setting.c.failing_since,
                                                bindparam("b_now")),
                    consecutive_failures=notification_setting.c.consecutive_failures
                    + bindparam("b_n")))


def _endpoint_health(conn: Connection, results: Sequence[Result], now: datetime,
                     policy: DisablePolicy) -> None:
    failed: dict[int, int] = {}
    healthy: set[int] = set()
    for r in results:
        if r.job.setting_id is None or r.error_class == "internal":  # ours, not theirs
            continue
        if r.outcome == "success":
            healthy.add(r.job.setting_id)
        else:
            failed[r.job.setting_id] = failed.get(r.job.setting_id, 0) + 1
    if healthy:
        conn.execute(_healthy, [{"b_id": sid} for sid in sorted(healthy)])
    failing = [{"b_id": sid, "b_now": now, "b_n": n} for sid, n in sorted(failed.items())
               if sid not in healthy]
    if not failing:
        return
    conn.execute(_failing, failing)
    cutoff = now - timedelta(hours=policy.hours)
    disabled = conn.execute(update(notification_setting).where(
        notification_setting.c.id.in_([f["b_id"] for f in failing]),
        notification_setting.c.disabled_at.is_(None),
        notification_setting.c.failing_since <= cutoff,
        notification_setting.c.consecutive_failures >= policy.failures,
    ).values(disabled_at=now, disabled_reason=(
        f"disabled automatically: every delivery failed for {policy.hours:g} hours "
        f"({policy.failures} or more failures in a row); fix the endpoint, then save the "
        "setting again to re-enable it")).returning(notification_setting.c.id)).scalars().all()
    hold(conn, disabled)


def hold(conn: Connection, setting_ids: Sequence[int]) -> int:
    """A setting was turned off (by its partner or automatically): from this commit its
    queued deliveries are held, never claimed. One on the wire right now keeps its lease
    and is recorded when it returns; a retry it earns stays held."""
    if not setting_ids:
        return 0
    return conn.execute(update(delivery).where(
        delivery.c.setting_id.in_(setting_ids), delivery.c.status == "pending")
        .values(status="held")).rowcount


def resume(conn: Connection, setting_ids: Sequence[int], now: datetime) -> int:
    """A setting was turned back on: its held deliveries are due at once (one still leased
    by a worker sending it comes back when that worker records it or its lease ends)."""
    if not setting_ids:
        return 0
    base = update(delivery).where(delivery.c.setting_id.in_(setting_ids),
                                  delivery.c.status == "held")
    n = conn.execute(base.where(delivery.c.lease_owner.is_(None))
                     .values(status="pending", next_attempt_at=now, open_claims=0)).rowcount
    return n + conn.execute(base.values(status="pending")).rowcount


def discard_held(conn: Connection, setting_ids: Sequence[int], now: datetime) -> int:
    """The partner gives up a turned-off setting's held deliveries: they end as failed."""
    if not setting_ids:
        return 0
    return conn.execute(update(delivery).where(
        delivery.c.setting_id.in_(setting_ids), delivery.c.status == "held")
        .values(status="failed", last_error="discarded", completed_at=now,
                lease_owner=None)).rowcount


class _Writes:
    """The two statements that record a batch, as driver SQL for one dialect, with rows
    passed as plain tuples: SQLAlchemy's per-row parameter processing (JSON and datetime
    binds, dict building) cost about as much as the database's own work, and it runs
    under the GIL beside the event loop. Values are converted as SQLAlchemy stores them:
    JSON as text, times as UTC (naive ``YYYY-MM-DD HH:MM:SS.ffffff`` text on SQLite)."""

    ATTEMPT = ("delivery_id", "number", "started_at", "method", "url", "request_headers",
               "status_code", "response_headers", "response_body", "response_body_raw",
               "latency_ms",
               "error_class", "error_message", "outcome", "worker")
    JSON = frozenset({"request_headers", "response_headers"})

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        mark = "?" if self.sqlite else "%s"
        values = ", ".join(mark + ("::json" if c in self.JSON and not self.sqlite else "")
                           for c in self.ATTEMPT)
        self.insert_attempts = (f"INSERT INTO delivery_attempt ({', '.join(self.ATTEMPT)}) "
                                f"VALUES ({values})")
        # a retry earned by a delivery whose setting was turned off meanwhile stays held
        self.finish = (f"UPDATE delivery SET status = CASE WHEN status = 'held' AND "
                       f"{mark} = 'pending' THEN 'held' ELSE {mark} END, "
                       f"attempt_count = {mark}, failures = {mark}, next_attempt_at = {mark}, "
                       f"lease_owner = NULL, open_claims = 0, last_status_code = {mark}, "
                       f"last_error = {mark}, completed_at = {mark} "
                       # ours, or handed back (by a reclaim, a discard) but not yet taken
                       # and attempted by another: the attempt count fences it
                       f"WHERE id = {mark} AND (lease_owner = {mark} OR lease_owner IS NULL) "
                       f"AND attempt_count = {mark}")

    def time(self, value: datetime | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")


# the column list is ours, so a schema change that it misses fails at import, not quietly
assert set(_Writes.ATTEMPT) == {c.name for c in delivery_attempt.columns} - {"id"}
log = logging.getLogger("postback.engine")
_WRITES = {name: _Writes(name) for name in ("sqlite", "postgresql")}
_STATUS = {"success": "succeeded", "retry": "pending"}


def record(engine: Engine, worker: str, results: Sequence[Result], now: datetime,
           policy: DisablePolicy | None = None) -> None:
    """Write a batch of attempts and move each delivery on, in one transaction; track each
    endpoint's health and disable one that has failed for too long."""
    if not results:
        return
    writes = _WRITES[engine.dialect.name]
    stamp, dumps = writes.time, json.dumps
    done_at = stamp(now)
    attempts: list[tuple[Any, ...]] = []
    finishes: list[tuple[Any, ...]] = []
    for r in results:
        job = r.job
        attempts.append((
            job.id, job.attempt, stamp(r.started_at), job.method, job.url,
            dumps(r.request_headers), r.status_code,
            None if r.response_headers is None else dumps(r.response_headers),
            *stored_body(r.response_body), r.latency_ms, r.error_class, r.error_message,
            r.outcome, worker))
        retry = r.outcome == "retry"
        status = _STATUS.get(r.outcome, "failed")
        finishes.append((
            status, status, job.attempt,
            job.failures + (0 if r.outcome == "success" else 1),
            stamp(r.next_attempt_at) if r.next_attempt_at is not None else done_at,
            r.status_code, r.error_class, None if retry else done_at, job.id, worker,
            job.attempt - 1))
    with engine.begin() as conn:
        # settings before deliveries, each in id order: the order saving a setting locks
        # them in, so concurrent records and saves cannot deadlock
        _endpoint_health(conn, results, now, policy or DisablePolicy())
        conn.exec_driver_sql(writes.insert_attempts, attempts)
        conn.exec_driver_sql(writes.finish, finishes)


def record_isolating(engine: Engine, worker: str, results: Sequence[Result], now: datetime,
                     policy: DisablePolicy | None = None, isolate: bool = False
                     ) -> list[Result]:
    """``record``, where no result can fail the others: a batch whose write fails because
    of what it holds (a value the database refuses: ``data_error``) is split until the
    result that fails it is found, and that one delivery alone is recorded as failed with
    the reason. A failure that may pass (the database is down, busy, deadlocked, timed
    out) splits nothing: everything is returned, to be tried again; with ``isolate`` (the
    same batch failed that way already) it is split all the same, so a row that always
    fails that way cannot hold up the others for ever."""
    if not results:
        return []
    try:
        record(engine, worker, results, now, policy)
        return []
    except Exception as exc:
        if not (data_error(exc) or isolate) or not _answers(engine):
            return list(results)
        if len(results) == 1:
            log.error("delivery %s: its attempt could not be recorded: %s",
                      results[0].job.id, _first_line(exc))
            return _record_unstorable(engine, worker, results[0], now, exc)
    half = len(results) // 2
    return (record_isolating(engine, worker, results[:half], now, policy, isolate)
            + record_isolating(engine, worker, results[half:], now, policy, isolate))


def data_error(exc: BaseException) -> bool:
    """Whether a failed write failed because of the values written (so writing them again
    fails again), not because of the database's state."""
    if isinstance(exc, DBAPIError):
        return not exc.connection_invalidated and isinstance(
            exc, DataError | IntegrityError | InternalError | ProgrammingError)
    return isinstance(exc, TypeError | ValueError | OverflowError)


def _answers(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except Exception:
        return False


def _first_line(exc: BaseException) -> str:
    """What went wrong, without the statement and its parameters (which hold the response
    and the request)."""
    cause = getattr(exc, "orig", None) or exc
    text = (str(cause).strip().splitlines() or [""])[0][:300]
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _record_unstorable(engine: Engine, worker: str, result: Result, now: datetime,
                       exc: BaseException) -> list[Result]:
    """The attempt, without what could not be stored, as a failure a person can act on."""
    status = result.status_code
    answered = (f"the partner's server answered HTTP {status}" if status is not None
                else f"the attempt ended with {result.error_class or 'no answer'}")
    plain = Result(
        job=result.job, started_at=result.started_at, request_headers={},
        status_code=None, response_headers=None, response_body=None,
        latency_ms=result.latency_ms, error_class="internal",
        error_message=(f"this attempt's result could not be stored ({_first_line(exc)}); "
                       f"{answered}. It is marked failed so that it is not sent again "
                       "unnoticed: resend it once the cause is fixed"),
        outcome="permanent_failure", next_attempt_at=None)
    try:
        record(engine, worker, [plain], now)
        return []
    except Exception as again:
        if not _answers(engine):
            return [result]
        log.error("delivery %s: not even its failure could be recorded (%s); marking it "
                  "failed", result.job.id, _first_line(again))
    try:
        with engine.begin() as conn:
            conn.execute(update(delivery).where(
                delivery.c.id == result.job.id, delivery.c.status.in_(("pending", "held")),
                or_(delivery.c.lease_owner == worker, delivery.c.lease_owner.is_(None)))
                .values(status="failed", last_error="internal", completed_at=now,
                        lease_owner=None, open_claims=0))
    except Exception:
        log.exception("delivery %s: could not be marked failed; its claim count stops it",
                      result.job.id)
    return []
