"""Real destination servers on loopback for the data feeds' tests: an asyncssh SFTP server
(chrooted to a temporary directory, password and key authentication) and an aiosmtpd SMTP
server collecting what it is sent.

Use them as fixtures (import the names into a test module, or into conftest):

    from tests.feed_servers import make_sftp_server, sftp_server, smtp_server  # noqa: F401

``sftp_server`` yields an ``SftpServer`` (``host``, ``port``, ``username``, ``password``,
``root``, ``host_key`` as ``"ssh-ed25519 AAAA..."``, ``client_key`` = a private key it
accepts, ``target(...)`` = an ``SftpTarget`` for it); ``make_sftp_server(sftp=...)`` starts
one with another ``asyncssh.SFTPServer`` subclass (a hostile one). ``smtp_server`` yields an
``SmtpServer`` (``host``, ``port``, ``messages`` = parsed ``EmailMessage``s, ``envelopes``,
``answer_data`` / ``answer_rcpt`` = an SMTP answer such as ``"451 4.3.0 try later"`` to give
instead of accepting, and ``settings(...)`` = Settings that send through it).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from postback.config import Settings
from postback.core.addresses import AddressPolicy
from postback.delivery.feed_destinations import SftpTarget

LOOPBACK = AddressPolicy.parse("127.0.0.0/8,::1/128")
USERNAME = "feeds"
PASSWORD = "s3cret-Pa55word-for-tests"


def destination_settings(**overrides: Any) -> Settings:
    """Settings for destination tests: loopback allowed, timeouts long enough that a loaded
    CI machine never hits one a test did not ask for (those set 0.5 s themselves): a 2 s
    idle timeout once fired before a closing server's reset was read."""
    base: dict[str, Any] = {"allow_targets": LOOPBACK, "destination_connect_timeout": 10.0,
                            "destination_idle_timeout": 15.0, "destination_total_timeout": 60.0}
    base.update(overrides)
    return Settings(**base)


class _Loop:
    """One event loop in a daemon thread, for the servers of a whole test session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="feed-servers")
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


_loop: _Loop | None = None


def server_loop() -> _Loop:
    global _loop
    if _loop is None:
        _loop = _Loop()
    return _loop


class RecordingSFTP(asyncssh.SFTPServer):
    """The stock SFTP server, recording the opens and renames clients ask for."""

    ops: list[tuple[str, ...]]

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], chroot: bytes,
                 ops: list[tuple[str, ...]]) -> None:
        super().__init__(chan, chroot=chroot)
        self.ops = ops

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        self.ops.append(("open", path.decode()))
        return super().open(path, pflags, attrs)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self.ops.append(("rename", oldpath.decode(), newpath.decode()))
        super().rename(oldpath, newpath)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self.ops.append(("posix_rename", oldpath.decode(), newpath.decode()))
        super().posix_rename(oldpath, newpath)


@dataclass
class SftpServer:
    host: str
    port: int
    username: str
    password: str
    root: Path
    host_key: str
    client_key: str
    #: ("open", path), ("posix_rename", old, new), ... as the clients asked
    ops: list[tuple[str, ...]] = field(default_factory=list)
    #: how many times a client sent a password or a key (0: none was sent)
    auth_attempts: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    _acceptor: Any = None

    def target(self, **overrides: Any) -> SftpTarget:
        base: dict[str, Any] = {"host": self.host, "port": self.port,
                                "username": self.username, "password": self.password}
        base.update(overrides)
        return SftpTarget(**base)

    def close(self) -> None:
        acceptor = self._acceptor

        async def stop() -> None:
            acceptor.close()
            await acceptor.wait_closed()

        server_loop().run(stop())


_HOST_KEY = asyncssh.generate_private_key("ssh-ed25519")
_CLIENT_KEY = asyncssh.generate_private_key("ssh-ed25519")


def start_sftp_server(root: Path, sftp: type[asyncssh.SFTPServer] = RecordingSFTP,
                      host_key: asyncssh.SSHKey = _HOST_KEY) -> SftpServer:
    """An SFTP server on 127.0.0.1 (a free port), chrooted to ``root``; ``sftp`` is the
    SFTP server class (``RecordingSFTP``'s constructor: chan, chroot, ops)."""
    root.mkdir(parents=True, exist_ok=True)
    client_public = _CLIENT_KEY.convert_to_public()
    state = SftpServer("127.0.0.1", 0, USERNAME, PASSWORD, root,
                       " ".join(host_key.export_public_key().decode().split()[:2]),
                       _CLIENT_KEY.export_private_key().decode())

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            state.connections.append(str(conn.get_extra_info("peername")))

        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            state.auth_attempts.append("password")
            return username == USERNAME and password == PASSWORD

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            state.auth_attempts.append("publickey")
            return username == USERNAME and key.public_data == client_public.public_data

    def factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        if issubclass(sftp, RecordingSFTP):
            return sftp(chan, str(root).encode(), state.ops)
        return sftp(chan, chroot=str(root).encode())

    async def start() -> Any:
        return await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[host_key], server_factory=Server,
            sftp_factory=factory, allow_scp=False, process_factory=None)

    acceptor = server_loop().run(start())
    state.port = acceptor.get_port()
    state._acceptor = acceptor
    return state


@pytest.fixture
def make_sftp_server(tmp_path: Path) -> Iterator[Callable[..., SftpServer]]:
    started: list[SftpServer] = []

    def make(sftp: type[asyncssh.SFTPServer] = RecordingSFTP,
             host_key: asyncssh.SSHKey = _HOST_KEY) -> SftpServer:
        server = start_sftp_server(tmp_path / f"sftp-root-{len(started)}", sftp, host_key)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def sftp_server(make_sftp_server: Callable[..., SftpServer]) -> SftpServer:
    return make_sftp_server()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Collector:
    def __init__(self, state: SmtpServer) -> None:
        self.state = state

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.state.answer_rcpt is not None:
            return self.state.answer_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.state.answer_data is not None:
            return self.state.answer_data
        raw = envelope.original_content or b""
        self.state.envelopes.append(envelope)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.state.messages.append(parsed)
        return f"250 2.0.0 queued as q{len(self.state.messages)}"


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Envelope] = field(default_factory=list)
    #: answer every DATA / RCPT with this instead of accepting (e.g. "554 5.7.1 no")
    answer_data: str | None = None
    answer_rcpt: str | None = None

    def settings(self, base: Settings | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"smtp_host": self.host, "smtp_port": self.port,
                                  "smtp_tls": "none", "smtp_from": "Feeds <feeds@postback.test>"}
        values.update(overrides)
        return replace(base or destination_settings(), **values)


@contextmanager
def running_smtp_server(tls_context: ssl.SSLContext | None = None) -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1; with ``tls_context`` it offers STARTTLS and requires it."""
    state = SmtpServer("127.0.0.1", free_port())
    controller = Controller(_Collector(state), hostname=state.host, port=state.port,
                            data_size_limit=64 * 1024 * 1024, tls_context=tls_context,
                            require_starttls=tls_context is not None)
    controller.start()
    try:
        yield state
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with running_smtp_server() as state:
        yield state
