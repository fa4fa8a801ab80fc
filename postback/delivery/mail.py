"""Email destination of data feeds: the file attached, or its link, through the operator's
mail relay (``POSTBACK_SMTP_*``), with the standard library's ``smtplib`` and ``email``.

The relay is the operator's own server (like the egress proxy): it is not held to the
public-address policy and the connection is not bound to the egress source address; the
partner only names recipients. Every exchange with the relay is bounded by the idle timeout
and the whole delivery by the total timeout. A 4xx answer is temporary, a 5xx permanent.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path, PurePosixPath

from postback.config import Settings
from postback.delivery.destination import Delivered, DestinationError, MailTarget

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 50
#: the file's MIME type by its name's last extension
MIME_TYPES: dict[str, tuple[str, str]] = {
    ".csv": ("text", "csv"),
    ".tsv": ("text", "tab-separated-values"),
    ".tab": ("text", "tab-separated-values"),
    ".txt": ("text", "plain"),
    ".psv": ("text", "plain"),
    ".pipe": ("text", "plain"),
    ".xml": ("application", "xml"),
    ".json": ("application", "json"),
    ".jsonl": ("application", "x-ndjson"),
    ".ndjson": ("application", "x-ndjson"),
    ".gz": ("application", "gzip"),
    ".zip": ("application", "zip"),
}
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
                      r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,200}(@[A-Za-z0-9.-]{1,200})?")
_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


def mime_type(file_name: str) -> str:
    """``text/csv``, ``application/gzip``, ...: the type an attachment named so is sent as."""
    maintype, subtype = MIME_TYPES.get(PurePosixPath(file_name.lower()).suffix,
                                       ("application", "octet-stream"))
    return f"{maintype}/{subtype}"


def target_problem(target: MailTarget) -> str | None:
    """Why this target can never work, in plain words (checked again on every delivery)."""
    if not target.to:
        return "an email destination needs at least one recipient"
    if len(target.to) > MAX_RECIPIENTS:
        return f"an email destination takes at most {MAX_RECIPIENTS} recipients"
    for address in target.to:
        if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
            return (f"{str(address)[:100]!r} is not an email address like "
                    f"name@example.com")
    if target.link is not None and (not target.link.startswith(("https://", "http://"))
                                    or any(c.isspace() for c in target.link)
                                    or len(target.link) > 2000):
        return "the download link must be an http(s) address without spaces"
    if not target.attach and target.link is None:
        return "an email destination that does not attach the file needs its download link"
    return None


def _clean(text: str) -> str:
    return " ".join(text.split())


class _Relay:
    """One SMTP session with every exchange bounded: the idle timeout, and what is left of
    the total."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host is not None
        self.settings = settings
        self.host = settings.smtp_host
        self.port = settings.smtp_port or _DEFAULT_PORTS[settings.smtp_tls]
        self.where = f"[{self.host}]:{self.port}" if ":" in self.host else \
            f"{self.host}:{self.port}"
        self.deadline = time.monotonic() + settings.destination_total_timeout
        self.smtp: smtplib.SMTP | None = None
        self.stage = "greeting"

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.settings.tls_ca_file:
            context.load_verify_locations(self.settings.tls_ca_file)
        return context

    def arm(self, stage: str) -> smtplib.SMTP:
        self.stage = stage
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DestinationError(
                f"the mail server at {self.where} did not take the message within "
                f"{self.settings.destination_total_timeout:g} s", permanent=False)
        assert self.smtp is not None
        if self.smtp.sock is not None:
            self.smtp.sock.settimeout(min(self.settings.destination_idle_timeout, left))
        return self.smtp

    def open(self) -> None:
        timeout = min(self.settings.destination_connect_timeout,
                      max(self.deadline - time.monotonic(), 0.1))
        if self.settings.smtp_tls == "tls":
            self.smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout,
                                         context=self.tls_context())
        else:
            self.smtp = smtplib.SMTP(self.host, self.port, timeout=timeout)
        self.arm("greeting").ehlo()
        if self.settings.smtp_tls == "starttls":
            self.arm("STARTTLS").starttls(context=self.tls_context())
            self.arm("EHLO after STARTTLS").ehlo()
        if self.settings.smtp_username and self.settings.smtp_password:
            self.arm("login").login(self.settings.smtp_username, self.settings.smtp_password)

    def close(self) -> None:
        if self.smtp is None:
            return
        try:
            if self.smtp.sock is not None:
                self.smtp.sock.settimeout(1)
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()

    def words(self, raw: bytes | str) -> str:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = _clean(text)[:300]
        if self.settings.smtp_password:
            text = text.replace(self.settings.smtp_password, "***")
        return text

    def failure(self, exc: BaseException) -> DestinationError:
        where, stage = self.where, self.stage
        if isinstance(exc, DestinationError):
            return exc
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            said = self.words(exc.smtp_error)
            if self.settings.smtp_username:  # the operator's account is not the partner's
                said = said.replace(self.settings.smtp_username, "***")
            return DestinationError(
                "the mail relay refused this server's login (the operator's "
                f"POSTBACK_SMTP_USERNAME / PASSWORD): {exc.smtp_code} {said}",
                permanent=exc.smtp_code >= 500)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            feature = "STARTTLS (POSTBACK_SMTP_TLS=starttls)" if stage == "STARTTLS" \
                else "login (AUTH)"
            return DestinationError(f"the mail server at {where} does not offer {feature}",
                                    permanent=True)
        if isinstance(exc, smtplib.SMTPResponseException):
            return DestinationError(
                f"the mail server at {where} answered {exc.smtp_code} "
                f"{self.words(exc.smtp_error)} to the {stage}",
                permanent=exc.smtp_code >= 500)
        if isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc):
            return DestinationError(f"the mail server at {where} stopped answering during "
                                    f"the {stage}", permanent=False)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return DestinationError(f"the mail server at {where} closed the connection "
                                    f"during the {stage}", permanent=False)
        if isinstance(exc, TimeoutError):
            return DestinationError(f"the mail server at {where} stopped answering during "
                                    f"the {stage}", permanent=False)
        if isinstance(exc, ConnectionRefusedError):
            return DestinationError(f"connection refused at {where} (the mail server, "
                                    f"POSTBACK_SMTP_HOST)", permanent=False)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DestinationError(f"the mail server at {where} has a certificate that "
                                    f"cannot be verified: {exc.verify_message}",
                                    permanent=True)
        if isinstance(exc, ssl.SSLError):
            return DestinationError(f"TLS with the mail server at {where} failed: "
                                    f"{exc.reason or exc}", permanent=False)
        if isinstance(exc, socket.gaierror):
            return DestinationError(f"the mail server's name {self.host} could not be "
                                    f"resolved: {exc.strerror}", permanent=False)
        if isinstance(exc, OSError):
            return DestinationError(f"could not reach the mail server at {where}: "
                                    f"{exc.strerror or exc}", permanent=False)
        if isinstance(exc, smtplib.SMTPException):
            return DestinationError(f"the mail server at {where} failed during the {stage}: "
                                    f"{self.words(str(exc))}", permanent=False)
        log.error("email delivery through %s failed unexpectedly during the %s: %s", where,
                  stage, type(exc).__name__)
        return DestinationError(f"internal error while sending the email: "
                                f"{type(exc).__name__}", permanent=False)


def _message_id(given: str | None, sender: str) -> str:
    domain = sender.rsplit("@", 1)[-1] or "postback.invalid"
    if given is None:
        return make_msgid(domain=domain)
    bare = given.strip().strip("<>")
    if not _MESSAGE_ID.fullmatch(bare):
        raise DestinationError("the Message-ID must be letters, digits and .!#$%&'*+/=?^_`{|}~-"
                               ", with an optional @domain", permanent=True)
    return f"<{bare}>" if "@" in bare else f"<{bare}@{domain}>"


def deliver_mail(target: MailTarget, path: Path, file_name: str, subject: str,
                 body_text: str, settings: Settings,
                 message_id: str | None = None) -> Delivered:
    """Send ``path`` to ``target.to``: attached as ``file_name``, or as ``target.link``.
    ``message_id`` (e.g. ``"feed-12-run-345"``; ``@`` and the sender's domain added when it
    has none) is the same for every try of one run, so a resend after a crash is one
    message to the reader's mail program. Blocking."""
    if not settings.smtp_host or not settings.smtp_from:
        raise DestinationError("email feeds need the operator to set POSTBACK_SMTP_HOST",
                               permanent=True)
    problem = target_problem(target)
    if problem is not None:
        raise DestinationError(problem, permanent=True)
    name = PurePosixPath(_clean(file_name).replace("\\", "/")).name or "feed"
    size = path.stat().st_size
    limit = int(settings.smtp_max_attachment_mb * 1024 * 1024)
    attach, note = target.attach, ""
    if attach and size > limit:
        if target.link is None:
            raise DestinationError(
                f"the file ({size / 1048576:.1f} MB) is above the "
                f"{settings.smtp_max_attachment_mb:g} MB the operator allows as an email "
                f"attachment (POSTBACK_SMTP_MAX_ATTACHMENT_MB), and there is no link to send "
                f"instead", permanent=True)
        attach = False
        note = (f"The file ({size / 1048576:.1f} MB) is above the "
                f"{settings.smtp_max_attachment_mb:g} MB that can be attached. ")
    sender = parseaddr(settings.smtp_from)[1] or settings.smtp_from
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(target.to)
    msg["Subject"] = _clean(subject)[:500]
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = _message_id(message_id, sender)
    text = body_text.rstrip()
    if not attach:
        text += f"\n\n{note}Download {name}:\n{target.link}"
    msg.set_content(text + "\n", charset="utf-8", cte="quoted-printable")
    if attach:
        maintype, subtype = mime_type(name).split("/")
        msg.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype,
                           filename=name)
    payload = msg.as_bytes()
    relay = _Relay(settings)
    try:
        relay.open()
        smtp = relay.arm("sender (MAIL FROM)")
        code, answer = smtp.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, answer, sender)
        refused: dict[str, tuple[int, str]] = {}
        for address in target.to:
            code, answer = relay.arm(f"recipient {address} (RCPT TO)").rcpt(address)
            if code not in (250, 251):
                refused[address] = (code, relay.words(answer))
        if len(refused) == len(target.to):
            listed = "; ".join(f"{a}: {c} {w}" for a, (c, w) in refused.items())
            # permanent only when every refusal is: a 4xx may pass on a retry
            raise DestinationError(
                f"the mail server at {relay.where} refused every recipient ({listed})",
                permanent=all(c >= 500 for c, _ in refused.values()))
        code, answer = relay.arm("message (DATA)").data(payload)
        if code != 250:
            raise smtplib.SMTPDataError(code, answer)
    except Exception as exc:
        relay.close()
        raise relay.failure(exc) from None
    relay.close()
    taken = [a for a in target.to if a not in refused]
    how = (f"{name} attached ({size} bytes, {mime_type(name)})" if attach
           else f"the link to {name}" + (" (too big to attach)" if note else ""))
    said = f"the mail server at {relay.where} accepted the message ({msg['Message-ID']}) " \
        f"with {how} for {', '.join(taken)}: {code} {relay.words(answer)}"
    if refused:
        said += "; it refused " + "; ".join(f"{a} ({c} {w})" for a, (c, w) in refused.items())
    return Delivered(said)
