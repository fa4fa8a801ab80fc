"""UUIDv7 event ids: unique, time-ordered, and carrying their creation time in ms."""

from __future__ import annotations

import os
import threading
import time
import uuid

_BATCH = 4096  # random bytes fetched at once: one system call for ~400 ids


class _Randomness:
    """``os.urandom`` bytes handed out ten at a time. A system call per id let go of the
    interpreter lock, and the thread writing a group of postbacks then waited for it
    behind the event loop, once per id. Emptied in a forked child, which must not hand
    out its parent's bytes again."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a fork can copy it held by a thread the child lacks
        self._bytes = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._bytes):
                self._bytes, self._at = os.urandom(_BATCH), 0
            self._at += n
            return self._bytes[self._at - n:self._at]


_random = _Randomness()
os.register_at_fork(after_in_child=_random._reset)


def uuid7() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random.take(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def uuid7_ms(event_id: str) -> int:
    """Milliseconds since the epoch at which a UUIDv7 was made."""
    return uuid.UUID(event_id).int >> 80
