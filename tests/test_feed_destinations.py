"""Data feeds' destinations against real servers on loopback: an asyncssh SFTP server and an
aiosmtpd SMTP server (tests/feed_servers.py). What a partner notices: the file arrives with
its exact bytes, once; a refusal says why in plain words, and whether a retry can help."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from postback.config import Settings
from postback.core.addresses import AddressPolicy
from postback.delivery.feed_destinations import (
    DestinationError,
    MailTarget,
    deliver_mail,
    deliver_sftp,
    host_key_fingerprint,
    mail_target_problem,
    mime_type,
    probe_sftp,
    sftp_target_problem,
)
from tests.certs import TestCA
from tests.feed_servers import (  # noqa: F401 (fixtures)
    PASSWORD,
    RecordingSFTP,
    SftpServer,
    SmtpServer,
    _Collector,
    destination_settings,
    free_port,
    make_sftp_server,
    running_smtp_server,
    sftp_server,
    smtp_server,
)
from tests.test_ssrf import ForwardProxy

SETTINGS = destination_settings()


@pytest.fixture
def feed_file(tmp_path: Path) -> Path:
    path = tmp_path / "out" / "actions.csv"
    path.parent.mkdir()
    # over 1 MiB (several writes), CRLF and NUL bytes that must arrive untouched
    path.write_bytes(b"ActionId,Payout\r\n" + os.urandom(1_500_000) + b"\r\n1,2.50\r\n")
    return path


def fails(call: Callable[[], object]) -> DestinationError:
    with pytest.raises(DestinationError) as info:
        call()
    assert PASSWORD not in info.value.reason and PASSWORD not in repr(info.value)
    return info.value


# -- SFTP ----------------------------------------------------------------------------------

def test_upload_arrives_with_its_exact_bytes_through_part_and_rename_and_pins_the_key(
        sftp_server: SftpServer, feed_file: Path) -> None:
    (sftp_server.root / "in").mkdir()
    done = deliver_sftp(sftp_server.target(directory="in"), feed_file, "actions-1.csv",
                        SETTINGS)
    assert (sftp_server.root / "in" / "actions-1.csv").read_bytes() == feed_file.read_bytes()
    assert os.listdir(sftp_server.root / "in") == ["actions-1.csv"]  # no .part left
    assert ("open", "in/actions-1.csv.part") in sftp_server.ops
    assert ("posix_rename", "in/actions-1.csv.part", "in/actions-1.csv") in sftp_server.ops
    assert done.host_key == sftp_server.host_key  # first connection: the key to pin
    fp = host_key_fingerprint(sftp_server.host_key)
    assert fp.startswith("SHA256:") and fp in done.answer
    assert "in/actions-1.csv" in done.answer and str(feed_file.stat().st_size) in done.answer
    assert PASSWORD not in done.answer


def test_key_auth_with_the_pinned_key(sftp_server: SftpServer, feed_file: Path) -> None:
    target = sftp_server.target(password=None, private_key=sftp_server.client_key,
                                host_key=sftp_server.host_key)
    assert "client_key" not in repr(target) and "PRIVATE KEY" not in repr(target)
    done = deliver_sftp(target, feed_file, "a.csv", SETTINGS)
    assert (sftp_server.root / "a.csv").read_bytes() == feed_file.read_bytes()
    assert set(sftp_server.auth_attempts) == {"publickey"}  # no password was offered
    assert "first connection" not in done.answer


def test_a_changed_host_key_is_refused_before_the_password_is_sent(
        make_sftp_server: Callable[..., SftpServer], feed_file: Path) -> None:
    first = make_sftp_server()
    pinned = probe_sftp(first.target(), SETTINGS).host_key
    assert pinned == first.host_key
    other = make_sftp_server(host_key=asyncssh.generate_private_key("ssh-ed25519"))
    error = fails(lambda: deliver_sftp(other.target(host_key=pinned), feed_file, "a.csv",
                                       SETTINGS))
    assert error.permanent
    assert "host key changed" in error.reason
    assert host_key_fingerprint(pinned) in error.reason
    assert host_key_fingerprint(other.host_key) in error.reason
    assert other.auth_attempts == [] and list(other.root.iterdir()) == []


def test_a_wrong_password_is_a_permanent_refusal(sftp_server: SftpServer,
                                                 feed_file: Path) -> None:
    error = fails(lambda: deliver_sftp(sftp_server.target(password="not-it"), feed_file,
                                       "a.csv", SETTINGS))
    assert error.permanent
    assert error.reason == "the SFTP server refused the password for user 'feeds'"
    assert "not-it" not in error.reason


def test_a_missing_directory_is_named(sftp_server: SftpServer, feed_file: Path) -> None:
    error = fails(lambda: deliver_sftp(sftp_server.target(directory="outbox/daily"),
                                       feed_file, "a.csv", SETTINGS))
    assert error.permanent and "'outbox/daily' does not exist" in error.reason
    (sftp_server.root / "file").write_text("x")
    error = fails(lambda: probe_sftp(sftp_server.target(directory="file"), SETTINGS))
    assert error.permanent and "not a directory" in error.reason


def test_a_crash_before_or_after_the_rename_delivers_once(sftp_server: SftpServer,
                                                          feed_file: Path) -> None:
    # a crash mid-upload left a partial .part: written again from the start
    (sftp_server.root / "a.csv.part").write_bytes(b"half a file from the last try")
    deliver_sftp(sftp_server.target(), feed_file, "a.csv", SETTINGS)
    assert (sftp_server.root / "a.csv").read_bytes() == feed_file.read_bytes()
    assert not (sftp_server.root / "a.csv.part").exists()
    # a crash after the rename: the next try finds the whole file and sends nothing
    opened = len(sftp_server.ops)
    again = deliver_sftp(sftp_server.target(), feed_file, "a.csv", SETTINGS)
    assert again.answer.startswith("already delivered: a.csv")
    assert sftp_server.ops[opened:] == []
    assert (sftp_server.root / "a.csv").read_bytes() == feed_file.read_bytes()
    # a different file under that name is the partner's: not overwritten
    (sftp_server.root / "b.csv").write_bytes(b"someone else's")
    error = fails(lambda: deliver_sftp(sftp_server.target(), feed_file, "b.csv", SETTINGS))
    assert error.permanent and "not overwritten" in error.reason
    assert (sftp_server.root / "b.csv").read_bytes() == b"someone else's"


def test_probe_checks_the_directory_is_writable_and_leaves_nothing(
        sftp_server: SftpServer) -> None:
    done = probe_sftp(sftp_server.target(), SETTINGS)
    assert done.host_key == sftp_server.host_key and "is writable" in done.answer
    assert list(sftp_server.root.iterdir()) == []


def test_internal_addresses_are_refused_when_loopback_is_not_allowed(
        sftp_server: SftpServer, feed_file: Path) -> None:
    public_only = destination_settings(allow_targets=AddressPolicy())
    for host in ("127.0.0.1", "localhost"):
        target = sftp_server.target(host=host)
        error = fails(partial(deliver_sftp, target, feed_file, "a.csv", public_only))
        assert error.permanent
        assert error.reason.startswith("address not allowed: 127.0.0.1 is a loopback address")
    assert sftp_server.connections == []


def test_a_refused_connection_is_temporary(feed_file: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = replace(SFTP_TARGET_TEMPLATE, port=port)
    error = fails(lambda: deliver_sftp(target, feed_file, "a.csv", SETTINGS))
    assert not error.permanent and error.reason == f"connection refused at 127.0.0.1:{port}"


SFTP_TARGET_TEMPLATE = SftpServer("127.0.0.1", 1, "feeds", PASSWORD, Path("."), "",
                                  "").target()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_a_silent_server_times_out(silent_port: int, feed_file: Path) -> None:
    quick = destination_settings(destination_connect_timeout=0.5)
    target = replace(SFTP_TARGET_TEMPLATE, port=silent_port)
    error = fails(lambda: deliver_sftp(target, feed_file, "a.csv", quick))
    assert not error.permanent
    assert "did not complete the handshake within 0.5 s" in error.reason


class StallingSFTP(RecordingSFTP):
    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        await asyncio.sleep(3600)
        return 0


class ClosingSFTP(RecordingSFTP):
    def write(self, file_obj: object, offset: int, data: bytes) -> int | Awaitable[int]:
        if offset > 0:
            self.channel.get_connection().abort()
        return super().write(file_obj, offset, data)


def test_a_server_that_stalls_mid_upload_times_out(make_sftp_server: Callable[..., SftpServer],
                                                   feed_file: Path) -> None:
    server = make_sftp_server(StallingSFTP)
    quick = destination_settings(destination_idle_timeout=0.5)
    error = fails(lambda: deliver_sftp(server.target(), feed_file, "a.csv", quick))
    assert not error.permanent
    assert "stopped answering while writing a.csv.part" in error.reason
    assert not (server.root / "a.csv").exists()


def test_a_server_that_closes_mid_upload_is_temporary(
        make_sftp_server: Callable[..., SftpServer], feed_file: Path) -> None:
    server = make_sftp_server(ClosingSFTP)
    error = fails(lambda: deliver_sftp(server.target(), feed_file, "a.csv", SETTINGS))
    assert not error.permanent and "closed the connection" in error.reason
    assert not (server.root / "a.csv").exists()


def test_sftp_crosses_the_egress_proxy_in_a_connect_tunnel(sftp_server: SftpServer,
                                                           feed_file: Path) -> None:
    proxy = ForwardProxy()
    try:
        via = destination_settings(egress_proxy=proxy.url)
        deliver_sftp(sftp_server.target(host="localhost"), feed_file, "a.csv", via)
        assert (sftp_server.root / "a.csv").read_bytes() == feed_file.read_bytes()
        assert proxy.relayed == [f"CONNECT 127.0.0.1:{sftp_server.port}"]  # the checked address
        public_only = replace(via, allow_targets=AddressPolicy())
        error = fails(lambda: deliver_sftp(sftp_server.target(), feed_file, "b.csv",
                                           public_only))
        assert error.permanent and len(proxy.relayed) == 1  # refused before the proxy
    finally:
        proxy.close()


def test_targets_are_checked_in_plain_words() -> None:
    good = replace(SFTP_TARGET_TEMPLATE, port=22)
    assert sftp_target_problem(good) is None
    assert sftp_target_problem(replace(good, password=None)) == \
        "an SFTP destination needs a password or a private key"
    assert sftp_target_problem(replace(good, private_key="-----BEGIN nonsense")) == \
        "the private key is not an OpenSSH or PEM private key"
    assert "ssh-ed25519 AAAA" in (sftp_target_problem(replace(good, host_key="junk")) or "")
    assert mail_target_problem(MailTarget(to=("a@b.example",))) is None
    assert "not an email address" in (mail_target_problem(MailTarget(to=("a@b\r\nBcc: x",)))
                                      or "")
    assert mail_target_problem(MailTarget(to=("a@b.example",), attach=False)) == \
        "an email destination that does not attach the file needs its download link"


# -- email ---------------------------------------------------------------------------------

def test_the_attachment_arrives_with_its_bytes_type_and_name(smtp_server: SmtpServer,
                                                             feed_file: Path) -> None:
    settings = smtp_server.settings()
    done = deliver_mail(MailTarget(to=("ops@partner.example", "books@partner.example")),
                        feed_file, "actions-2024-05-01.csv", "Actions feed — 1 May",
                        "Your daily actions feed.\nRows: 3", settings,
                        message_id="feed-12-run-345")
    assert "accepted" in done.answer and "queued as q1" in done.answer
    [msg] = smtp_server.messages
    assert msg["Message-ID"] == "<feed-12-run-345@postback.test>"
    assert msg["Subject"] == "Actions feed — 1 May"
    assert smtp_server.envelopes[0].rcpt_tos == ["ops@partner.example",
                                                 "books@partner.example"]
    body = msg.get_body(("plain",))
    assert body is not None and "Rows: 3" in body.get_content()
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "text/csv"
    assert part.get_filename() == "actions-2024-05-01.csv"
    assert part.get_payload(decode=True) == feed_file.read_bytes()


def test_gzip_and_other_formats_have_their_mime_types(smtp_server: SmtpServer,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n'))
    deliver_mail(MailTarget(to=("a@partner.example",)), path, "f.jsonl.gz", "s", "b",
                 smtp_server.settings())
    [part] = list(smtp_server.messages[0].iter_attachments())
    assert part.get_content_type() == "application/gzip"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes) and gzip.decompress(payload) == b'{"a": 1}\n'
    assert [mime_type(n) for n in ("a.xml", "a.jsonl", "a.tsv", "a.bin")] == \
        ["application/xml", "application/x-ndjson", "text/tab-separated-values",
         "application/octet-stream"]


def test_link_mode_and_a_file_too_big_to_attach(smtp_server: SmtpServer,
                                                feed_file: Path) -> None:
    link = "https://feeds.example/f/12/345?sig=abc"
    deliver_mail(MailTarget(to=("a@partner.example",), attach=False, link=link), feed_file,
                 "a.csv", "s", "Your feed.", smtp_server.settings())
    small = smtp_server.settings(smtp_max_attachment_mb=1.0)  # the file is 1.4 MB
    done = deliver_mail(MailTarget(to=("a@partner.example",), link=link), feed_file,
                        "a.csv", "s", "Your feed.", small)
    assert "too big to attach" in done.answer
    for msg in smtp_server.messages:
        assert list(msg.iter_attachments()) == []
        body = msg.get_body(("plain",))
        assert body is not None and link in body.get_content()
    assert body is not None and "above the 1 MB" in body.get_content()
    error = fails(lambda: deliver_mail(MailTarget(to=("a@partner.example",)), feed_file,
                                       "a.csv", "s", "b", small))
    assert error.permanent and "above the 1 MB" in error.reason
    assert len(smtp_server.messages) == 2


@pytest.mark.parametrize(("answer", "where", "permanent"), [
    ("451 4.3.0 Mailbox busy, try again later", "data", False),
    ("554 5.7.1 Message rejected as spam", "data", True),
    ("450 4.2.1 Recipient rate limited", "rcpt", False),
    ("550 5.1.1 No such user", "rcpt", True),
])
def test_4xx_is_temporary_and_5xx_permanent(smtp_server: SmtpServer, feed_file: Path,
                                            answer: str, where: str, permanent: bool) -> None:
    setattr(smtp_server, f"answer_{where}", answer)
    error = fails(lambda: deliver_mail(MailTarget(to=("a@partner.example",)), feed_file,
                                       "a.csv", "s", "b", smtp_server.settings()))
    assert error.permanent is permanent
    assert answer in error.reason and "127.0.0.1" in error.reason
    assert smtp_server.messages == []


def test_a_refused_relay_login_names_the_setting_not_the_operators_username(
        feed_file: Path) -> None:
    """The partner reads the run's error: it says the operator's login was refused, never
    the operator's account name (not even when the relay's answer repeats it)."""
    username = "relay-account-7f3k"

    def refuse(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
               auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False,
                          message=f"535 5.7.8 no such login {username}")

    port = free_port()
    controller = Controller(_Collector(SmtpServer("127.0.0.1", port)), hostname="127.0.0.1",
                            port=port, authenticator=refuse, auth_require_tls=False)
    controller.start()
    try:
        settings = replace(SETTINGS, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none",
                           smtp_from="f@postback.test", smtp_username=username,
                           smtp_password="relay-Pa55")
        error = fails(lambda: deliver_mail(MailTarget(to=("a@partner.example",)), feed_file,
                                           "a.csv", "s", "b", settings))
    finally:
        controller.stop()
    assert error.permanent
    assert error.reason.startswith("the mail relay refused this server's login (the "
                                   "operator's POSTBACK_SMTP_USERNAME / PASSWORD): 535")
    assert username not in error.reason and "relay-Pa55" not in error.reason


def test_email_needs_the_operators_relay(feed_file: Path, silent_port: int) -> None:
    error = fails(lambda: deliver_mail(MailTarget(to=("a@partner.example",)), feed_file,
                                       "a.csv", "s", "b", SETTINGS))
    assert error.permanent
    assert error.reason == "email feeds need the operator to set POSTBACK_SMTP_HOST"
    silent = replace(SETTINGS, smtp_host="127.0.0.1", smtp_port=silent_port,
                     smtp_from="f@postback.test", smtp_tls="none",
                     destination_connect_timeout=0.5)
    error = fails(lambda: deliver_mail(MailTarget(to=("a@partner.example",)), feed_file,
                                       "a.csv", "s", "b", silent))
    assert not error.permanent and "stopped answering" in error.reason


def test_starttls_verifies_the_relays_certificate(tmp_path: Path, feed_file: Path) -> None:
    ca = TestCA(tmp_path)
    with running_smtp_server(ca.server_context("localhost")) as server:
        trusted = server.settings(smtp_host="localhost", smtp_tls="starttls",
                                  tls_ca_file=str(ca.ca_file))
        deliver_mail(MailTarget(to=("a@partner.example",)), feed_file, "a.csv", "s", "b",
                     trusted)
        [part] = list(server.messages[0].iter_attachments())
        assert part.get_payload(decode=True) == feed_file.read_bytes()
        untrusted = replace(trusted, tls_ca_file=None)
        error = fails(lambda: deliver_mail(MailTarget(to=("a@partner.example",)), feed_file,
                                           "a.csv", "s", "b", untrusted))
        assert error.permanent and "certificate that cannot be verified" in error.reason
        assert len(server.messages) == 1


def test_smtp_settings_are_checked_at_start(tmp_path: Path) -> None:
    env = {"POSTBACK_SMTP_HOST": "mail.example", "POSTBACK_SMTP_FROM": "feeds@x.example"}
    settings = Settings.from_env(env)
    assert (settings.smtp_host, settings.smtp_tls, settings.smtp_port) == \
        ("mail.example", "starttls", None)
    assert settings.smtp_max_attachment_mb == 10.0
    secret = tmp_path / "pw"
    secret.write_text("pw-from-file\n")
    settings = Settings.from_env({**env, "POSTBACK_SMTP_USERNAME": "u",
                                  "POSTBACK_SMTP_PASSWORD_FILE": str(secret),
                                  "POSTBACK_SMTP_TLS": "tls", "POSTBACK_SMTP_PORT": "2465"})
    assert (settings.smtp_password, settings.smtp_port) == ("pw-from-file", 2465)
    assert "pw-from-file" not in repr(settings)
    for bad, words in [({"POSTBACK_SMTP_TLS": "ssl"}, "starttls, tls or none"),
                       ({"POSTBACK_SMTP_PORT": "0"}, "port number"),
                       ({"POSTBACK_SMTP_FROM": ""}, "POSTBACK_SMTP_FROM"),
                       ({"POSTBACK_SMTP_USERNAME": "u"}, "go together"),
                       ({"POSTBACK_SMTP_MAX_ATTACHMENT_MB": "-1"}, "positive"),
                       ({"POSTBACK_DESTINATION_IDLE_TIMEOUT": "soon"}, "a number")]:
        with pytest.raises(ValueError, match=words):
            Settings.from_env({**env, **bad})
