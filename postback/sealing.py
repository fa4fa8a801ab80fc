"""Secrets at rest: header values and signing secrets are sealed with Fernet (AES-128-CBC +
HMAC-SHA256) under the operator's key, so a copy of the database reveals none of them.

The key comes from ``POSTBACK_SECRET_KEY`` (comma-separated to rotate: the first seals,
all open), or the file ``POSTBACK_SECRET_KEY_FILE`` names; ``serve`` creates
``postback.key`` (mode 0600) on first start if neither is set.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enc1:"
#: what a secret value reads as, everywhere it is shown (reads, attempt logs, test results)
MASK = "********"


class SealError(ValueError):
    """A sealed value that no configured key opens."""


class Sealer:
    def __init__(self, keys: str) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode())
                                        for k in keys.split(",") if k.strip()])
        except (ValueError, TypeError) as exc:
            raise ValueError("POSTBACK_SECRET_KEY must be Fernet keys (32 url-safe base64 "
                             "bytes; create one with `postback secret-key`)") from exc
        self.open = lru_cache(maxsize=4096)(self._open)  # claims open the same values often

    def seal(self, value: str) -> str:
        return PREFIX + self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def _open(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value  # written before sealing existed
        try:
            return self._fernet.decrypt(value[len(PREFIX):].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SealError("a stored secret does not open with POSTBACK_SECRET_KEY; was "
                            "the key changed without keeping the old one?") from None

    def seal_values(self, values: dict[str, str]) -> dict[str, str]:
        return {name: self.seal(value) for name, value in values.items()}

    def open_values(self, values: dict[str, str]) -> dict[str, str]:
        return {name: self.open(value) for name, value in values.items()}


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_or_create_key(path: Path) -> str:
    """The key in ``path``; created (mode 0600) if the file does not exist."""
    if path.exists():
        return path.read_text().strip()
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key
