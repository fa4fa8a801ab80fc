"""UUIDv7 event ids: unique, time-ordered, and carrying their creation time in ms."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> str:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def uuid7_ms(event_id: str) -> int:
    """Milliseconds since the epoch at which a UUIDv7 was made."""
    return uuid.UUID(event_id).int >> 80
