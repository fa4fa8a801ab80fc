"""The ``postback`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from postback.config import Settings


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 timestamp such as 2026-12-01T00:00:00Z") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="postback", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="everything, one command: the API, delivery workers "
                                     "and the scheduler as supervised processes")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=_count, default=os.cpu_count() or 1,
                   help="delivery engine processes (default: one per CPU)")
    a = sub.add_parser("api", help="the API and the web app alone")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    sub.add_parser("worker", help="a delivery worker (share one database with many)")
    sub.add_parser("scheduler", help="locking, clearing and auto-approval as they come due")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    lc = sub.add_parser("lifecycle", help="action lifecycle jobs")
    lc_sub = lc.add_subparsers(dest="lifecycle_command", required=True)
    run = lc_sub.add_parser("run", help="lock and clear every action due by --as-of")
    run.add_argument("--as-of", type=_timestamp, default=None,
                     help="ISO-8601 timestamp (default: now)")
    dl = sub.add_parser("deliveries", help="delivery maintenance")
    dl_sub = dl.add_subparsers(dest="deliveries_command", required=True)
    rec = dl_sub.add_parser("recover", help="queue again every failed delivery in a window")
    rec.add_argument("--since", type=_timestamp, required=True, help="ISO-8601 timestamp")
    rec.add_argument("--until", type=_timestamp, default=None, help="ISO-8601 timestamp")
    rec.add_argument("--type", default=None, choices=["action-lifecycle", "action-clearing",
                                                      "action-inquiry", "product-data-change"])
    rec.add_argument("--partner", type=int, default=None, help="only this partner's")
    rep = dl_sub.add_parser("replay", help="send one partner's notifications of a window "
                                           "again, succeeded ones too, with their event ids")
    rep.add_argument("--partner", type=_count, required=True, help="the partner's id")
    rep.add_argument("--since", type=_timestamp, required=True, help="ISO-8601 timestamp")
    rep.add_argument("--until", type=_timestamp, default=None, help="ISO-8601 timestamp")
    rep.add_argument("--type", default=None, choices=["action-lifecycle", "action-clearing",
                                                      "action-inquiry", "product-data-change"])
    rep.add_argument("--url", default=None,
                     help="a one-off URL instead of each setting's own (checked as a "
                          "setting's URL is)")
    fd = sub.add_parser("feeds", help="scheduled data feeds")
    fd_sub = fd.add_subparsers(dest="feeds_command", required=True)
    fd_sub.add_parser("run-due", help="make the runs that are due, work them, and delete "
                                      "expired files, once (for cron; the scheduler does it "
                                      "every few seconds)")
    sub.add_parser("tokens", help="print the token reference (Markdown)")
    sub.add_parser("secret-key", help="print a new key for POSTBACK_SECRET_KEY")
    listen = sub.add_parser("listen", help="a tiny receiver that prints postbacks")
    listen.add_argument("--host", default="127.0.0.1")
    listen.add_argument("--port", type=int, default=9000)
    return p


def _recover(db: Any, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from postback.services.deliveries import recover_failed

    with tqdm(total=0, unit="delivery", desc="requeued", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        count = recover_failed(db, datetime.now(UTC), since=args.since, until=args.until,
                               type=args.type, partner_id=args.partner, progress=progress)
    print(json.dumps({"requeued": count}))


def _replay(settings: Settings, db: Any, args: argparse.Namespace) -> int:
    """``deliveries replay``: 0 when every delivery is queued (or the same request was
    already replayed within 24 hours: the same answer, nothing new), 2 when the request is
    refused (the reason on stderr), 130 when interrupted (the same command goes on)."""
    from pydantic import ValidationError
    from sqlalchemy import select
    from tqdm import tqdm

    from postback.db.schema import partner
    from postback.db.wakeup import waker
    from postback.models import ReplayIn
    from postback.services import replay
    from postback.services.errors import Invalid

    try:
        body = ReplayIn(since=args.since, until=args.until, type=args.type, url=args.url)
        req = replay.ReplayRequest(body.since, body.until, body.type, body.url)
        with db.connect() as conn:
            if conn.execute(select(partner.c.id).where(partner.c.id == args.partner)
                            ).first() is None:
                raise Invalid("partner", f"there is no partner {args.partner}")
        for warning in replay.check_request(req, settings):
            print(f"postback: warning: {warning}", file=sys.stderr)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "request"
        print(f"postback: {where}: {error['msg']}", file=sys.stderr)
        return 2
    except Invalid as exc:
        print(f"postback: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    wake = waker(settings.database_url)
    with tqdm(total=0, unit="delivery", desc="replayed", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
            wake()

        try:
            out, new = replay.replay_deliveries(db, args.partner, req, datetime.now(UTC),
                                                progress=progress)
        except KeyboardInterrupt:
            bar.close()
            print("postback: interrupted; what was queued stays queued, and the same "
                  "command takes the replay up where it stopped", file=sys.stderr)
            return 130
    wake()
    if not new:
        print(f"postback: the same request was made at {out['created_at']} (replay "
              f"{out['id']}): nothing new was sent", file=sys.stderr)
    print(json.dumps({"replay_id": out["id"], "replayed": out["replayed"],
                      "skipped": out["skipped"]}))
    return 0


def _stop_before_start(signum: int, _frame: object) -> None:
    """SIGTERM or SIGINT while starting (imports, migrations, before the engine has claimed
    anything) is a clean stop, not a crash; the running loop installs its own handlers."""
    raise SystemExit(0)


#: the commands that run until stopped (serve, and the processes it supervises)
LONG_RUNNING = ("serve", "api", "worker", "scheduler")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in LONG_RUNNING:
        from postback.supervisor import die_with_parent

        die_with_parent()  # a child of serve goes when serve goes
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _stop_before_start)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if args.command == "listen":
        from postback.listener import serve as listen

        listen(args.host, args.port)
        return 0
    if args.command == "secret-key":
        from postback.sealing import new_key

        print(new_key())
        return 0
    if args.command == "tokens":
        from postback.reference import token_reference

        print(token_reference(), end="")
        return 0
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"postback: {exc}", file=sys.stderr)
        return 2
    from postback import runner

    if args.command == "serve":
        return runner.serve(settings, args.host, args.port, args.workers)
    if args.command == "api":
        import uvloop  # the API's loop: less CPU a request than asyncio's own

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop:
            loop.run(runner.api(settings, args.host, args.port))
    elif args.command == "worker":
        asyncio.run(runner.work(settings))
    elif args.command == "scheduler":
        asyncio.run(runner.schedule(settings))
    elif args.command == "migrate":
        from postback.db.migrate import upgrade

        upgrade(settings.database_url)
        print("database is at the latest schema")
    elif args.command == "lifecycle":
        from postback.services.scheduler import run_due

        db = runner.open_database(settings, run_migrations=False)
        as_of = args.as_of or datetime.now(UTC)
        print(json.dumps({"as_of": as_of.isoformat(), **run_due(db, as_of)}))
    elif args.command == "feeds":
        from postback.services.feed_runs import run_feeds

        settings = runner.with_secret_key(settings, create=False)
        db = runner.open_database(settings, run_migrations=False)
        print(json.dumps(run_feeds(db, settings)))
    elif args.command == "deliveries" and args.deliveries_command == "replay":
        return _replay(settings, runner.open_database(settings, run_migrations=False), args)
    elif args.command == "deliveries":
        _recover(runner.open_database(settings, run_migrations=False), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
