"""What a scheduled data feed's file is delivered to, and how a delivery ends: the types
shared by ``sftp`` and ``mail`` (the feeds service imports them from ``feed_destinations``).

Nothing here holds a secret in its ``repr``: a target's password and private key are left
out of it, so a target logged or shown in a traceback shows neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class SftpTarget:
    """Keyword arguments only (``SftpTarget(host=..., username=...)``): the fields in the
    order the interface names them, ``username`` after the defaulted ``port``."""

    host: str
    port: int = 22
    username: str
    password: str | None = field(default=None, repr=False)
    #: OpenSSH or PEM private key text (not encrypted with a passphrase)
    private_key: str | None = field(default=None, repr=False)
    #: the remote directory the file goes into (it must exist)
    directory: str = "."
    #: the pinned host key, ``"ssh-ed25519 AAAA..."`` as shown to the partner; None: the
    #: first connection accepts the key it is offered and returns it to be pinned
    host_key: str | None = None


@dataclass(frozen=True)
class MailTarget:
    to: tuple[str, ...]
    attach: bool = True
    #: where the file can be downloaded: sent instead of the file when ``attach`` is False
    #: or the file is above the operator's attachment limit
    link: str | None = None


@dataclass(frozen=True)
class Delivered:
    #: what the destination said, in plain words, for the run record
    answer: str
    #: SFTP: the server's host key as it presented it (``"ssh-ed25519 AAAA..."``), to pin
    host_key: str | None = None


class DestinationError(Exception):
    """A delivery that did not happen. ``reason`` is plain words a partner can act on, never
    a secret; ``permanent`` is True when retrying cannot help (authentication refused, host
    key changed, address not allowed, a file the destination will never take)."""

    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent

    def __repr__(self) -> str:
        return f"DestinationError({self.reason!r}, permanent={self.permanent})"
