"""Scheduled data feeds and their runs (``services/feeds.py``: ``feed_out``, ``run_out``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postback.api.schemas.base import Listed, Out, Paged, Timestamp

FeedFormat = Literal["csv", "tab", "pipe", "xml", "jsonl"]


class FeedScheduleOut(Out):
    every: Literal["hourly", "daily", "weekly", "monthly"]
    at: str = Field(description='":MM" for hourly, "HH:MM" otherwise, in time_zone')
    day: str | int | None = Field(description="weekly: the weekday; monthly: 1..28 or last")
    time_zone: str


class FeedWindowOut(Out):
    days: int


class HostedDestinationOut(Out):
    kind: Literal["hosted"]
    retention_days: int


class SftpDestinationOut(Out):
    """The password and private key are never shown: only whether one is set."""

    kind: Literal["sftp"]
    host: str
    port: int
    username: str
    directory: str
    password_set: bool
    private_key_set: bool
    host_key: str | None = Field(description="the pinned host key (null: pinned at the "
                                 "first connection)")
    host_key_fingerprint: str | None


class EmailDestinationOut(Out):
    kind: Literal["email"]
    to: list[str]
    attach: bool


class FeedOut(Out):
    """A feed as its partner reads it."""

    id: int
    name: str
    content: Literal["actions", "catalog"]
    program_id: int | None
    schedule: FeedScheduleOut
    window: Literal["since_last_run"] | FeedWindowOut | None = Field(
        description="null for a catalog feed (always the whole catalog)")
    format: FeedFormat
    gzip: bool
    header: bool
    columns: list[str]
    destination: HostedDestinationOut | SftpDestinationOut | EmailDestinationOut = Field(
        discriminator="kind")
    enabled: bool
    next_run_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class SavedFeedOut(FeedOut):
    """A saved feed, and what saved but needs attention."""

    warnings: list[str]


class FeedList(Listed[FeedOut]):
    pass


class FeedColumnsOut(Out):
    content: Literal["actions", "catalog"]
    columns: list[str]


class RunQueuedOut(Out):
    """``created`` is false when a run that has not started yet was already queued: that
    run makes the next file."""

    run_id: int
    created: bool


class FeedTestOut(Out):
    ok: bool
    answer: str
    host_key: str | None


class FeedRunOut(Out):
    """One run: ``status`` queued, running, succeeded or failed; ``phase`` says where a run
    is (queued, producing, produced, delivering, succeeded, failed)."""

    id: int
    feed_id: int
    status: Literal["queued", "running", "succeeded", "failed"]
    phase: Literal["queued", "producing", "produced", "delivering", "succeeded", "failed"]
    trigger: Literal["schedule", "manual"]
    scheduled_for: Timestamp | None
    created_at: Timestamp
    started_at: Timestamp | None
    produced_at: Timestamp | None
    finished_at: Timestamp | None
    rows: int | None
    bytes: int | None
    duration_ms: int | None = Field(description="producing the file")
    file_name: str | None
    content_type: str | None
    file_expires_at: Timestamp | None
    file_deleted: bool
    download_url: str | None = Field(description="a signed link, no key needed, good for 7 "
                                     "days (never past the file's deletion)")
    attempts: int = Field(description="delivery attempts")
    next_attempt_at: Timestamp | None = Field(description="when a failed delivery is tried "
                                              "again")
    answer: str | None = Field(description="what the destination said")
    error: str | None


class FeedRunList(Paged[FeedRunOut]):
    pass
