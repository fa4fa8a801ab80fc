"""The tables. SQLAlchemy Core (no ORM): the hot paths are batched statements."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)

from postback.core.routing import PRODUCT
from postback.core.values import utc


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return utc(value)


Money = BigInteger  # cents
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

operator_credential = Table(
    "operator_credential", metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

brand = Table(
    "brand", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

partner = Table(
    "partner", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("partner_type", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

api_key = Table(
    "api_key", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_type", String(10), nullable=False),
    Column("account_id", Integer, nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# A signed-in browser: the cookie holds a random token whose hash is stored here (as for API
# keys), so a database leak opens no session. A session made with an API key ends when the
# key is revoked, and an operator session when its operator token is no longer accepted.
web_session = Table(
    "web_session", metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("role", String(10), nullable=False),
    Column("account_id", Integer),
    Column("api_key_id", Integer, ForeignKey("api_key.id")),
    # an operator session: the hash of the operator token it signed in with
    Column("operator_token_hash", String(64)),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # what a form's POST leaves for the page it redirects to, shown once (JSON; secrets
    # in it sealed): services/web_sessions.py add_flash, take_flash
    Column("flash", Text),
)

program = Table(
    "program", metadata,
    Column("id", Integer, primary_key=True),
    Column("brand_id", Integer, ForeignKey("brand.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

event_type = Table(
    "event_type", metadata,
    Column("id", Integer, primary_key=True),
    Column("program_id", Integer, ForeignKey("program.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("action_type", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

contract = Table(
    "contract", metadata,
    Column("id", Integer, primary_key=True),
    Column("program_id", Integer, ForeignKey("program.id"), nullable=False),
    Column("partner_id", Integer, ForeignKey("partner.id"), nullable=False, index=True),
    Column("event_type_ids", JSON, nullable=False),
    Column("locking_rule", String(30), nullable=False),
    Column("locking_days", Integer, nullable=False),
    Column("clearing_rule", String(40), nullable=False),
    Column("clearing_days", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "partner_id"),
)

action = Table(
    "action", metadata,
    Column("id", Integer, primary_key=True),
    Column("brand_id", Integer, ForeignKey("brand.id"), nullable=False, index=True),
    Column("program_id", Integer, ForeignKey("program.id"), nullable=False),
    Column("event_type_id", Integer, ForeignKey("event_type.id"), nullable=False),
    Column("partner_id", Integer, ForeignKey("partner.id"), nullable=False, index=True),
    Column("oid", String(255), nullable=False),
    Column("status", String(10), nullable=False),
    Column("status_detail", String(40), nullable=False),
    Column("amount", Money, nullable=False),
    Column("payout", Money, nullable=False),
    Column("original_amount", Money, nullable=False),
    Column("original_payout", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("event_date", UTCDateTime, nullable=False),
    Column("creation_date", UTCDateTime, nullable=False),
    Column("locking_date", UTCDateTime),
    Column("clearing_date", UTCDateTime),
    Column("locked_at", UTCDateTime),
    Column("cleared_at", UTCDateTime),
    Column("sequence", Integer, nullable=False),
    Column("referring_type", String(40)),
    Column("referring_date", UTCDateTime),
    Column("referring_domain", String(255)),
    Column("sub_id1", Text),
    Column("sub_id2", Text),
    Column("sub_id3", Text),
    Column("shared_id", Text),
    Column("promo_code", String(255)),
    Column("ad_id", String(64)),
    Column("event_code", String(255)),
    Column("customer_id", String(255)),
    Column("customer_status", String(20)),
    Column("customer_area", String(64)),
    Column("customer_city", String(255)),
    Column("customer_region", String(255)),
    Column("customer_country", String(2)),
    Column("items", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("event_type_id", "oid"),
    Index("ix_action_due_lock", "status", "locking_date"),
)

action_update = Table(
    "action_update", metadata,
    Column("id", Integer, primary_key=True),
    Column("action_id", Integer, ForeignKey("action.id"), nullable=False, index=True),
    Column("sequence", Integer, nullable=False),
    Column("trigger", String(20), nullable=False),
    Column("reason", String(40)),
    Column("status", String(10), nullable=False),
    Column("amount", Money, nullable=False),
    Column("payout", Money, nullable=False),
    Column("delta_amount", Money, nullable=False),
    Column("delta_payout", Money, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

notification_setting = Table(
    "notification_setting", metadata,
    Column("id", Integer, primary_key=True),
    Column("partner_id", Integer, ForeignKey("partner.id"), nullable=False),
    Column("type", String(40), nullable=False),
    # global: the partner's one setting per type; event_level: (program, event type),
    # TRACKED only; brand: created by a brand for this partner (read-only to the partner)
    Column("scope", String(12), nullable=False, server_default="global"),
    Column("program_id", Integer, ForeignKey("program.id")),
    Column("event_type_id", Integer, ForeignKey("event_type.id")),
    Column("brand_id", Integer, ForeignKey("brand.id")),
    Column("url", Text, nullable=False),
    Column("method", String(4), nullable=False),
    Column("body_format", String(4), nullable=False),
    Column("body", Text, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("minimum_delay_seconds", Integer, nullable=False, server_default="0"),
    Column("max_requests_per_second", Float),
    Column("success_response", Text),
    Column("error_response", Text),
    Column("extra_triggers", JSON, nullable=False, server_default="[]"),
    Column("failing_since", UTCDateTime),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("disabled_at", UTCDateTime),
    Column("disabled_reason", Text),
    # Standard Webhooks signing: sealed whsec_ secrets; the previous one is still used to
    # sign (beside the new one) until it expires, so receivers can rotate without a gap
    Column("signing_secret", Text),
    Column("previous_signing_secret", Text),
    Column("previous_secret_expires_at", UTCDateTime),
    Column("signing_public_key", Text),  # whpk_ of a v1a (ed25519) key: public, published
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("uq_notification_setting_global", "partner_id", "type", unique=True,
          sqlite_where=text("scope = 'global'"), postgresql_where=text("scope = 'global'")),
    Index("ix_notification_setting_partner", "partner_id"),
)

# A per-endpoint token bucket shared by every worker: Maximum Requests per second.
rate_bucket = Table(
    "rate_bucket", metadata,
    Column("setting_id", Integer, ForeignKey("notification_setting.id", ondelete="CASCADE"),
           primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated", Float, nullable=False),  # unix seconds
)

inquiry_policy = Table(
    "inquiry_policy", metadata,
    Column("program_id", Integer, ForeignKey("program.id"), primary_key=True),
    Column("deadline_days", Integer),
    Column("auto_mode", String(24), nullable=False),
    Column("auto_days", Integer, nullable=False),
    Column("max_expected_payout", Money),
    Column("monthly_cap", Money),
    Column("event_type_id", Integer, ForeignKey("event_type.id")),
    Column("updated_at", UTCDateTime, nullable=False),
)

inquiry = Table(
    "inquiry", metadata,
    Column("id", Integer, primary_key=True),
    Column("program_id", Integer, ForeignKey("program.id"), nullable=False),
    Column("brand_id", Integer, ForeignKey("brand.id"), nullable=False, index=True),
    Column("partner_id", Integer, ForeignKey("partner.id"), nullable=False, index=True),
    Column("inquiry_type", String(12), nullable=False),
    Column("oid", String(255), nullable=False),
    Column("transaction_date", UTCDateTime, nullable=False),
    Column("transaction_amount", Money, nullable=False),
    Column("expected_payout", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("customer_id", String(255)),
    Column("media_partner_inquiry_id", String(255)),
    Column("notes", Text),
    Column("state", String(10), nullable=False),
    Column("resolution_status", String(12), nullable=False),
    Column("reject_reason", Text),
    Column("final_payout", Money),
    Column("resolution_date", UTCDateTime),
    Column("resolution_deadline_date", UTCDateTime),
    Column("auto_approval_date", UTCDateTime),
    Column("action_id", Integer, ForeignKey("action.id")),
    Column("sequence", Integer, nullable=False),
    Column("creation_date", UTCDateTime, nullable=False),
    Index("ix_inquiry_auto", "state", "auto_approval_date"),
)

catalog_item = Table(
    "catalog_item", metadata,
    Column("id", Integer, primary_key=True),
    Column("program_id", Integer, ForeignKey("program.id"), nullable=False),
    Column("item_id", String(255), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "item_id"),
    # the partners' catalog read: ?updated_since=, paged by (updated_at, id) (0009)
    Index("ix_catalog_item_updated", "program_id", "updated_at", "id"),
)

#: deliveries that claims take before catalog changes' (a literal predicate, so that both
#: databases' planners can use the partial index on it)
FIRST_DUE = f"notification_type <> '{PRODUCT}'"
CATALOG_DUE = f"notification_type = '{PRODUCT}'"

delivery = Table(
    "delivery", metadata,
    Column("id", Integer, primary_key=True),
    # {EventId} / webhook-id: one per notification, kept by a replay's new delivery (0010)
    Column("event_id", String(36), nullable=False),
    Column("partner_id", Integer, ForeignKey("partner.id"), nullable=False),
    Column("setting_id", Integer, ForeignKey("notification_setting.id", ondelete="SET NULL")),
    Column("action_id", Integer, ForeignKey("action.id")),
    Column("inquiry_id", Integer, ForeignKey("inquiry.id")),
    Column("item_id", String(255)),  # a catalog item's ID, for Product Data Change
    Column("notification_type", String(40), nullable=False),
    Column("trigger", String(20), nullable=False),
    Column("status", String(10), nullable=False),
    Column("method", String(4), nullable=False),
    Column("url", Text, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("body", Text),
    Column("attempt_count", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(40)),
    # claims since the last recorded attempt: a delivery whose result is never recorded
    # (it crashes its worker, or its write fails) is stopped after a few, not sent forever
    Column("open_claims", Integer, nullable=False, server_default="0"),
    Column("last_status_code", Integer),
    Column("last_error", String(40)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    # the ledger change it tells of (change_log.change_id: {ChangeId}); NULL before 0009
    Column("change_id", String(36)),
    # the replay that made it (a new delivery of an earlier one's notification); NULL for
    # the original deliveries, which are the only ones a replay selects
    Column("replay_id", Integer, ForeignKey("replay.id")),
    Index("ix_delivery_due", "status", "next_attempt_at"),
    # due work other than catalog changes', which claims take first (0013): a bulk catalog
    # change's postbacks never queue ahead of an action's
    Index("ix_delivery_due_first", "status", "next_attempt_at", postgresql_where=text(FIRST_DUE),
          sqlite_where=text(FIRST_DUE)),
    # and catalog changes' own: what claims fill the rest with, what the fan-out counts
    Index("ix_delivery_due_catalog", "status", "next_attempt_at",
          postgresql_where=text(CATALOG_DUE), sqlite_where=text(CATALOG_DUE)),
    Index("ix_delivery_partner", "partner_id", "id"),
    Index("ix_delivery_event_id", "event_id"),
    # held rows only (a partial index costs the hot path nothing): resume, count, discard
    Index("ix_delivery_held", "setting_id", postgresql_where=text("status = 'held'"),
          sqlite_where=text("status = 'held'")),
    # a replay's deliveries only: its progress by status
    Index("ix_delivery_replay", "replay_id", "status",
          postgresql_where=text("replay_id IS NOT NULL"),
          sqlite_where=text("replay_id IS NOT NULL")),
    # a partner's list filtered by each of its filters, newest first, in time that does not
    # grow with the table (0012): a filter that matches nothing would otherwise read it all
    Index("ix_delivery_partner_status", "partner_id", "status", "id"),
    Index("ix_delivery_partner_trigger", "partner_id", "trigger", "id"),
    Index("ix_delivery_partner_type", "partner_id", "notification_type", "id"),
    Index("ix_delivery_action", "action_id", "id"),
)

#: The Deliveries chart's rollup (0012): deliveries per partner, hour of creation (UTC,
#: ``YYYY-MM-DD HH``) and state (delivered, retrying, failed, due). Triggers on ``delivery``
#: append ``delivery_hourly_delta`` rows for each change of state, in the writing transaction
#: (one per row changed; on PostgreSQL one per hour and state for each INSERT statement)
#: (append-only: concurrent writers never wait for each other on a counter row); the
#: scheduler folds the deltas into ``delivery_hourly`` (``services/rollup.py``), and a read
#: adds what is not folded yet. Every path that changes a delivery is counted, by
#: construction.
delivery_hourly = Table(
    "delivery_hourly", metadata,
    Column("partner_id", Integer, primary_key=True),
    Column("hour", String(13), primary_key=True),
    Column("state", String(10), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

#: Where each bounded background pass stopped (``services/rollup.py``: the attempt-body
#: retention walks ``delivery_attempt`` by id, a batch per transaction, from here)
housekeeping = Table(
    "housekeeping", metadata,
    Column("name", String(40), primary_key=True),
    Column("last_id", BigInteger, nullable=False),
)

delivery_hourly_delta = Table(
    "delivery_hourly_delta", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("partner_id", Integer, nullable=False),
    Column("hour", String(13), nullable=False),
    Column("old_state", String(10)),  # NULL: a new delivery
    Column("new_state", String(10), nullable=False),
    Column("n", Integer, nullable=False),  # deliveries that made this move at once
)

delivery_attempt = Table(
    "delivery_attempt", metadata,
    Column("id", Integer, primary_key=True),
    Column("delivery_id", Integer, ForeignKey("delivery.id"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("method", String(4), nullable=False),
    Column("url", Text, nullable=False),
    Column("request_headers", JSON, nullable=False),
    Column("status_code", Integer),
    Column("response_headers", JSON),
    Column("response_body", Text),  # readable: UTF-8 text, undecodable bytes and NUL replaced
    Column("response_body_raw", LargeBinary),  # the exact bytes, only when not plain text
    Column("latency_ms", Float, nullable=False),
    Column("error_class", String(40)),
    Column("error_message", Text),
    Column("outcome", String(20), nullable=False),
    Column("worker", String(40)),
)


#: A partner's replay (``services/replay.py``): every original delivery of a window sent
#: again as a new delivery with its event id. ``request_key`` (a hash of since, until, type
#: and url) makes the same request within 24 hours the same replay; it is let go (NULL)
#: when a same request comes later. ``last_id`` closes the window when it starts, and
#: ``cursor`` (the last original delivery done) lets it be taken up where it stopped.
replay = Table(
    "replay", metadata,
    Column("id", Integer, primary_key=True),
    Column("partner_id", Integer, ForeignKey("partner.id"), nullable=False),
    Column("request_key", String(64)),
    Column("since", UTCDateTime, nullable=False),
    Column("until", UTCDateTime),
    Column("type", String(40)),
    Column("url", Text),  # a one-off URL, instead of each setting's own
    Column("total", Integer, nullable=False),  # original deliveries in the window
    Column("last_id", Integer, nullable=False),
    Column("cursor", Integer, nullable=False, server_default="0"),
    Column("replayed", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),  # setting deleted
    Column("created_at", UTCDateTime, nullable=False),
    Column("queued_at", UTCDateTime),  # every delivery written (NULL: still under way)
    UniqueConstraint("partner_id", "request_key"),
)

#: Every ledger change once (an action's TRACKED … CLEARED, an inquiry's, a catalog
#: item's), with the token values of that change: the updates feeds and data feeds read it,
#: and each postback of the change carries its ``change_id`` as ``{ChangeId}``.
#: The feeds' cursor is ``(txid, id)``. SQLite's writers never overlap, so ``id`` is commit
#: order and ``txid`` is 0. On PostgreSQL ``txid`` is the writing transaction's id, and a
#: reader takes only rows whose ``txid`` is below its snapshot's ``xmin`` (every transaction
#: that could still add a row below the cursor has ended): no change skipped, none repeated.
change_log = Table(
    "change_log", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("txid", BigInteger, nullable=False, server_default="0"),
    Column("kind", String(10), nullable=False),  # action | inquiry | catalog
    Column("change_id", String(36), nullable=False, unique=True),
    Column("brand_id", Integer, ForeignKey("brand.id"), nullable=False),
    Column("program_id", Integer, ForeignKey("program.id"), nullable=False),
    Column("partner_id", Integer, ForeignKey("partner.id")),  # NULL for catalog changes
    Column("subject", String(255), nullable=False),  # action id, inquiry id, catalog item ID
    Column("trigger", String(20), nullable=False),
    Column("sequence", Integer),
    Column("values", JSON, nullable=False),  # {Token: value}, as the change's postbacks
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_change_log_partner", "kind", "partner_id", "txid", "id"),
    Index("ix_change_log_brand", "kind", "brand_id", "txid", "id"),
    Index("ix_change_log_program", "kind", "program_id", "txid", "id"),
    # the long polls' wake-up: the newest transaction whose changes a read may return
    Index("ix_change_log_txid", "txid"),
    sqlite_autoincrement=True,
)

#: Catalog changes whose postbacks are still to be written: a bulk change to a program with
#: many partners would write item-by-setting deliveries in the brand's request; instead its
#: transaction leaves one row here per change, and the scheduler expands them a bounded
#: chunk per transaction, at the pace the engines send (services/fanout.py).
catalog_fanout = Table(
    "catalog_fanout", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("change_id", String(36), ForeignKey("change_log.change_id", ondelete="CASCADE"),
           nullable=False, unique=True),
    Column("program_id", Integer, ForeignKey("program.id", ondelete="CASCADE"),
           nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_catalog_fanout_program", "program_id", "id"),
    sqlite_autoincrement=True,
)


#: Every running engine worker and scheduler, with the database's time of its last
#: heartbeat: work leased to a worker that stopped heartbeating is taken up by the others.
worker = Table(
    "worker", metadata,
    Column("name", String(40), primary_key=True),
    Column("kind", String(12), nullable=False),  # engine | scheduler
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)


# -- scheduled data feeds (services/feeds.py) ----------------------------------------------

#: A partner's scheduled data feed: what it holds (actions, or one program's catalog), when
#: it runs (``schedule``, core/feed_schedule.py), the file's format and columns, and where it
#: goes. The destination's password or private key is sealed in ``destination_secret`` and
#: never read back; ``host_key`` is the SFTP server's key, pinned at first connect.
feed = Table(
    "feed", metadata,
    Column("id", Integer, primary_key=True),
    Column("partner_id", Integer, ForeignKey("partner.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("content", String(10), nullable=False),  # actions | catalog
    Column("program_id", Integer, ForeignKey("program.id")),
    Column("schedule", JSON, nullable=False),  # {every, at, day, time_zone}
    Column("window_days", Integer),  # NULL: every change since the last successful run
    Column("format", String(5), nullable=False),
    Column("gzip", Boolean, nullable=False),
    Column("header", Boolean, nullable=False),
    Column("columns", JSON, nullable=False),
    Column("destination", JSON, nullable=False),  # {kind, ...}: no secret in it
    Column("destination_secret", Text),  # sealed SFTP password or private key
    Column("destination_rev", Integer, nullable=False),  # +1 on every destination change
    Column("host_key", Text),
    Column("enabled", Boolean, nullable=False),
    Column("next_run_at", UTCDateTime),  # the next scheduled slot (NULL: turned off)
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_feed_due", "enabled", "next_run_at"),
    # ids never come back after a delete (SQLite would reuse the highest): a signed link
    # or a bookmark of a deleted feed or run can never open another partner's
    sqlite_autoincrement=True,
)

#: One run of a feed: ``phase`` queued -> producing -> produced (file stored, committed) ->
#: delivering -> succeeded | failed; ``status`` is what partners see (queued, running,
#: succeeded, failed). A run is worked on under a lease (``lease_owner`` until
#: ``lease_until``, on the database's clock); a scheduled run is unique per slot.
feed_run = Table(
    "feed_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("feed_id", Integer, ForeignKey("feed.id", ondelete="CASCADE"), nullable=False),
    Column("trigger", String(10), nullable=False),  # schedule | manual
    Column("scheduled_for", UTCDateTime),  # the slot (NULL for a manual run)
    Column("status", String(10), nullable=False),
    Column("phase", String(10), nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(40)),
    Column("lease_until", UTCDateTime),
    # claims since the run last moved on: one that kills its worker every time stops
    Column("claims", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),  # delivery attempts
    Column("cursor_from", String(40)),  # since_last_run: the change log cursor it read after
    Column("cursor_to", String(40)),  # ... and the one it read up to (the next run's start)
    Column("rows", Integer),
    Column("bytes", BigInteger),
    Column("duration_ms", Integer),  # producing the file
    Column("file_name", String(255)),
    Column("file_chunks", Integer),
    Column("file_expires_at", UTCDateTime),
    Column("file_deleted_at", UTCDateTime),
    Column("answer", Text),  # what the destination said
    Column("error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("produced_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    UniqueConstraint("feed_id", "scheduled_for"),
    Index("ix_feed_run_feed", "feed_id", "id"),
    Index("ix_feed_run_due", "status", "next_attempt_at"),
    Index("ix_feed_run_expiry", "file_expires_at"),
    sqlite_autoincrement=True,
)

#: A run's file, in chunks of at most 1 MiB, in the database: every API process on every
#: host can serve it, and it is stored, deleted and committed with the run's phase.
feed_file_chunk = Table(
    "feed_file_chunk", metadata,
    Column("run_id", Integer, ForeignKey("feed_run.id", ondelete="CASCADE"),
           primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

#: a days-window feed takes each action's latest change: found by (kind, subject, sequence)
Index("ix_change_log_subject", change_log.c.kind, change_log.c.subject, change_log.c.sequence)
