"""Standard Webhooks signatures: ``v1`` (HMAC-SHA256, a shared ``whsec_`` secret) or
``v1a`` (ed25519, a ``whsk_`` private key whose ``whpk_`` public key can be published).

Signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` over the exact bytes sent;
for a GET postback, which has no body, it is ``{webhook-id}.{webhook-timestamp}.{URL}``
with the full URL as sent (our documented extension). During a rotation both the new and
the previous secret sign, space-separated, and a receiver accepts either.

Test postbacks (the test tool) are never signed with a live key: each setting has a test
key derived from its live one (:func:`test_secret`), so a test cannot be replayed or
passed off as a live postback, and nothing new has to be stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SYMMETRIC, PRIVATE, PUBLIC = "whsec_", "whsk_", "whpk_"
SigningKey = bytes | Ed25519PrivateKey
TEST_KEY_LABEL = b"postback test signing key"


def new_secret(scheme: str = "v1") -> str:
    """A new ``whsec_`` secret (v1) or ``whsk_`` private key (v1a)."""
    if scheme == "v1a":
        return PRIVATE + base64.b64encode(
            Ed25519PrivateKey.generate().private_bytes_raw()).decode("ascii")
    return SYMMETRIC + base64.b64encode(os.urandom(32)).decode("ascii")


def secret_key(secret: str) -> SigningKey:
    if secret.startswith(PRIVATE):
        return Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(secret.removeprefix(PRIVATE)))
    return base64.b64decode(secret.removeprefix(SYMMETRIC))


def test_secret(secret: str) -> str:
    """The setting's test secret, derived from its live one: HMAC-SHA256 keyed with the live
    key's bytes (the 32 decoded bytes of a ``whsec_`` secret, or the 32-byte seed of a
    ``whsk_`` ed25519 key) over :data:`TEST_KEY_LABEL`. The result is a ``whsec_`` secret
    for a v1 setting and a ``whsk_`` key (that digest as the seed) for a v1a one. One-way:
    knowing it tells nothing about the live secret, so it may be shown to the partner."""
    key = secret_key(secret)
    raw = key if isinstance(key, bytes) else key.private_bytes_raw()
    derived = base64.b64encode(hmac.new(raw, TEST_KEY_LABEL, hashlib.sha256).digest())
    return (SYMMETRIC if isinstance(key, bytes) else PRIVATE) + derived.decode("ascii")


def public_key(secret: str) -> str | None:
    """The ``whpk_`` public key of a v1a private key (None for a v1 secret)."""
    key = secret_key(secret)
    if isinstance(key, bytes):
        return None
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC + base64.b64encode(raw).decode("ascii")


def _sign(key: SigningKey, signed: bytes) -> str:
    if isinstance(key, bytes):
        return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return "v1a," + base64.b64encode(key.sign(signed)).decode()


def signature_headers(event_id: str, timestamp: int, content: bytes,
                      keys: tuple[SigningKey, ...]) -> dict[str, str]:
    signed = f"{event_id}.{timestamp}.".encode() + content
    return {"webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(_sign(key, signed) for key in keys)}
