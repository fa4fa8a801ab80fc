"""The pycurl driver: libcurl's multi interface on the asyncio event loop.

libcurl does the HTTP work in C; Python only hands it requests and collects results, which
is why it costs several times less per request than aiohttp. The loop watches the sockets
libcurl asks it to (``M_SOCKETFUNCTION``) and runs its timer (``M_TIMERFUNCTION``).

The address policy holds as in the aiohttp driver: host names are resolved by our
``GuardedResolver`` and pinned with ``CURLOPT_RESOLVE`` (so a name with any refused address
is refused, and libcurl does no lookup of its own), and every socket libcurl opens passes
``OPENSOCKETFUNCTION``, which refuses any address the policy refuses: the address checked is
the address dialled. Redirects are never followed; only http and https are spoken.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import select
import socket
import ssl
import time
from typing import Any

import pycurl
from yarl import URL

from postback.core.retry import ErrorClass
from postback.delivery.http import (
    MAX_HEADER_FIELD,
    MAX_STORED_BODY,
    Done,
    InvalidAnswer,
    Response,
    Sender,
    _ms,
    failure,
    response_headers,
)
from postback.delivery.resolver import resolver_failure

log = logging.getLogger("postback.delivery")

DNS_TTL = 60.0
_CURL_OWN = ("Accept", "Expect", "Content-Type", "User-Agent")  # headers libcurl adds itself
_TLS_ERRORS = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})
# errors libcurl may report without a message of its own
_MESSAGES = {100: "the answer's headers are too large"}  # CURLE_TOO_LARGE
# libcurl's "what came back is not HTTP as it speaks it" (a 0.9 answer, a bad status line)
_NOT_HTTP = frozenset({pycurl.E_UNSUPPORTED_PROTOCOL, 8})  # 8: CURLE_WEIRD_SERVER_REPLY


class _Transfer:
    """One request in flight: what libcurl hands back, gathered as it arrives, and who
    gets the answer (``done``, called once)."""

    __slots__ = ("body", "done", "headers", "refusal", "size", "started", "truncated")

    def __init__(self, done: Done, started: float) -> None:
        self.done = done
        self.started = started
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.size = 0
        self.refusal: str | None = None
        self.truncated = False


class _Handover:
    """A new socket for libcurl, which takes a duplicate of its descriptor: ours is closed
    as soon as libcurl has it (quietly, unlike a socket left to the garbage collector)."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def __del__(self) -> None:
        self.sock.close()


class CurlSender(Sender):
    async def __aenter__(self) -> Sender:
        self._loop = asyncio.get_running_loop()
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, self.max_connections)
        self._multi.setopt(pycurl.M_MAXCONNECTS, self.max_connections)
        self._watched: dict[int, int] = {}
        self._timer: asyncio.Handle | None = None
        self._timer_soon = False
        # Linux: libcurl's sockets in an epoll set the loop watches as one descriptor
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            self._loop.add_reader(self._epoll.fileno(), self._on_epoll)
        self._idle: list[pycurl.Curl] = []
        self._transfers: dict[pycurl.Curl, _Transfer] = {}
        self._dns: dict[tuple[str, int], tuple[float, str]] = {}
        paths = ssl.get_default_verify_paths()
        self._cafile = self.ca_file or paths.cafile or paths.openssl_cafile
        self._capath = paths.capath or paths.openssl_capath
        self._proxy_addresses: frozenset[str] = frozenset()
        if self.proxy:
            host = URL(self.proxy).host or ""
            infos = await self._loop.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            self._proxy_addresses = frozenset(str(i[4][0]) for i in infos)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for handle in list(self._transfers):
            self._multi.remove_handle(handle)
            handle.close()
        for handle in self._idle:
            handle.close()
        self._multi.close()  # (libcurl may still call back about its sockets meanwhile)
        for fd in list(self._watched):
            self._unwatch(fd)
        if self._timer is not None:
            self._timer.cancel()
        if self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()

    # -- one request ------------------------------------------------------------------

    def start(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
              done: Done) -> None:
        """The engine's path: no task and no future per request. A request to an IP
        literal, or to a name whose addresses are cached, goes to libcurl at once; the
        rest (a lookup to make, a proxy to vet the target for) takes ``Sender.start``'s
        task."""
        started = time.perf_counter()
        try:
            checked = self._check(method, url, headers, started)
            if isinstance(checked, Response):
                self._loop.call_soon(done, checked)
                return
            target, wire, literal = checked
            pin = None
            if not literal:
                pin = None if self.proxy else self._cached_pin(target.raw_host or "",
                                                              target.port or 0)
                if pin is None:
                    super().start(method, url, headers, body, done)
                    return
            refused = self._submit(method, wire, headers, body, pin, started, done)
        except Exception as exc:  # a bug: the request still ends, with a Response
            log.exception("sending %s %s failed unexpectedly", method, url[:200])
            refused = failure(started, ErrorClass.INTERNAL,
                              f"internal error while sending: {type(exc).__name__}: {exc}")
        if refused is not None:
            self._loop.call_soon(done, refused)

    async def _transmit(self, method: str, target: URL, wire: str, literal: bool,
                        headers: dict[str, str], body: bytes | None,
                        started: float) -> Response:
        pin = None
        if not literal and not self.proxy:
            host = target.raw_host or ""
            try:
                pin = await self._pin(host, target.port or 0)
            except OSError as exc:  # what the resolver raises for a failed lookup
                return failure(started, *resolver_failure(exc, host))
        answer: asyncio.Future[Response] = self._loop.create_future()
        refused = self._submit(method, wire, headers, body, pin, started,
                               functools.partial(_settle, answer))
        return refused if refused is not None else await answer

    def _submit(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                pin: str | None, started: float, done: Done) -> Response | None:
        """Hand a checked request to libcurl; the ``Response`` of a refusal, or None."""
        handle = self._idle.pop() if self._idle else self._new_handle()
        transfer = _Transfer(done, started)
        try:
            self._prepare(handle, transfer, method, url, headers, body, pin)
        except BaseException as exc:
            handle.close()  # in an unknown state: not reused
            if isinstance(exc, pycurl.error):
                return failure(started, ErrorClass.INVALID_REQUEST,
                               f"libcurl refused the request: {exc.args[-1]}")
            raise
        self._transfers[handle] = transfer
        self._multi.add_handle(handle)
        return None

    def _new_handle(self) -> pycurl.Curl:
        """A handle with the options every request shares; its callbacks reach the current
        transfer through ``self._transfers`` (libcurl keeps connections in the multi, so
        reusing handles costs nothing in isolation)."""
        c = pycurl.Curl()
        c.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        # the path as given (no /./ or /../ squashed): what is signed is what is sent
        c.setopt(pycurl.PATH_AS_IS, 1)
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(self.connect_timeout * 1000))
        c.setopt(pycurl.TIMEOUT_MS, int(self.total_timeout * 1000))
        c.setopt(pycurl.OPENSOCKETFUNCTION,
                 lambda _purpose, address: self._open(self._transfers[c], address))
        c.setopt(pycurl.HEADERFUNCTION, lambda line: self._transfers[c].headers.append(line))
        c.setopt(pycurl.WRITEFUNCTION, lambda chunk: self._keep(self._transfers[c], chunk))
        if self._cafile:
            c.setopt(pycurl.CAINFO, self._cafile)
        if self._capath:
            c.setopt(pycurl.CAPATH, self._capath)
        if self.source_address:
            c.setopt(pycurl.INTERFACE, f"host!{self.source_address}")
        if self.proxy:
            c.setopt(pycurl.PROXY, self.proxy)
        return c

    def _cached_pin(self, host: str, port: int) -> str | None:
        hit = self._dns.get((host, port))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def _pin(self, host: str, port: int) -> str:
        """``host:port:addresses`` for CURLOPT_RESOLVE, from the guarded resolver (cached
        for a minute, as aiohttp's connector does)."""
        key = (host, port)
        cached = self._cached_pin(host, port)
        if cached is not None:
            return cached
        now = time.monotonic()
        results = await self.resolver.resolve(host, port, socket.AF_UNSPEC)
        addresses = ",".join(f"[{r['host']}]" if ":" in r["host"] else r["host"]
                             for r in results)
        pin = f"{host}:{port}:{addresses}"
        self._dns[key] = (now + DNS_TTL, pin)
        return pin

    def _prepare(self, c: pycurl.Curl, transfer: _Transfer, method: str, url: str,
                 headers: dict[str, str], body: bytes | None, pin: str | None) -> None:
        """What differs per request; whatever a previous request on this handle set that
        this one does not is cleared."""
        c.setopt(pycurl.URL, url)
        if pin is not None:
            c.setopt(pycurl.RESOLVE, [pin])
        else:
            c.unsetopt(pycurl.RESOLVE)
        # only the headers we mean: curl's own Accept, Expect, form Content-Type and
        # User-Agent (pycurl's "PycURL/...", which aiohttp would not send) are off.
        # "Name;" sends an empty value ("Name:" would remove the header); a value that is
        # not ASCII goes as UTF-8, as aiohttp sends it (``request_problem`` vetted them)
        lines: list[str | bytes] = []
        for k, v in headers.items():
            line = f"{k}: {v}" if v.strip(" \t") else f"{k};"
            lines.append(line if line.isascii() else line.encode("utf-8"))
        lowered = {k.lower() for k in headers}
        lines += [f"{k}:" for k in _CURL_OWN if k.lower() not in lowered]
        c.setopt(pycurl.HTTPHEADER, lines)
        if body is not None:
            c.setopt(pycurl.POSTFIELDSIZE, len(body))
            c.setopt(pycurl.COPYPOSTFIELDS, body)
        else:
            c.setopt(pycurl.HTTPGET, 1)
        if method in ("GET", "POST"):
            c.unsetopt(pycurl.CUSTOMREQUEST)
        else:
            c.setopt(pycurl.CUSTOMREQUEST, method)

    def _open(self, transfer: _Transfer, address: Any) -> Any:
        """Every socket libcurl opens: refused unless the policy (or the proxy) allows it."""
        ip = address.addr[0]
        if ip not in self._proxy_addresses:
            reason = self.policy.refusal(ip)
            if reason is not None:
                transfer.refusal = reason
                return pycurl.SOCKET_BAD
        return _Handover(socket.socket(address.family, address.socktype, address.protocol))

    @staticmethod
    def _keep(transfer: _Transfer, chunk: bytes) -> int | None:
        """Keep what the attempt log stores; past that, stop reading (a partner's endless
        or stalled body must not hold the request open until the time limit)."""
        if transfer.size >= MAX_STORED_BODY:
            transfer.truncated = True
            return 0  # not all taken: libcurl ends the transfer (E_WRITE_ERROR)
        transfer.body.append(chunk)
        transfer.size += len(chunk)
        return None

    def _done(self, handle: pycurl.Curl, errno: int, message: str) -> None:
        transfer = self._transfers.pop(handle)
        reusable = True
        try:
            self._multi.remove_handle(handle)
            response = _response(handle, transfer, errno, message)
        except Exception as exc:  # a bug: the request still ends, with a Response
            log.exception("reading a libcurl transfer failed")
            reusable = False  # in an unknown state
            response = failure(transfer.started, ErrorClass.INTERNAL,
                               f"internal error while reading the answer: "
                               f"{type(exc).__name__}: {exc}")
        if reusable:
            self._idle.append(handle)
        try:
            transfer.done(response)
        except Exception:  # the caller's bug must not cost the other finished transfers
            log.exception("handling a finished transfer failed")

    # -- libcurl <-> the event loop ---------------------------------------------------

    def _on_socket(self, event: int, fd: int, _multi: Any, _data: Any) -> None:
        if self._epoll is not None:
            self._epoll_watch(event, fd)
            return
        if event == pycurl.POLL_REMOVE:
            self._unwatch(fd)
            return
        old = self._watched.get(fd, 0)
        if old == event:
            return
        self._unwatch(fd)
        if event & pycurl.POLL_IN:
            self._loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if event & pycurl.POLL_OUT:
            self._loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        self._watched[fd] = event

    def _unwatch(self, fd: int) -> None:
        old = self._watched.pop(fd, 0)
        if self._epoll is not None:
            with contextlib.suppress(OSError):  # closed already: epoll forgot it itself
                self._epoll.unregister(fd)
            return
        if old & pycurl.POLL_IN:
            self._loop.remove_reader(fd)
        if old & pycurl.POLL_OUT:
            self._loop.remove_writer(fd)

    def _epoll_watch(self, event: int, fd: int) -> None:
        """libcurl's sockets in an epoll set of our own, which the event loop watches as one
        descriptor: a socket's interest changes with one system call, without the loop's
        per-socket handles and selector keys (several per request)."""
        assert self._epoll is not None
        if event == pycurl.POLL_REMOVE:
            self._unwatch(fd)
            return
        old = self._watched.get(fd)
        if old == event:
            return
        if event == pycurl.POLL_NONE:  # out of the set: epoll would still report its
            self._unwatch(fd)  # errors, which nobody asks for, again and again
            self._watched[fd] = event
            return
        mask = _EPOLL_MASKS[event]
        self._watched[fd] = event
        try:
            if old is None:
                self._epoll.register(fd, mask)
            else:
                self._epoll.modify(fd, mask)
        except FileExistsError:  # a number reused before we heard the old one was closed
            self._epoll.modify(fd, mask)
        except FileNotFoundError:  # closed and reused: epoll had dropped it
            self._epoll.register(fd, mask)

    def _on_epoll(self) -> None:
        assert self._epoll is not None
        try:
            ready = self._epoll.poll(0, 1024)
        except InterruptedError:
            return
        try:
            for fd, events in ready:
                # as the loop's own selector reads epoll: an error or hang-up wakes both
                # directions, and only a direction libcurl asks for now is reported (a
                # number closed and reused during this batch keeps its stale events from
                # failing the new socket; a spurious wake-up only makes libcurl look)
                wanted = self._watched.get(fd, 0)
                what = 0
                if wanted & pycurl.POLL_IN and events & ~select.EPOLLOUT:
                    what |= pycurl.CSELECT_IN
                if wanted & pycurl.POLL_OUT and events & ~select.EPOLLIN:
                    what |= pycurl.CSELECT_OUT
                if not what:
                    continue
                while self._multi.socket_action(fd, what)[0] == pycurl.E_CALL_MULTI_PERFORM:
                    pass
        except pycurl.error:  # the multi's own trouble (a socket gone): transfers go on
            log.exception("libcurl socket_action failed")
        self._read_done()

    def _on_timer(self, timeout_ms: int) -> None:
        if timeout_ms == 0 and self._timer is not None and self._timer_soon:
            return  # already due on the loop's next turn (libcurl asks again and again)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_soon = timeout_ms == 0
        if timeout_ms == 0:  # "act now": the common case, and call_soon is cheaper
            self._timer = self._loop.call_soon(self._on_timeout)
        elif timeout_ms > 0:
            self._timer = self._loop.call_later(timeout_ms / 1000, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, what: int) -> None:
        try:
            while self._multi.socket_action(fd, what)[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
        except pycurl.error:  # the multi's own trouble (a socket gone): transfers go on
            log.exception("libcurl socket_action failed")
        self._read_done()

    def _read_done(self) -> None:
        while True:
            queued, ok, failed = self._multi.info_read()
            for handle in ok:
                self._done(handle, 0, "")
            for handle, errno, message in failed:
                self._done(handle, errno, message)
            if not queued:
                break


#: libcurl's wish for a socket as epoll's interest
_EPOLL_MASKS = {pycurl.POLL_IN: select.EPOLLIN, pycurl.POLL_OUT: select.EPOLLOUT,
                pycurl.POLL_INOUT: select.EPOLLIN | select.EPOLLOUT} if hasattr(
                    select, "epoll") else {}


def _settle(answer: asyncio.Future[Response], response: Response) -> None:
    if not answer.done():  # (cancelled: nobody waits)
        answer.set_result(response)


def _response(handle: pycurl.Curl, transfer: _Transfer, errno: int,
              message: str) -> Response:
    if errno == 0 or (errno == pycurl.E_WRITE_ERROR and transfer.truncated):
        try:
            headers = _headers(transfer.headers, handle)
        except InvalidAnswer as exc:
            return failure(transfer.started, ErrorClass.CONNECTION,
                           f"invalid HTTP answer: {exc}")
        return Response(handle.getinfo(pycurl.RESPONSE_CODE), headers,
                        b"".join(transfer.body)[:MAX_STORED_BODY], _ms(transfer.started),
                        None, None)
    return failure(transfer.started, *_failure(errno, message, transfer.refusal))


def _headers(lines: list[bytes], handle: pycurl.Curl) -> dict[str, str]:
    """The final response's headers from libcurl's header lines (a 1xx interim response's,
    a proxy's CONNECT answer's and trailers are dropped; a folded line continues its
    field), read as ``response_headers`` reads aiohttp's; ``InvalidAnswer`` for a line that
    is not a field, or a head that never ended."""
    fields: list[tuple[bytes, bytes]] = []
    ended = False
    for line in lines:  # (the value keeps its CRLF: response_headers trims it)
        if not line:
            continue
        first = line[0]
        if first == 72 and line.startswith(b"HTTP/"):  # a status line: a new response
            if len(line) > MAX_HEADER_FIELD:
                raise InvalidAnswer(f"the status line is over {MAX_HEADER_FIELD} bytes")
            if not line.startswith(b"HTTP/1.") and handle.getinfo(
                    pycurl.INFO_HTTP_VERSION) < pycurl.CURL_HTTP_VERSION_2_0:
                # libcurl takes "HTTP/2 200" on an HTTP/1 connection (aiohttp does not)
                raise InvalidAnswer(f"the status line {line[:100].rstrip()!r} is not HTTP/1.x")
            fields, ended = [], False
        elif ended:
            continue  # trailers
        elif first in (13, 10):  # the blank line that ends the head
            ended = True
        elif first in (32, 9) and fields:  # obs-fold (RFC 9112 section 5.2): the line
            name, value = fields[-1]  # break goes, its white space stays (as in llhttp)
            fields[-1] = (name, value.rstrip(b"\r\n") + line)
        else:
            name, colon, value = line.partition(b":")
            if not colon:
                raise InvalidAnswer(f"a header line without a colon: {line[:100]!r}")
            fields.append((name, value))
    if not ended:
        raise InvalidAnswer("the answer ended inside its headers")
    return response_headers(fields)


def _failure(errno: int, message: str, refusal: str | None) -> tuple[ErrorClass, str]:
    if refusal is not None:
        return ErrorClass.BLOCKED, f"refused: {refusal}"
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        return ErrorClass.TIMEOUT, message or "no complete answer within the time limit"
    message = message or _MESSAGES.get(errno) or f"libcurl error {errno}"
    if errno in _TLS_ERRORS:
        return ErrorClass.TLS, message
    if errno in (pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY):
        # libcurl resolves only the proxy's name itself, and cannot tell NXDOMAIN apart
        return ErrorClass.DNS_TEMPORARY, message
    if errno == pycurl.E_URL_MALFORMAT:
        return ErrorClass.INVALID_URL, message
    if errno in _NOT_HTTP:
        return ErrorClass.CONNECTION, f"invalid HTTP answer: {message}"
    return ErrorClass.CONNECTION, message
