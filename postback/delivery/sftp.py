"""SFTP destination of data feeds: one file to the partner's server, never twice.

The connection leaves the way postbacks do: the host is resolved by the same guarded
resolver (a name with any address the policy refuses is refused whole), the socket is
opened to the address that was checked (bound to ``POSTBACK_EGRESS_SOURCE_ADDRESS`` when
set) and handed to asyncssh, so the checked address is the one dialled. With
``POSTBACK_EGRESS_PROXY`` the socket is a CONNECT tunnel through the proxy to that checked
address and port (the proxy sees the address, never the content).

The host key is checked before any credential is sent: pinned, a different key is refused;
unpinned, the key offered is accepted and returned to be pinned (trust on first use).

The file is written as ``<name>.part`` (truncated and written again on a retry) and renamed
to ``<name>`` when complete (posix-rename when the server has it, so the name appears whole
or not at all). A ``<name>`` already there with the file's size is a delivery that happened
before a crash: it is reported as delivered, not sent again. One with another size is not
ours to overwrite: refused.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import posixpath
import secrets
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import asyncssh

from postback.config import Settings
from postback.core.addresses import literal_ip
from postback.core.retry import ErrorClass
from postback.delivery.destination import Delivered, DestinationError, SftpTarget
from postback.delivery.resolver import GuardedResolver, resolver_failure

log = logging.getLogger(__name__)

T = TypeVar("T")
_CHUNK = 1 << 20  # read from the local file and written (in parallel requests) per step
_MAX_NAME = 255


# -- checks a feed can make when it is saved ------------------------------------------------

def parse_host_key(text: str) -> asyncssh.SSHKey:
    """The pinned key (``"ssh-ed25519 AAAA..."``, an optional comment after it)."""
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError, TypeError):
        raise DestinationError(
            "the pinned host key is not an SSH public key line like "
            "'ssh-ed25519 AAAA...'", permanent=True) from None
    return key


def key_line(key: asyncssh.SSHKey) -> str:
    """A host key as ``ssh-keyscan`` and ``known_hosts`` show it: algorithm and base64."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:...`` as ``ssh`` and ``ssh-keygen -l`` show it."""
    return key.get_fingerprint("sha256")


def host_key_fingerprint(line: str) -> str:
    """The SHA256 fingerprint of a key line (for showing a pinned key to the partner)."""
    return fingerprint(parse_host_key(line))


def target_problem(target: SftpTarget) -> str | None:
    """Why this target can never work, in plain words (checked again on every delivery)."""
    if not target.host or len(target.host) > 253 or any(
            c.isspace() or c in "/@\0" for c in target.host.strip("[]")):
        return "the SFTP host must be a host name or an IP address"
    if not 1 <= target.port <= 65535:
        return f"the SFTP port must be 1 to 65535, not {target.port}"
    if not target.username or len(target.username) > 255 or any(
            c in target.username for c in "\0\r\n"):
        return "the SFTP username must be 1 to 255 characters, on one line"
    if not target.password and not target.private_key:
        return "an SFTP destination needs a password or a private key"
    if not target.directory or "\0" in target.directory or len(target.directory) > 1024:
        return "the SFTP directory must be a path of at most 1024 characters"
    if target.private_key:
        try:
            _client_key(target.private_key)
        except DestinationError as exc:
            return exc.reason
    if target.host_key is not None:
        try:
            parse_host_key(target.host_key)
        except DestinationError as exc:
            return exc.reason
    return None


def _name_problem(name: str) -> str | None:
    if (not name or name in (".", "..") or "/" in name or "\0" in name or "\n" in name
            or len(name.encode()) > _MAX_NAME - len(".part")):
        return (f"the remote file name {name[:80]!r} must be one file name (no '/'), at most "
                f"{_MAX_NAME - len('.part')} bytes")
    return None


def _client_key(text: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_private_key(text)
    except asyncssh.KeyEncryptionError:
        raise DestinationError("the private key is encrypted with a passphrase; give the key "
                               "without one", permanent=True) from None
    except (asyncssh.KeyImportError, ValueError, TypeError):
        # never the key's text, nor asyncssh's words about it
        raise DestinationError("the private key is not an OpenSSH or PEM private key",
                               permanent=True) from None


# -- the connection ------------------------------------------------------------------------

def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _addresses(host: str, port: int, settings: Settings) -> list[str]:
    """The addresses of ``host`` the policy allows (all of them, or a refusal)."""
    literal = literal_ip(host)
    if literal is not None:
        reason = settings.allow_targets.refusal(literal)
        if reason is not None:
            raise DestinationError(f"address not allowed: {reason}", permanent=True)
        return [str(literal)]
    resolver = GuardedResolver(settings.allow_targets, timeout=settings.destination_connect_timeout)
    try:
        results = await resolver.resolve(host, port, socket.AF_UNSPEC)
    except OSError as exc:
        error, message = resolver_failure(exc, host)
        if error is ErrorClass.BLOCKED:
            message = message.replace("refused: ", "address not allowed: ", 1)
        raise DestinationError(message, permanent=error in (ErrorClass.BLOCKED,
                                                            ErrorClass.DNS)) from None
    finally:
        await resolver.close()
    found: list[str] = []
    for result in results:
        if result["host"] not in found:
            found.append(result["host"])
    if not found:
        raise DestinationError(f"{host} has no address", permanent=False)
    return found


async def _dial(address: str, port: int, settings: Settings) -> socket.socket:
    """A connected, non-blocking TCP socket to ``address`` (bound to the egress source)."""
    loop = asyncio.get_running_loop()
    info = await loop.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                  flags=socket.AI_NUMERICHOST)
    family, kind, proto, _, sockaddr = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if settings.egress_source_address:
            sock.bind((settings.egress_source_address, 0))
        async with asyncio.timeout(settings.destination_connect_timeout):
            await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_failure(exc: BaseException, where: str, timeout: float) -> DestinationError:
    if isinstance(exc, TimeoutError):
        return DestinationError(f"no connection to {where} within {timeout:g} s",
                                permanent=False)
    if isinstance(exc, ConnectionRefusedError):
        return DestinationError(f"connection refused at {where}", permanent=False)
    words = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return DestinationError(f"could not connect to {where}: {words}", permanent=False)


async def _direct(addresses: list[str], port: int, settings: Settings) -> socket.socket:
    first: DestinationError | None = None
    for address in addresses[:4]:
        try:
            return await _dial(address, port, settings)
        except OSError as exc:  # TimeoutError included
            failure = _connect_failure(exc, _where(address, port),
                                       settings.destination_connect_timeout)
            first = first or failure
    assert first is not None
    raise first


async def _tunnel(proxy: str, address: str, port: int, settings: Settings) -> socket.socket:
    """A CONNECT tunnel through the egress proxy to the checked ``address``."""
    parts = urlsplit(proxy)
    if parts.scheme != "http" or not parts.hostname:
        raise DestinationError("POSTBACK_EGRESS_PROXY must be an http:// proxy to carry "
                               "SFTP (a CONNECT tunnel)", permanent=True)
    proxy_port = parts.port or 80
    where = _where(parts.hostname, proxy_port)
    loop = asyncio.get_running_loop()
    try:  # the operator's own proxy: looked up, not vetted (as for postbacks)
        async with asyncio.timeout(settings.destination_connect_timeout):
            infos = await loop.getaddrinfo(parts.hostname, proxy_port, type=socket.SOCK_STREAM)
        sock = await _direct([str(i[4][0]) for i in infos], proxy_port, settings)
    except DestinationError as exc:
        raise DestinationError(f"the egress proxy: {exc.reason}", permanent=False) from None
    except OSError as exc:
        raise DestinationError(f"the egress proxy {where} could not be reached: "
                               f"{exc.strerror or exc}", permanent=False) from None
    authority = _where(address, port)
    request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request += f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}\r\n"
    try:
        async with asyncio.timeout(settings.destination_connect_timeout):
            await loop.sock_sendall(sock, (request + "\r\n").encode())
            head = b""
            while not head.endswith(b"\r\n\r\n"):  # a byte at a time: what follows is SSH's
                byte = await loop.sock_recv(sock, 1)
                if not byte or len(head) > 16384:
                    raise ConnectionError("the proxy closed the connection")
                head += byte
    except (OSError, TimeoutError) as exc:
        sock.close()
        words = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
        raise DestinationError(f"the egress proxy {where} did not open a tunnel to "
                               f"{authority}: {words}", permanent=False) from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or fields[1] != "200":
        sock.close()
        code = fields[1] if len(fields) > 1 else ""
        raise DestinationError(
            f"the egress proxy {where} refused a tunnel to {authority}: {status_line[:200]}",
            permanent=code in ("403", "405", "407"))
    return sock


class _HostKeyCheck(asyncssh.SSHClient):
    """Sees the host key before any credential is sent, and accepts it only if it is the
    pinned one (or, unpinned, any plain key: the caller pins it)."""

    def __init__(self, pinned: asyncssh.SSHKey | None) -> None:
        self.pinned = pinned
        self.presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.presented = key
        return self.pinned is None or key.public_data == self.pinned.public_data


class _Session:
    def __init__(self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient,
                 key: asyncssh.SSHKey | None, where: str) -> None:
        self.conn, self.sftp, self.key, self.where = conn, sftp, key, where


def _credentials(target: SftpTarget) -> tuple[list[asyncssh.SSHKey] | None, str]:
    keys = [_client_key(target.private_key)] if target.private_key else None
    offered = " and ".join(w for w, given in (("private key", keys), ("password",
                                                                       target.password)) if given)
    return keys, offered


async def _open(target: SftpTarget, settings: Settings) -> _Session:
    problem = target_problem(target)
    if problem is not None:
        raise DestinationError(problem, permanent=True)
    pinned = parse_host_key(target.host_key) if target.host_key is not None else None
    keys, offered = _credentials(target)
    host = target.host.strip("[]") if literal_ip(target.host) else target.host
    addresses = await _addresses(host, target.port, settings)
    if settings.egress_proxy:
        sock = await _tunnel(settings.egress_proxy, addresses[0], target.port, settings)
    else:
        sock = await _direct(addresses, target.port, settings)
    where = _where(host, target.port)
    check = _HostKeyCheck(pinned)
    # plain keys only (a certificate would need a CA we do not have); pinned: the pinned
    # key's algorithms, so a server with several keys shows the one we know
    algs = [alg.decode("ascii") for alg in (
        pinned.sig_algorithms if pinned is not None
        else asyncssh.public_key.get_default_public_key_algs())]
    auth = ["publickey"] if keys else []
    if target.password:
        auth += ["keyboard-interactive", "password"]
    try:
        conn = await asyncssh.connect(
            host, target.port, sock=sock, username=target.username,
            password=target.password, client_keys=keys, agent_path=None,
            known_hosts=([], [], []), client_factory=lambda: check,
            server_host_key_algs=algs, preferred_auth=auth, config=[],
            connect_timeout=settings.destination_connect_timeout,
            login_timeout=settings.destination_connect_timeout,
            kbdint_auth=bool(target.password), password_auth=bool(target.password),
            public_key_auth=bool(keys), gss_auth=False, host_based_auth=False,
            canonicalize_hostname=False)
    except asyncssh.HostKeyNotVerifiable:
        sock.close()
        if pinned is not None and check.presented is not None:
            raise DestinationError(
                f"host key changed: expected {fingerprint(pinned)}, got "
                f"{fingerprint(check.presented)} ({key_line(check.presented).split()[0]}) "
                f"from {where}; if the partner changed its server's key, pin the new one",
                permanent=True) from None
        raise DestinationError(f"the SSH server at {where} offered no host key we can check "
                               f"(only certificates or unknown key types)",
                               permanent=True) from None
    except asyncssh.PermissionDenied:
        sock.close()
        raise DestinationError(f"the SFTP server refused the {offered} for user "
                               f"'{target.username}'", permanent=True) from None
    except asyncssh.KeyExchangeFailed as exc:
        sock.close()
        algorithms = "the pinned key's type" if pinned is not None else "an algorithm"
        raise DestinationError(f"the SSH server at {where} and we share no {algorithms} "
                               f"({_words(exc)})", permanent=True) from None
    except asyncssh.DisconnectError as exc:
        sock.close()
        raise DestinationError(f"the SSH server at {where} closed the connection: "
                               f"{_words(exc)}", permanent=False) from None
    except TimeoutError:
        sock.close()
        raise DestinationError(f"the SSH server at {where} did not complete the handshake "
                               f"within {settings.destination_connect_timeout:g} s",
                               permanent=False) from None
    except OSError as exc:
        sock.close()
        raise _connect_failure(exc, where, settings.destination_connect_timeout) from None
    except BaseException:
        sock.close()
        raise
    try:
        async with asyncio.timeout(settings.destination_idle_timeout):
            sftp = await conn.start_sftp_client()
    except (asyncssh.ChannelOpenError, asyncssh.SFTPError) as exc:
        conn.close()
        raise DestinationError(f"the server at {where} does not offer SFTP to user "
                               f"'{target.username}' ({_words(exc)})", permanent=True) from None
    except BaseException:
        conn.close()
        raise
    return _Session(conn, sftp, check.presented, where)


async def _close(s: _Session) -> None:
    s.conn.close()
    try:
        async with asyncio.timeout(1):
            await s.conn.wait_closed()
    except (TimeoutError, OSError, asyncssh.Error):
        pass


def _words(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or str(exc)
    return " ".join(str(reason).split())[:300] or type(exc).__name__


async def _step(aw: Awaitable[T], what: str, settings: Settings) -> T:
    """One exchange with the server, bounded by the idle timeout."""
    try:
        async with asyncio.timeout(settings.destination_idle_timeout):
            return await aw
    except TimeoutError:
        raise DestinationError(f"the SFTP server stopped answering while {what} (nothing "
                               f"for {settings.destination_idle_timeout:g} s)",
                               permanent=False) from None


def _sftp_failure(exc: asyncssh.SFTPError, what: str, target: SftpTarget) -> DestinationError:
    if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect):
        return DestinationError(f"the SFTP server does not let user '{target.username}' "
                                f"{what} ({_words(exc)})", permanent=True)
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return DestinationError(f"the SFTP server found no such file or directory while "
                                f"trying to {what} ({_words(exc)})", permanent=True)
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return DestinationError(f"the SFTP server closed the connection while trying to "
                                f"{what}", permanent=False)
    return DestinationError(f"the SFTP server could not {what}: {_words(exc)}",
                            permanent=False)


async def _directory(s: _Session, target: SftpTarget, settings: Settings) -> str:
    directory = target.directory
    try:
        attrs = await _step(s.sftp.stat(directory), f"looking at '{directory}'", settings)
    except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
        raise DestinationError(f"the directory '{directory}' does not exist on the SFTP "
                               f"server {s.where}", permanent=True) from None
    except asyncssh.SFTPError as exc:
        raise _sftp_failure(exc, f"look at the directory '{directory}'", target) from None
    is_dir = (stat.S_ISDIR(attrs.permissions) if attrs.permissions is not None
              else attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY)
    if not is_dir:
        raise DestinationError(f"'{directory}' on the SFTP server {s.where} is not a "
                               f"directory", permanent=True)
    return directory


async def _size(s: _Session, path: str, settings: Settings) -> int | None:
    """The remote file's size, or None if there is none."""
    try:
        attrs = await _step(s.sftp.stat(path), f"looking for '{path}'", settings)
    except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
        return None
    return attrs.size if attrs.size is not None else -1


def _tofu(s: _Session, target: SftpTarget) -> str:
    if target.host_key is None and s.key is not None:
        return f"; host key {fingerprint(s.key)} accepted on first connection (pin it)"
    return ""


async def _deliver(target: SftpTarget, path: Path, remote_name: str,
                   settings: Settings) -> Delivered:
    problem = _name_problem(remote_name)
    if problem is not None:
        raise DestinationError(problem, permanent=True)
    size = path.stat().st_size
    s = await _open(target, settings)
    try:
        directory = await _directory(s, target, settings)
        final = remote_name if directory == "." else posixpath.join(directory, remote_name)
        part = final + ".part"
        there = await _size(s, final, settings)
        presented = key_line(s.key) if s.key is not None else None
        if there == size:
            return Delivered(f"already delivered: {final} ({size} bytes) is on {s.where}, "
                             f"so it was not sent again{_tofu(s, target)}", presented)
        if there is not None:
            raise DestinationError(
                f"a different file named {final} ({there} bytes, ours is {size}) is already "
                f"on {s.where}; it is not overwritten (remove or rename it)", permanent=True)
        sent = 0
        try:
            remote = await _step(s.sftp.open(part, "wb"), f"creating {part}", settings)
            with path.open("rb") as local:  # on a failure the connection's end closes it
                while chunk := local.read(_CHUNK):
                    await _step(remote.write(chunk, sent),
                                f"writing {part} ({sent} of {size} bytes sent)", settings)
                    sent += len(chunk)
            await _step(remote.close(), f"closing {part}", settings)
        except asyncssh.SFTPError as exc:
            raise _sftp_failure(exc, f"write {part} ({sent} of {size} bytes sent)",
                                target) from None
        kept = await _size(s, part, settings)
        if kept != size:
            raise DestinationError(f"the SFTP server kept {kept} of the {size} bytes sent to "
                                   f"{part}", permanent=False)
        how = "renamed"
        try:
            try:
                await _step(s.sftp.posix_rename(part, final), f"renaming {part}", settings)
                how = "renamed atomically"
            except asyncssh.SFTPOpUnsupported:
                await _step(s.sftp.rename(part, final), f"renaming {part}", settings)
        except asyncssh.SFTPError as exc:
            if await _size(s, final, settings) != size:
                raise _sftp_failure(exc, f"rename {part} to {remote_name}", target) from None
        return Delivered(f"uploaded {final} ({size} bytes) to {s.where} as user "
                         f"'{target.username}' (written as {remote_name}.part, {how})"
                         f"{_tofu(s, target)}", presented)
    finally:
        await _close(s)


async def _probe(target: SftpTarget, settings: Settings) -> Delivered:
    s = await _open(target, settings)
    try:
        directory = await _directory(s, target, settings)
        probe = posixpath.join(directory, f".postback-probe-{secrets.token_hex(6)}")
        try:
            remote = await _step(s.sftp.open(probe, "wb"), "creating a test file", settings)
            await _step(remote.close(), "closing a test file", settings)
            await _step(s.sftp.remove(probe), "removing the test file", settings)
        except asyncssh.SFTPError as exc:
            raise _sftp_failure(exc, f"write in '{directory}'", target) from None
        return Delivered(f"connected to {s.where} as user '{target.username}'; the directory "
                         f"'{directory}' is writable{_tofu(s, target)}",
                         key_line(s.key) if s.key is not None else None)
    finally:
        await _close(s)


def _run(work: Callable[[], Awaitable[Delivered]], target: SftpTarget,
         settings: Settings) -> Delivered:
    """Run one SFTP exchange on its own loop, bounded in total; every failure a
    DestinationError without a secret in it."""
    async def bounded() -> Delivered:
        # asyncssh's parallel writes left waiting when a connection drops are not errors of
        # this delivery (it has its own): kept out of the log's error stream
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: log.debug("SFTP: %s", context.get("message")))
        try:
            async with asyncio.timeout(settings.destination_total_timeout):
                return await work()
        except TimeoutError:
            raise DestinationError(
                f"the SFTP delivery to {_where(target.host, target.port)} did not finish "
                f"within {settings.destination_total_timeout:g} s", permanent=False) from None

    try:
        return asyncio.run(bounded())
    except DestinationError:
        raise
    except (asyncssh.DisconnectError, asyncssh.SFTPConnectionLost, ConnectionError,
            BrokenPipeError) as exc:
        raise DestinationError(f"the SFTP server at {_where(target.host, target.port)} closed "
                               f"the connection ({_words(exc)})", permanent=False) from None
    except Exception as exc:
        log.exception("SFTP delivery to %s failed unexpectedly", _where(target.host,
                                                                         target.port))
        raise DestinationError(f"internal error while delivering over SFTP: "
                               f"{type(exc).__name__}", permanent=False) from None


def deliver_sftp(target: SftpTarget, path: Path, remote_name: str,
                 settings: Settings) -> Delivered:
    """Upload ``path`` as ``remote_name`` in ``target.directory``. Blocking (call it from a
    worker thread, not from an event loop)."""
    return _run(lambda: _deliver(target, path, remote_name, settings), target, settings)


def probe_sftp(target: SftpTarget, settings: Settings) -> Delivered:
    """Connect, authenticate, and write and remove a test file in the directory; returns
    the host key presented (to pin when the feed is saved). Blocking."""
    return _run(lambda: _probe(target, settings), target, settings)
