"""What a partner's server answered, made safe to store and to show.

A response is untrusted bytes: invalid UTF-8, NUL bytes (which PostgreSQL text refuses),
binary, header values in any encoding. Nothing here may raise on any input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNSHOWABLE = re.compile("[\x00\ud800-\udfff]")


def stored_body(raw: bytes | None) -> tuple[str | None, bytes | None]:
    """A response body as it is stored: (readable text, the exact bytes when the text is
    not them). Plain UTF-8 text is stored once; anything else is kept byte for byte beside
    a readable copy (undecodable bytes and NUL shown as U+FFFD), so no answer can fail the
    write of a batch and none is lost."""
    if raw is None:
        return None, None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace").replace("\x00", "\ufffd"), raw
    if "\x00" in text:
        return text.replace("\x00", "\ufffd"), raw
    return text, None


def readable_text(raw: bytes | None) -> str | None:
    """The readable copy alone (for classifying and for showing at once)."""
    return stored_body(raw)[0]


def readable(value: Any) -> str:
    """A header name or value read back from storage as text that any JSON encoder and any
    page can carry: lone surrogates and NUL replaced."""
    text = value if isinstance(value, str) else str(value)
    return _UNSHOWABLE.sub("\ufffd", text)


def readable_headers(headers: Any) -> dict[str, str] | None:
    """Stored headers (JSON read from a row: trust nothing) as a plain str -> str map."""
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        return {"(unreadable)": readable(headers)}
    return {readable(k): readable(v) for k, v in headers.items()}
