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
import socket
import ssl
import time
from typing import Any

import pycurl
from yarl import URL

from postback.core.retry import ErrorClass
from postback.delivery.http import MAX_STORED_BODY, Response, Sender, _ms
from postback.delivery.resolver import BlockedAddress

DNS_TTL = 60.0
_TLS_ERRORS = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})


class _Transfer:
    """One request in flight: what libcurl hands back, gathered as it arrives."""

    __slots__ = ("body", "future", "headers", "refusal", "size", "started", "truncated")

    def __init__(self, future: asyncio.Future[Response], started: float) -> None:
        self.future = future
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
        for fd in list(self._watched):
            self._unwatch(fd)
        if self._timer is not None:
            self._timer.cancel()
        for handle in self._idle:
            handle.close()
        self._multi.close()

    # -- one request ------------------------------------------------------------------

    async def _transmit(self, method: str, target: URL, literal: bool,
                        headers: dict[str, str], body: bytes | None,
                        started: float) -> Response:
        pin = None
        if not literal and not self.proxy:
            try:
                pin = await self._pin(target.host or "", target.port or 0)
            except BlockedAddress as exc:
                return Response(None, None, None, _ms(started), ErrorClass.BLOCKED,
                                f"refused: {exc}")
            except OSError as exc:
                return Response(None, None, None, _ms(started), ErrorClass.DNS,
                                f"{target.host}: {exc}")
        handle = self._idle.pop() if self._idle else self._new_handle()
        transfer = _Transfer(self._loop.create_future(), started)
        try:
            self._prepare(handle, transfer, method, str(target), headers, body, pin)
        except pycurl.error as exc:
            handle.close()
            return Response(None, None, None, _ms(started), ErrorClass.INVALID_URL,
                            str(exc.args[-1]))
        self._transfers[handle] = transfer
        self._multi.add_handle(handle)
        return await transfer.future

    def _new_handle(self) -> pycurl.Curl:
        """A handle with the options every request shares; its callbacks reach the current
        transfer through ``self._transfers`` (libcurl keeps connections in the multi, so
        reusing handles costs nothing in isolation)."""
        c = pycurl.Curl()
        c.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
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

    async def _pin(self, host: str, port: int) -> str:
        """``host:port:addresses`` for CURLOPT_RESOLVE, from the guarded resolver (cached
        for a minute, as aiohttp's connector does)."""
        key = (host, port)
        hit = self._dns.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
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
        # only the headers we mean: curl's own Accept, Expect and form Content-Type are off
        lines = [f"{k}: {v}" if v else f"{k};" for k, v in headers.items()]
        lowered = {k.lower() for k in headers}
        lines += [f"{k}:" for k in ("Accept", "Expect", "Content-Type")
                  if k.lower() not in lowered]
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
        self._multi.remove_handle(handle)
        if errno == 0 or (errno == pycurl.E_WRITE_ERROR and transfer.truncated):
            status = handle.getinfo(pycurl.RESPONSE_CODE)
            response = Response(status, _headers(transfer.headers),
                                b"".join(transfer.body)[:MAX_STORED_BODY],
                                _ms(transfer.started), None, None)
        else:
            response = Response(None, None, None, _ms(transfer.started),
                                *_failure(errno, message, transfer.refusal))
        self._idle.append(handle)
        if not transfer.future.done():
            transfer.future.set_result(response)

    # -- libcurl <-> the event loop ---------------------------------------------------

    def _on_socket(self, event: int, fd: int, _multi: Any, _data: Any) -> None:
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
        if old & pycurl.POLL_IN:
            self._loop.remove_reader(fd)
        if old & pycurl.POLL_OUT:
            self._loop.remove_writer(fd)

    def _on_timer(self, timeout_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout_ms == 0:  # "act now": the common case, and call_soon is cheaper
            self._timer = self._loop.call_soon(self._act, pycurl.SOCKET_TIMEOUT, 0)
        elif timeout_ms > 0:
            self._timer = self._loop.call_later(timeout_ms / 1000, self._act,
                                                pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, what: int) -> None:
        while self._multi.socket_action(fd, what)[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, failed = self._multi.info_read()
            for handle in ok:
                self._done(handle, 0, "")
            for handle, errno, message in failed:
                self._done(handle, errno, message)
            if not queued:
                break


def _headers(lines: list[bytes]) -> dict[str, str]:
    """The final response's headers (a 1xx interim response's are dropped)."""
    out: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("latin-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            out = {}
        elif ":" in line:
            name, value = line.split(":", 1)
            out[name.strip()] = value.strip()
    return out


def _failure(errno: int, message: str, refusal: str | None) -> tuple[ErrorClass, str]:
    if refusal is not None:
        return ErrorClass.BLOCKED, f"refused: {refusal}"
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        return ErrorClass.TIMEOUT, message or "no complete answer within the time limit"
    if errno in _TLS_ERRORS:
        return ErrorClass.TLS, message
    if errno == pycurl.E_COULDNT_RESOLVE_HOST:
        return ErrorClass.DNS, message
    if errno in (pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL):
        return ErrorClass.INVALID_URL, message
    return ErrorClass.CONNECTION, message

