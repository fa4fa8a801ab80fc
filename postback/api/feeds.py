"""Partner routes: scheduled data feeds, their runs and files; and the signed download link
(``/v1/feed-files/{token}``, no key: the link is the credential)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from postback.api.deps import IdPath, Partner, read, write
from postback.api.schemas.base import BODY, ErrorOut, refusals
from postback.api.schemas.feeds import (
    FeedColumnsOut,
    FeedList,
    FeedOut,
    FeedRunList,
    FeedRunOut,
    FeedTestOut,
    RunQueuedOut,
    SavedFeedOut,
)
from postback.core.feed_format import CONTENT_TYPES, GZIP_CONTENT_TYPE
from postback.models import MAX_ID, FeedIn
from postback.services import feeds

router = APIRouter(tags=["data feeds"])

_GONE: dict[int | str, dict[str, Any]] = {410: {
    "model": ErrorOut,
    "description": "The file was deleted after the retention period, or the link expired."}}
_FILE: dict[int | str, dict[str, Any]] = {200: {"description": "the file, as it was delivered",
               "content": {t.split(";")[0]: {"schema": {"type": "string", "format": "binary"}}
                           for t in (*CONTENT_TYPES.values(), GZIP_CONTENT_TYPE)}}}


def _id(who: Partner) -> int:
    assert who.account_id is not None
    return who.account_id


@router.get("/v1/feeds/columns", response_model=FeedColumnsOut, responses=refusals(401, 403,
                                                                                   422))
def columns(who: Partner, content: Literal["actions", "catalog"] = "actions"
            ) -> dict[str, Any]:
    """The columns a feed may have: the token names of its content's postbacks."""
    return {"content": content, "columns": feeds.column_choices(content)}


@router.post("/v1/feeds", status_code=201, response_model=SavedFeedOut,
             responses=refusals(401, 403, 404, *BODY))
def create_feed(body: FeedIn, request: Request, who: Partner) -> dict[str, Any]:
    """A new feed. Its first scheduled run is the schedule's next slot; ``POST
    /v1/feeds/{id}/run`` makes one now. An SFTP host is checked now (a non-public address
    is refused); ``warnings`` says what saved but needs attention."""
    settings = request.app.state.settings
    warnings = feeds.vet_destination(body, settings)
    with write(request) as conn:
        return {**feeds.create_feed(conn, _id(who), body, settings), "warnings": warnings}


@router.get("/v1/feeds", response_model=FeedList, responses=refusals(401, 403))
def list_feeds(request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": feeds.list_feeds(conn, _id(who), request.app.state.settings),
                "next_cursor": None}


@router.get("/v1/feeds/{feed_id}", response_model=FeedOut, responses=refusals(401, 403, 404,
                                                                              422))
def get_feed(feed_id: IdPath, request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return feeds.get_feed(conn, _id(who), feed_id, request.app.state.settings)


@router.put("/v1/feeds/{feed_id}", response_model=SavedFeedOut,
            responses=refusals(401, 403, 404, *BODY))
def put_feed(feed_id: IdPath, body: FeedIn, request: Request, who: Partner) -> dict[str, Any]:
    """Replace a feed. Leave the SFTP password or private key out to keep the stored one
    (same host, port and username only); ``host_key: null`` clears the pinned key."""
    settings = request.app.state.settings
    warnings = feeds.vet_destination(body, settings)
    with write(request) as conn:
        return {**feeds.update_feed(conn, _id(who), feed_id, body, settings),
                "warnings": warnings}


@router.delete("/v1/feeds/{feed_id}", status_code=204, responses=refusals(401, 403, 404, 422))
def delete_feed(feed_id: IdPath, request: Request, who: Partner) -> Response:
    """Delete the feed, its runs and their files."""
    with write(request) as conn:
        feeds.delete_feed(conn, _id(who), feed_id)
    return Response(status_code=204)


@router.post("/v1/feeds/{feed_id}/run", status_code=202, response_model=RunQueuedOut,
             responses=refusals(401, 403, 404, 422))
def run_now(feed_id: IdPath, request: Request, who: Partner) -> dict[str, Any]:
    """Run now: a run is queued and starts within seconds, or as soon as the feed's run
    under way has finished (one at a time). If a run is already waiting to start, that is
    the answer (``created: false``)."""
    with write(request) as conn:
        return feeds.request_run(conn, _id(who), feed_id)


@router.post("/v1/feeds/{feed_id}/test", response_model=FeedTestOut,
             responses=refusals(401, 403, 404, 422))
def test_connection(feed_id: IdPath, request: Request, who: Partner) -> dict[str, Any]:
    """Connect to the feed's SFTP server now, log in, write and remove a test file; the
    server's host key is pinned if none is."""
    return feeds.test_destination(request.app.state.db, _id(who), feed_id,
                                  request.app.state.settings)


@router.get("/v1/feeds/{feed_id}/runs", response_model=FeedRunList,
            responses=refusals(401, 403, 404, 422))
def list_runs(feed_id: IdPath, request: Request, who: Partner,
              cursor: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
              limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """The feed's runs, newest first."""
    with read(request) as conn:
        return feeds.list_runs(conn, _id(who), feed_id, request.app.state.settings, cursor,
                               limit)


@router.get("/v1/feeds/{feed_id}/runs/{run_id}", response_model=FeedRunOut,
            responses=refusals(401, 403, 404, 422))
def get_run(feed_id: IdPath, run_id: IdPath, request: Request, who: Partner
            ) -> dict[str, Any]:
    with read(request) as conn:
        return feeds.get_run(conn, _id(who), feed_id, run_id, request.app.state.settings)


def _send(request: Request, stored: feeds.StoredFile) -> StreamingResponse:
    return StreamingResponse(
        feeds.file_bytes(request.app.state.db, stored), media_type=stored.content_type,
        headers={"Content-Disposition": f'attachment; filename="{stored.file_name}"',
                 "Content-Length": str(stored.size), "Cache-Control": "private, no-store",
                 "X-Content-Type-Options": "nosniff"})


@router.get("/v1/feeds/{feed_id}/runs/{run_id}/file", response_class=StreamingResponse,
            responses={**_FILE, **refusals(401, 403, 404, 409, 422), **_GONE})
def run_file(feed_id: IdPath, run_id: IdPath, request: Request, who: Partner
             ) -> StreamingResponse:
    """Download the run's file (kept for the retention period, whatever the destination)."""
    with read(request) as conn:
        stored = feeds.run_file(conn, _id(who), feed_id, run_id)
    return _send(request, stored)


@router.get("/v1/feed-files/{token}", response_class=StreamingResponse,
            responses={**_FILE, **refusals(404, 409, 422), **_GONE})
def linked_file(token: Annotated[str, Path(max_length=100)], request: Request
                ) -> StreamingResponse:
    """Download a run's file by its signed link (``download_url``), no key needed, until
    the link expires."""
    with read(request) as conn:
        stored = feeds.linked_file(conn, token, request.app.state.settings)
    return _send(request, stored)
