"""URLs: one parser for what a setting may hold and for what goes on the wire.

``url_template`` checks a setting's URL when it is saved and returns it normalised (the
scheme and host in lower case, a non-ASCII host IDNA-encoded, non-ASCII and unsafe
characters percent-encoded as UTF-8, ``{Tokens}`` left for the renderer), so that what is
saved is what is sent. ``wire_url`` is the same rules on a rendered URL, at every send: the
exact URL every HTTP driver sends, and the one a GET postback's signature covers.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import idna

# what RFC 3986 allows in a URL as it stands (reserved, unreserved and "%")
_URL_CHARS = "!#$%&'()*+,/:;=?@[]~"
_URL_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9\-._" + re.escape(_URL_CHARS) + "]")
_HOST = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Za-z:.%\-_~]+\]")
#: never in a saved URL: controls, spaces and the line breaks that would split a request
_UNSENDABLE = re.compile(r"[\x00-\x20\x7f\u0085\u00a0\u1680\u2000-\u200b\u2028\u2029"
                         r"\u202f\u205f\u3000\ufeff]")
_TOKEN = re.compile(r"\{[A-Za-z][A-Za-z0-9_]*\}")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_AUTHORITY_END = re.compile(r"[/?#]")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_NAMES = {"\r": "a carriage return (CR)", "\n": "a line break (LF)", "\t": "a tab",
          " ": "a space"}


def _authority(rest: str) -> tuple[str, str, str, str]:
    """Split what follows ``scheme://`` into (userinfo@, host, :port, the rest); checks
    brackets and the port. ``ValueError`` with the reason."""
    stop = _AUTHORITY_END.search(rest)
    cut = stop.start() if stop is not None else len(rest)
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, hostport = authority.rpartition("@")
    if hostport.startswith("["):  # an IPv6 literal
        end = hostport.find("]") + 1
        if not end:
            raise ValueError(f"the IPv6 address {hostport!r} has no closing ]")
        host, port = hostport[:end], hostport[end:]
    else:
        if "]" in hostport or "[" in hostport:
            raise ValueError(f"the host {hostport!r} has unbalanced brackets")
        host, colon, digits = hostport.partition(":")
        port = colon + digits
    digits = port[1:]
    if port and (port[0] != ":" or not digits.isascii() or not digits.isdigit()
                 or not 1 <= int(digits) <= 65535):
        raise ValueError(f"the port {port[1:]!r} is not a number from 1 to 65535")
    return userinfo + at, host, port, tail


def _ascii_host(host: str) -> str:
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (UnicodeError, ValueError, idna.IDNAError) as exc:
            raise ValueError(f"the host name {host!r} is not a valid name ({exc})") from None
    if not _HOST.fullmatch(host):
        raise ValueError(f"the host {host!r} is not a valid host name or address")
    return host


def _as_sent(scheme: str, port: str, tail: str) -> tuple[str, str]:
    """The port and the path-and-query as both drivers put them in the Host header and the
    request line, which is all a receiver sees: the port without leading zeros and left out
    when it is the scheme's default, an empty path as ``/``, a ``?`` with nothing after it
    dropped, percent-escapes in the path in upper case (libcurl's; the query is sent as
    it is)."""
    if port:
        port = f":{int(port[1:])}"
        if port == _DEFAULT_PORTS.get(scheme.lower()):
            port = ""
    path, mark, query = tail.partition("?")
    if "%" in path:
        path = _ESCAPE.sub(lambda m: m.group().upper(), path)
    path = path or "/"
    return port, path + (mark + query if query else "")


def wire_url(url: str) -> str:
    """The URL exactly as it is sent, by every driver: characters a URL may not hold as
    they stand (non-ASCII, spaces, controls, ``"<>\\^`{|}``) percent-encoded as UTF-8,
    a non-ASCII host IDNA-encoded, and port, path and query written as they go on the wire
    (``_as_sent``), so that ``scheme://`` + the Host header + the request target the
    receiver gets is this URL byte for byte; what is already valid, ``%XX`` escapes
    included, left as it is. ``ValueError`` when it cannot be made an absolute URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.isascii() or not scheme.isalpha():
        raise ValueError("not an absolute http(s) URL")
    userinfo, host, port, tail = _authority(rest)
    if not url.isascii() or _URL_NEEDS_QUOTING.search(url) is not None:
        host = _ascii_host(host)
        if userinfo:
            userinfo = quote(userinfo, safe="!$&'()*+,;=:%~@")
        tail = quote(tail, safe=_URL_CHARS)
    port, tail = _as_sent(scheme, port, tail)
    return f"{scheme.lower()}://{userinfo}{host}{port}{tail}"


def url_template(url: str) -> str:
    """A setting's URL as it is saved, or ``ValueError`` with what to fix."""
    bad = _UNSENDABLE.search(url)
    if bad is not None:
        what = _NAMES.get(bad.group(), f"the control or space character U+{ord(bad.group()):04X}")
        raise ValueError(f"contains {what} at character {bad.start() + 1}; remove it "
                         "(a space in a path or query is written %20)")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        raise ValueError("must start with http:// or https://")
    if "#" in rest:
        raise ValueError("has a #fragment, which never reaches your server; remove it")
    userinfo, host, port, tail = _authority(rest)
    if userinfo:
        raise ValueError("must not carry user:password@; use a header instead")
    if not host or "{" in host or "}" in host:
        raise ValueError("needs a host name written out, e.g. https://postbacks.example.com/in "
                         "(tokens may stand in the path and the query)")
    host = _ascii_host(host).lower()
    # percent-encode what cannot stand in a URL, token by token left for the renderer
    parts, at = [], 0
    for token in _TOKEN.finditer(tail):
        parts.append(quote(tail[at:token.start()], safe=_URL_CHARS))
        parts.append(token.group())
        at = token.end()
    parts.append(quote(tail[at:], safe=_URL_CHARS))
    port, tail = _as_sent(scheme, port, "".join(parts))
    return f"{scheme.lower()}://{host}{port}{tail}"
