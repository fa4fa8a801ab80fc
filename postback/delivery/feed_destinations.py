"""Where scheduled data feeds deliver their files: SFTP and email.

The feeds service calls these from its worker thread (they block, each bounded by
``POSTBACK_DESTINATION_*_TIMEOUT``) and records ``Delivered.answer`` or the
``DestinationError``'s ``reason`` in the run; ``permanent`` says whether a retry can help.
No password or private key appears in an answer, a reason or a log line.

- ``deliver_sftp``: the file as ``<remote_name>.part``, then renamed; one already there
  with the same size is reported as delivered before (a crash after the rename).
- ``probe_sftp``: connect, authenticate, write and remove a test file; for "test
  connection" and to pin the host key when the feed is saved (``Delivered.host_key``).
- ``deliver_mail``: through the operator's relay, the file attached or its link.
- ``sftp_target_problem`` / ``mail_target_problem``: the checks at save time, in plain
  words (None when the target is well formed); ``host_key_fingerprint`` for showing a
  pinned key as ``SHA256:...``; ``mime_type`` of a file name.
"""

from __future__ import annotations

from postback.delivery.destination import Delivered, DestinationError, MailTarget, SftpTarget
from postback.delivery.mail import deliver_mail, mime_type
from postback.delivery.mail import target_problem as mail_target_problem
from postback.delivery.sftp import deliver_sftp, host_key_fingerprint, probe_sftp
from postback.delivery.sftp import target_problem as sftp_target_problem

__all__ = [
    "Delivered",
    "DestinationError",
    "MailTarget",
    "SftpTarget",
    "deliver_mail",
    "deliver_sftp",
    "host_key_fingerprint",
    "mail_target_problem",
    "mime_type",
    "probe_sftp",
    "sftp_target_problem",
]
