"""The template renderer: ``{Token}`` placeholders, escaped for where they stand.

A template is compiled once (when a setting is saved or first used) into literal parts and
slots; each slot knows its context and so its escaping:

* URL: percent-encoding of everything but unreserved characters, so a value can never add
  a parameter, a path segment or a fragment; the scheme and host must be literal.
* JSON: inside a string, JSON-string escaping; outside a string, numbers stay bare and
  anything else becomes a quoted JSON string (``null`` when missing), so a value can never
  add structure even where a template forgot the quotes.
* XML: entity escaping (CR, LF and TAB as character references so they survive attribute
  normalisation, ``]`` too so that no value ends in ``]]>`` with the text after it); inside
  CDATA a value steps out of the section and is escaped as text; characters XML 1.0
  cannot carry become U+FFFD.
* form: ``application/x-www-form-urlencoded`` encoding of the value.

Rendering is plain substitution otherwise and never fails: a save must also pass
``template_syntax.check_body`` (the body is the document its format says, every token
standing as a value), but a setting saved before that check existed still sends as saved.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote, quote_plus

from postback.core.tokens import Kind, Token

Value = str | Sequence[Mapping[str, object]] | None
MAX_TEMPLATE_BYTES = 64 * 1024

TOKEN_RE = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)(?::([^{}\r\n]*))?\}")
#: a number a value may stand as, bare in JSON: plain decimals every parser reads exactly
#: (no exponent, no 5,000-digit integers); anything else is quoted
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,29})(?:\.[0-9]{1,12})?", re.ASCII)
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Context(StrEnum):
    URL = "url"
    JSON_STRING = "json_string"
    JSON_BARE = "json_bare"
    XML = "xml"
    XML_CDATA = "xml_cdata"
    FORM = "form"


class BodyFormat(StrEnum):
    JSON = "json"
    XML = "xml"
    FORM = "form"


CONTENT_TYPES = {
    BodyFormat.JSON: "application/json; charset=utf-8",
    BodyFormat.XML: "application/xml; charset=utf-8",
    BodyFormat.FORM: "application/x-www-form-urlencoded",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a template, with where it stands and what would fix it."""

    field: str
    message: str
    token: str | None = None
    position: int | None = None
    suggestions: tuple[str, ...] = ()
    line: int | None = None
    column: int | None = None


class TemplateError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Slot:
    """A token's place in a template: its escaping, and where it stood (for messages)."""

    name: str
    escape: Callable[[Value], str]
    context: Context = Context.URL
    kind: Kind = Kind.TEXT
    start: int = 0
    end: int = 0


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Slot, ...]
    tokens: frozenset[str] = field(default_factory=frozenset)

    def render(self, values: Mapping[str, Value]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                out.append(part.escape(values.get(part.name)))
        return "".join(out)


# -- escaping, one function per context -------------------------------------------------


def _items_json(value: Sequence[Mapping[str, object]]) -> str:
    return json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))


def _as_text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _items_json(value)


def _url(value: Value) -> str:
    return quote(_as_text(value), safe="")


def _form(value: Value) -> str:
    return quote_plus(_as_text(value), safe="")


def _json_string(value: Value) -> str:
    return json.dumps(_as_text(value), ensure_ascii=False)[1:-1]


def _json_bare_for(kind: Kind) -> Callable[[Value], str]:
    def escape(value: Value) -> str:
        if value is None or value == "":
            return "null"
        if kind is Kind.ITEMS and not isinstance(value, str):
            return _items_json(value)
        text = _as_text(value)
        if kind in (Kind.INT, Kind.MONEY) and _JSON_NUMBER.fullmatch(text):
            return text
        return json.dumps(text, ensure_ascii=False)

    return escape


def _xml_text(text: str) -> str:
    text = _XML_INVALID.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("]", "&#93;")  # so a value and the text after it cannot make "]]>"
        .replace('"', "&quot;")
        .replace("'", "&apos;")
        .replace("\r", "&#13;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


_ITEM_FIELDS = (("sku", "Sku"), ("name", "Name"), ("category", "Category"),
                ("quantity", "Quantity"), ("amount", "Amount"), ("payout", "Payout"))


def _item_text(value: object) -> str:
    return "" if value is None else str(value)


def _xml(value: Value) -> str:
    if value is None or isinstance(value, str):
        return _xml_text(value or "")
    return "".join(
        "<Item>"
        + "".join(
            f"<{tag}>{_xml_text(_item_text(item.get(key)))}</{tag}>" for key, tag in _ITEM_FIELDS
        )
        + "</Item>"
        for item in value
    )


def _xml_cdata(value: Value) -> str:
    """A value steps out of the CDATA section and back in, escaped as text: splitting only
    the ``]]>`` inside a value would miss one made with the literal text beside it
    (``]]{SubId1}`` and a value starting with ``>``); the parsed text is the same."""
    return f"]]>{_xml_text(_as_text(value))}<![CDATA["  # even empty: ]]{Token}> stays text


_STATIC_ESCAPES: dict[Context, Callable[[Value], str]] = {
    Context.URL: _url,
    Context.FORM: _form,
    Context.JSON_STRING: _json_string,
    Context.XML: _xml,
    Context.XML_CDATA: _xml_cdata,
}


# -- context tracking -------------------------------------------------------------------


def json_in_string(text: str, start: int, end: int, in_string: bool) -> bool:
    """Advance the in-string state of a JSON scan over ``text[start:end]``."""
    i = start
    while i < end:
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        i += 1
    return in_string


def _xml_in_cdata(text: str, start: int, end: int, in_cdata: bool) -> bool:
    i = start
    while i < end:
        if in_cdata:
            j = text.find("]]>", i, end)
            if j < 0:
                return True
            in_cdata, i = False, j + 3
        else:
            j = text.find("<![CDATA[", i, end)
            if j < 0:
                return False
            in_cdata, i = True, j + 9
    return in_cdata


def suggest(name: str, vocabulary: Sequence[str] | frozenset[str]) -> tuple[str, ...]:
    """The closest valid token names: a case-only mismatch first, then look-alikes."""
    names = sorted(vocabulary)
    exact_case = [n for n in names if n.lower() == name.lower()]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return tuple(dict.fromkeys(exact_case + close))[:3]


def compile_template(
    text: str,
    where: str,
    vocabulary: Mapping[str, Token],
    body_format: BodyFormat | None = None,
) -> Template:
    """Compile a URL template (``body_format=None``) or a body template.

    ``where`` names the field in error messages (``url`` or ``body``). Raises
    :class:`TemplateError` listing every problem at once.
    """
    problems: list[Problem] = []
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEMPLATE_BYTES:
        problems.append(Problem(where, "is over the 64 KiB limit; shorten it"))
        raise TemplateError(problems)

    parts: list[str | Slot] = []
    names: set[str] = set()
    pos = 0
    state = False  # in a JSON string / in an XML CDATA section
    for match in TOKEN_RE.finditer(text):
        name, spec = match.group(1), match.group(2)
        literal_end = match.start()
        if body_format is BodyFormat.JSON:
            state = json_in_string(text, pos, literal_end, state)
            context = Context.JSON_STRING if state else Context.JSON_BARE
        elif body_format is BodyFormat.XML:
            state = _xml_in_cdata(text, pos, literal_end, state)
            context = Context.XML_CDATA if state else Context.XML
        elif body_format is BodyFormat.FORM:
            context = Context.FORM
        else:
            context = Context.URL
        if text[pos:literal_end]:
            parts.append(text[pos:literal_end])
        pos = match.end()

        token = vocabulary.get(name)
        if token is None:
            hints = suggest(name, frozenset(vocabulary))
            hint = f"; did you mean {', '.join('{' + h + '}' for h in hints)}?" if hints else ""
            problems.append(Problem(where, f"unknown token {{{name}}}{hint}",
                                    name, match.start(), hints))
            continue
        transform, kind = None, token.kind
        if spec is not None:
            try:
                transform, kind = _spec(token, spec)
            except ValueError as exc:
                problems.append(Problem(where, f"{{{name}:{spec}}}: {exc}", name,
                                        match.start()))
                continue
        if context is Context.URL and not _after_authority(text, match.start()):
            problems.append(Problem(where, f"{{{name}}} stands in the scheme or host of the URL; "
                                    "tokens may only appear in the path or query",
                                    name, match.start()))
            continue
        names.add(name)
        escape = (_json_bare_for(kind) if context is Context.JSON_BARE
                  else _STATIC_ESCAPES[context])
        parts.append(Slot(name, escape if transform is None else _then(transform, escape),
                          context, kind, match.start(), match.end()))
    if problems:
        raise TemplateError(problems)
    if text[pos:]:
        parts.append(text[pos:])
    return Template(tuple(parts), frozenset(names))


def _then(first: Callable[[Value], Value],
          escape: Callable[[Value], str]) -> Callable[[Value], str]:
    return lambda value: escape(first(value))


def _spec(token: Token, spec: str) -> tuple[Callable[[Value], Value], Kind]:
    """``{EventDate:%Y-%m-%d}`` (a date format) or ``{Status:PENDING=0,APPROVED=1}`` (a
    value map: listed values are replaced, others pass unchanged)."""
    if token.kind is Kind.DATE:
        if "%" not in spec:
            raise ValueError("a date format needs strftime codes, e.g. {EventDate:%Y-%m-%d}")
        try:
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).strftime(spec)
        except ValueError as exc:
            raise ValueError(f"bad date format ({exc})") from None

        def fmt(value: Value) -> Value:
            if not isinstance(value, str) or not value:
                return ""
            try:
                return datetime.fromisoformat(value).strftime(spec)
            except ValueError:  # not a date: shown as it is rather than failing the render
                return value

        return fmt, Kind.TEXT
    if token.kind is Kind.ITEMS:
        raise ValueError("{Items} takes no format")
    mapping: dict[str, str] = {}
    for pair in spec.split(","):
        key, sep, val = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError("a value map is KEY=VALUE pairs separated by commas, e.g. "
                             "{Status:PENDING=0,APPROVED=1,REVERSED=2}")
        mapping[key.strip()] = val.strip()
    numeric = all(_JSON_NUMBER.fullmatch(v) for v in mapping.values())

    def mapped(value: Value) -> Value:
        return mapping.get(value, value) if isinstance(value, str) else value

    return mapped, Kind.INT if numeric else token.kind


def _after_authority(url: str, index: int) -> bool:
    """True if ``index`` lies after the ``scheme://host[:port]`` part of ``url``."""
    scheme_end = url.find("://")
    if scheme_end < 0 or scheme_end > index:
        return False
    authority_start = scheme_end + 3
    return any(url[i] in "/?#" for i in range(authority_start, index))
