"""Debian packages some tests install when missing. ``make test`` runs the suite in several
pytest processes, and two ``apt-get`` runs at once fail on dpkg's lock: each install waits
for this file lock first."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

LOCK = "/tmp/postback-tests-apt.lock"


@contextmanager
def one_install_at_a_time() -> Iterator[None]:
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
