"""Standard Webhooks signatures (v1, HMAC-SHA256).

Signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` over the exact bytes sent;
for a GET postback, which has no body, it is ``{webhook-id}.{webhook-timestamp}.{URL}``
with the full URL as sent (our documented extension). During a rotation both the new and
the previous secret sign, space-separated, and a receiver accepts either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature_headers(event_id: str, timestamp: int, content: bytes,
                      keys: tuple[bytes, ...]) -> dict[str, str]:
    signed = f"{event_id}.{timestamp}.".encode() + content
    signatures = " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys)
    return {"webhook-timestamp": str(timestamp), "webhook-signature": signatures}
