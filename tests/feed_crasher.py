"""A feed executor process that dies (SIGKILL) at a chosen step (tests/test_feeds.py).

A module of its own, importing only what an executor needs, so a spawned process starts
fast."""

from __future__ import annotations

import os
import signal

from postback.config import Settings
from postback.core.addresses import AddressPolicy
from postback.db.engine import make_engine
from postback.services import feed_runs


def crash_at(db_url: str, key: str, stage: str) -> None:
    settings = Settings(database_url=db_url, secret_key=key,
                        allow_targets=AddressPolicy.parse("127.0.0.0/8,::1/128"))
    engine = make_engine(db_url)
    claimed = feed_runs.claim(engine, "doomed", 1.0)
    assert claimed is not None

    def pause(step: str) -> None:
        if step == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    feed_runs.execute(engine, claimed, "doomed", settings, 1.0, pause=pause)
    os._exit(3)  # not reached when the stage comes
