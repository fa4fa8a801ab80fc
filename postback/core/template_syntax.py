"""A body template must be what its format says: JSON that parses, well-formed XML, form
``name=value`` pairs, with every token standing where a value belongs.

The check renders the template with a *stand-in* for each token, chosen so that it is
valid exactly where the renderer's escaping keeps any value inside its place and invalid
everywhere else, then parses the result with a real parser:

* JSON, inside a string: a private-use character (a raw character is fine in a string, and
  a syntax error anywhere else, e.g. after a stray backslash that would let a value end
  the string); a string holding it may not be an object's name. As a whole value:
  ``null`` (``1{Amount}`` or ``{A}{B}`` do not parse).
* XML, in content or an attribute value: a character reference (invalid in a name);
  ``{Items}`` in content: an element (invalid in an attribute); in CDATA: a character that
  comments and processing instructions are then checked not to hold.
* form: pairs are split on the literal text, so a token can only be (part of) a value.

So a template that passes yields, for any values, a document of the same shape: no value
can add a key, element, attribute or parameter (``tests/test_template_syntax.py`` tries
this with generated templates and values). Every problem names the line and column and
says what would fix it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from xml.parsers import expat

from postback.core.render import (
    BodyFormat,
    Context,
    Problem,
    Slot,
    Template,
    TemplateError,
    json_in_string,
)
from postback.core.tokens import Kind

#: supplementary private-use planes 15 and 16: one code point per token, for finding it
#: again; the plane the template itself does not use
_PLANES = ((0xF0000, 0xFFFFD), (0x100000, 0x10FFFD))
_FORM_LITERAL = re.compile(r"[A-Za-z0-9._~!$'()*,:@/?+-]|%[0-9A-Fa-f]{2}")

JSON_ENDS_EARLY = "the JSON ends too early: a value, a closing } or ] is missing at the end"
NO_DOCTYPE = "remove the <!DOCTYPE …>: a postback body needs none"
IN_COMMENT, IN_PI = "a comment", "a processing instruction"
EMPTY_PAIR_AT_END = "an empty pair; remove the & at the end"
EMPTY_PAIR = "an empty pair; remove the extra &"
SECOND_EQUALS = "a second = in one pair; write = inside a value as %3D"
NO_NAME = "a pair needs a name before ="
FORM_LINE_BREAK = "a line break; a form body is one line of name=value pairs joined by &"
FORM_SPACE = "a space; write it as + (or %20)"
FORM_SEMICOLON = "; separates pairs for some receivers; write it as %3B"
FORM_PERCENT = "a percent sign must be followed by two hex digits; write one itself as %25"
NOT_UNICODE = "a lone surrogate: this is not Unicode text; type the character again"
TOO_DEEP = "lists and objects nest too deeply; flatten the body"
NUMBER_TOO_LONG = "a number with more than 4,000 digits; shorten it"
IN_NAMESPACE = "a namespace declaration"
ONLY_UTF8 = 'the body is sent as UTF-8: declare encoding="UTF-8" or leave the encoding out'
EMPTY_BREAKS = "left empty (a missing value), this token would make the XML not well-formed"
JSON_NAME_TOKEN = 'tokens may stand only in values ("sub_id": "{SubId1}")'

_HOW_TOKENS_STAND = {
    BodyFormat.JSON: 'a token must be a whole value ("payout": {Payout}) or stand inside a '
                     'string ("id": "{ActionId}")',
    BodyFormat.XML: "a token must stand in an element's text (<Id>{ActionId}</Id>) or in an "
                    'attribute value (<Action id="{ActionId}"/>)',
    BodyFormat.FORM: "a token must stand in a value, after = (id={ActionId})",
}


def line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of ``position`` in ``text``."""
    before = text[:position]
    line = before.count("\n") + before.count("\r") - before.count("\r\n") + 1
    return line, position - max(before.rfind("\n"), before.rfind("\r"))


def problem(text: str, position: int, message: str, token: str | None = None) -> Problem:
    line, column = line_column(text, position)
    return Problem("body", f"line {line}, column {column}: {message}", token, position,
                   line=line, column=column)


def _misplaced(text: str, slot: Slot, body_format: BodyFormat) -> Problem:
    return problem(text, slot.start, f"{{{slot.name}}} cannot stand here: "
                   f"{_HOW_TOKENS_STAND[body_format]}", slot.name)


class _Refused(Exception):
    def __init__(self, found: Problem) -> None:
        super().__init__(found.message)
        self.found = found


class _StandIns:
    """The template with a stand-in for each token, and the way back to the template."""

    def __init__(self, template: Template, stand_in: Callable[[Slot, str], str]) -> None:
        literal = "".join(p for p in template.parts if isinstance(p, str))
        self.first, last = next(
            ((a, b) for a, b in _PLANES if not any(a <= ord(c) <= b for c in literal)),
            _PLANES[-1])
        out: list[str] = []
        self.slots: list[tuple[int, int, Slot]] = []  # start, end in the stand-in text
        length = 0
        for part in template.parts:
            if isinstance(part, str):
                piece = part
            else:
                piece = stand_in(part, chr(self.first + min(len(self.slots), last - self.first)))
                self.slots.append((length, length + len(piece), part))
            out.append(piece)
            length += len(piece)
        self.text = "".join(out)

    def covering(self, position: int) -> Slot | None:
        """The token whose stand-in covers ``position``."""
        for start, end, slot in self.slots:
            if start <= position < end:
                return slot
        return None

    def marked(self, text: str) -> Slot | None:
        """The first token whose marker character is in ``text``."""
        for ch in text:
            if 0 <= ord(ch) - self.first < len(self.slots):
                return self.slots[ord(ch) - self.first][2]
        return None

    def marked_refs(self, text: str) -> Slot | None:
        """The first token whose marker stands in ``text`` as a character reference."""
        for ref in re.findall(r"&#([0-9]{1,7});", text):
            if 0 <= int(ref) - self.first < len(self.slots):
                return self.slots[int(ref) - self.first][2]
        return None

    def within(self, start: int, end: int) -> Slot | None:
        return next((s for a, _, s in self.slots if start <= a < end), None)

    def original(self, position: int) -> int:
        """The template position that ``position`` in the stand-in text comes from."""
        shift = 0
        for start, end, slot in self.slots:
            if position < start:
                break
            if position < end:
                return slot.start
            shift += (slot.end - slot.start) - (end - start)
        return position + shift


def check_body(text: str, template: Template, body_format: BodyFormat) -> None:
    """Raise :class:`TemplateError` unless ``template`` (compiled from ``text``) is a valid
    body of ``body_format`` whose tokens all stand as values. An empty body passes."""
    if not text:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TemplateError([problem(text, exc.start, NOT_UNICODE)]) from None
    check = {BodyFormat.JSON: _check_json, BodyFormat.XML: _check_xml,
             BodyFormat.FORM: _check_form}[body_format]
    try:
        check(text, template)
    except _Refused as exc:
        raise TemplateError([exc.found]) from None


# -- JSON --------------------------------------------------------------------------------

_JSON_MESSAGES = (
    ("Expecting value", "a value is missing here: a number, a \"string\", true, false, null, "
                        "an object {…} or a list […]; check for a comma too many"),
    ("Expecting ',' delimiter", "a comma is missing before this point"),
    ("Expecting ':' delimiter", "a colon is missing after the name"),
    ("Expecting property name enclosed in double quotes",
     "a name in double quotes is expected here (\"name\": value); remove a comma before } "
     "if there is one"),
    ("Unterminated string", "this string is never closed; add the closing \""),
    ("Invalid control character", "a line break or tab inside a string; write it as \\n or \\t"),
    ("Invalid \\uXXXX escape", "\\u must be followed by four hex digits"),
    ("Invalid \\escape", "a backslash starts an unknown escape; write \\\\ for a backslash"),
    ("Extra data", "there is more after the end of the JSON value; remove it, or wrap "
                   "everything in one object {…}"),
)


def _json_stand_in(slot: Slot, marker: str) -> str:
    return marker if slot.context is Context.JSON_STRING else "null"


def _check_json(text: str, template: Template) -> None:
    standing = _StandIns(template, _json_stand_in)

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        for name, _ in items:
            slot = standing.marked(name)
            if slot is not None:
                raise _Refused(problem(text, slot.start, f"{{{slot.name}}} stands in a name; "
                                       f"{JSON_NAME_TOKEN}", slot.name))
        return dict(items)

    def constant(name: str) -> object:
        at = next((m.start() for m in re.finditer(re.escape(name), standing.text)
                   if not json_in_string(standing.text, 0, m.start(), False)), 0)
        raise _Refused(problem(text, standing.original(at),
                               f"{name} is not JSON; write a number or null"))

    try:
        json.loads(standing.text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise _Refused(_json_problem(text, standing, exc)) from None
    except RecursionError:
        raise _Refused(problem(text, 0, TOO_DEEP)) from None
    except ValueError:  # an integer past Python's 4,300-digit limit
        raise _Refused(problem(text, 0, NUMBER_TOO_LONG)) from None


def _json_problem(text: str, standing: _StandIns, exc: json.JSONDecodeError) -> Problem:
    where = standing.original(exc.pos)
    after_backslash = standing.covering(exc.pos + 1)
    if exc.msg.startswith("Invalid \\escape") and after_backslash is not None:
        return problem(text, where, f"the backslash just before {{{after_backslash.name}}} "
                       "would let its value end the string; remove the backslash",
                       after_backslash.name)
    slot = standing.covering(exc.pos)
    if slot is not None and exc.msg.startswith("Expecting ',' delimiter"):
        return problem(text, slot.start, f"a comma is missing before {{{slot.name}}}",
                       slot.name)
    if slot is not None:
        return _misplaced(text, slot, BodyFormat.JSON)
    if exc.pos >= len(standing.text.rstrip()) and not exc.msg.startswith("Unterminated"):
        return problem(text, len(text), JSON_ENDS_EARLY)
    for prefix, words in _JSON_MESSAGES:
        if exc.msg.startswith(prefix):
            return problem(text, where, words)
    return problem(text, where, f"this is not valid JSON ({exc.msg})")


# -- XML ---------------------------------------------------------------------------------

_XML_MESSAGES = {
    "mismatched tag": "this closing tag does not match the element that is open; "
                      "close the inner element first",
    "unclosed token": "something opened here is never closed (a tag, a comment or CDATA)",
    "no element found": "the XML ends too early: an element is not closed",
    "junk after document element": "there is more after the end of the root element; "
                                   "an XML body has exactly one outer element",
    "undefined entity": "an unknown entity; write & as &amp;",
    "not well-formed (invalid token)": "this is not well-formed XML here (a < or & that "
                                       "should be written &lt; or &amp;?)",
    "duplicate attribute": "this attribute is given twice in one element",
    "unbound prefix": "this name uses a namespace prefix that is not declared",
    "XML or text declaration not at start of entity": "<?xml …?> must be the very first "
                                                      "thing in the body",
    "syntax error": "this is not well-formed XML",
}


def _xml_stand_in(slot: Slot, marker: str) -> str:
    if slot.context is Context.XML_CDATA:
        return marker
    if slot.kind is Kind.ITEMS:
        return f"<Item m='&#{ord(marker)};'/>"  # elements: fine in content, nowhere else
    return f"&#{ord(marker)};"  # a character reference: fine in text and values, not in names


def _check_xml(text: str, template: Template) -> None:
    standing = _StandIns(template, _xml_stand_in)
    _parse_xml(text, standing, checks=True)
    # a missing value renders empty: that must be well-formed too (``]]{SubId1}>``)
    empty = _StandIns(template, lambda slot, marker: _render_empty(slot))
    try:
        _parse_xml(text, empty, checks=False)
    except _Refused as exc:
        assert exc.found.position is not None
        at = exc.found.position
        slot = max((s for s in template.parts if isinstance(s, Slot) and s.end <= at),
                   key=lambda s: s.end, default=None)
        where = slot.start if slot is not None else at
        raise _Refused(problem(text, where, f"{{{slot.name}}}: {EMPTY_BREAKS}" if slot
                               else EMPTY_BREAKS, slot.name if slot else None)) from None


def _render_empty(slot: Slot) -> str:
    return slot.escape(None)


def _parse_xml(text: str, standing: _StandIns, checks: bool) -> None:
    """Parse the stand-in text as receivers do (UTF-8 whatever it declares, namespaces
    bound) and, with ``checks``, follow where each token's stand-in lands: CDATA tokens
    only in CDATA, others only in text and attribute values, none in a comment, a
    processing instruction or a namespace declaration."""
    encoded = standing.text.encode("utf-8")
    parser = expat.ParserCreate("UTF-8", namespace_separator="}")
    in_cdata = False

    def here() -> int:
        return len(encoded[:max(parser.CurrentByteIndex, 0)].decode("utf-8", "replace"))

    def refuse(slot: Slot, kind: str | None = None) -> None:
        if kind is None:
            raise _Refused(_misplaced(text, slot, BodyFormat.XML))
        raise _Refused(problem(text, slot.start, f"{{{slot.name}}} cannot stand inside "
                               f"{kind}: {_HOW_TOKENS_STAND[BodyFormat.XML]}", slot.name))

    def inert(kind: str, closing: str) -> Callable[..., None]:
        def handler(*_: object) -> None:
            start = here()
            end = standing.text.find(closing, start + 2)
            slot = standing.within(start, len(standing.text) if end < 0 else end)
            if slot is not None:
                refuse(slot, kind)
        return handler

    def doctype(*_: object) -> None:
        raise _Refused(problem(text, standing.original(here()), NO_DOCTYPE))

    def declaration(_version: str | None, encoding: str | None, _standalone: int) -> None:
        if encoding is not None and encoding.lower().replace("_", "-") not in ("utf-8",
                                                                               "utf8"):
            raise _Refused(problem(text, standing.original(here()), ONLY_UTF8))

    def cdata(entering: bool) -> Callable[[], None]:
        def handler() -> None:
            nonlocal in_cdata
            in_cdata = entering
        return handler

    def characters(data: str) -> None:
        slot = standing.marked_refs(data) if in_cdata else standing.marked(data)
        if slot is not None and (in_cdata or slot.context is Context.XML_CDATA):
            refuse(slot)

    def element(_name: str, attributes: dict[str, str]) -> None:
        for value in attributes.values():
            slot = standing.marked(value)
            if slot is not None and slot.context is Context.XML_CDATA:
                refuse(slot)

    def namespace(_prefix: str | None, uri: str | None) -> None:
        slot = standing.marked(uri or "")
        if slot is not None:
            refuse(slot, IN_NAMESPACE)

    parser.StartDoctypeDeclHandler = doctype
    parser.XmlDeclHandler = declaration
    if checks:
        parser.CommentHandler = inert(IN_COMMENT, "-->")
        parser.ProcessingInstructionHandler = inert(IN_PI, "?>")
        parser.StartCdataSectionHandler = cdata(True)
        parser.EndCdataSectionHandler = cdata(False)
        parser.CharacterDataHandler = characters
        parser.StartElementHandler = element
        parser.StartNamespaceDeclHandler = namespace
    try:
        parser.Parse(encoded, True)
    except expat.ExpatError as exc:
        at = len(encoded[:parser.ErrorByteIndex].decode("utf-8", "replace"))
        slot = standing.covering(at)
        if slot is not None:
            raise _Refused(_misplaced(text, slot, BodyFormat.XML)) from None
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        words = _XML_MESSAGES.get(reason, f"this is not well-formed XML ({reason})")
        position = standing.original(at)
        if reason == "no element found":
            position = len(text)
        raise _Refused(problem(text, position, words)) from None


# -- form --------------------------------------------------------------------------------


def _check_form(text: str, template: Template) -> None:
    def refuse(at: int, message: str, token: str | None = None) -> _Refused:
        return _Refused(problem(text, at, message, token))

    position = 0
    pair_start, has_equals = 0, False
    parts = [*template.parts, "&"]  # a final separator closes the last pair
    for index, part in enumerate(parts):
        if isinstance(part, Slot):
            if not has_equals:
                raise refuse(part.start, f"{{{part.name}}} stands in a name; "
                             f"{_HOW_TOKENS_STAND[BodyFormat.FORM]}", part.name)
            position = part.end
            continue
        i = 0
        while i < len(part):
            ch, at = part[i], position + i
            if ch == "&":
                if at == pair_start:
                    at_end = index == len(parts) - 1
                    raise refuse(at - 1 if at_end else at,
                                 EMPTY_PAIR_AT_END if at_end else EMPTY_PAIR)
                if not has_equals:
                    raise refuse(pair_start, f"“{text[pair_start:at]}” has no value; write "
                                 "name=value (an empty value is name=)")
                pair_start, has_equals = at + 1, False
            elif ch == "=":
                if has_equals:
                    raise refuse(at, SECOND_EQUALS)
                if at == pair_start:
                    raise refuse(at, NO_NAME)
                has_equals = True
            else:
                match = _FORM_LITERAL.match(part, i)
                if match is None:
                    raise refuse(at, _form_fix(ch))
                i = match.end() - 1
            i += 1
        position += len(part)


def _form_fix(ch: str) -> str:
    if ch in "\r\n":
        return FORM_LINE_BREAK
    if ch == " ":
        return FORM_SPACE
    if ch == ";":
        return FORM_SEMICOLON
    if ch == "%":
        return FORM_PERCENT
    encoded = "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
    return f"“{ch}” must be percent-encoded in a form body: write {encoded}"


#: every fixed text a problem can hold, for the message catalogs (``core/messages.py``)
TEXTS = (JSON_ENDS_EARLY, NO_DOCTYPE, IN_COMMENT, IN_PI, EMPTY_PAIR_AT_END, EMPTY_PAIR,
         NOT_UNICODE, TOO_DEEP, NUMBER_TOO_LONG, IN_NAMESPACE, ONLY_UTF8, EMPTY_BREAKS,
         SECOND_EQUALS, NO_NAME, FORM_LINE_BREAK, FORM_SPACE, FORM_SEMICOLON, FORM_PERCENT,
         JSON_NAME_TOKEN, *_HOW_TOKENS_STAND.values(), *(w for _, w in _JSON_MESSAGES),
         *_XML_MESSAGES.values())
