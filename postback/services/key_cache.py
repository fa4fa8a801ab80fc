"""Signed-in API keys remembered for a second, so that a request with a known key does not
read the database (or wait for a thread) to learn who sent it.

Revocation is at once in the process that revokes (``forget_all`` after the commit), and
within ``TTL_SECONDS`` in any other API process. A lookup that raced a revocation in this
process is answered but not remembered (the generation it started in is gone). Only
digests are kept, never keys, and only keys that signed in: unknown tokens are not
remembered, so guessing cannot fill the memory.
"""

from __future__ import annotations

import threading
import time

from postback.services.accounts import Principal, hash_key

TTL_SECONDS = 1.0
MAX_KEYS = 10_000


class KeyCache:
    def __init__(self, ttl: float = TTL_SECONDS, max_keys: int = MAX_KEYS) -> None:
        self._ttl = ttl
        self._max = max_keys
        self._known: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, token: str) -> Principal | None:
        found = self._known.get(hash_key(token))
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def remember(self, token: str, who: Principal, generation: int) -> None:
        """Keep ``who`` for ``token``, if nothing was revoked since ``generation`` was read
        (before the lookup began)."""
        with self._lock:
            if generation != self.generation:
                return
            if len(self._known) >= self._max:
                self._known.pop(next(iter(self._known)))  # the oldest
            self._known[hash_key(token)] = (who, time.monotonic() + self._ttl)

    def forget_all(self) -> None:
        """After a key's revocation commits: every key is looked up afresh."""
        with self._lock:
            self.generation += 1
            self._known.clear()
