"""What a refusal says, in words a person who is not a developer understands, in any
language: a :class:`Message` is a catalog message id and its values, translated where it
is shown (the API in the caller's ``Accept-Language``, the web app in the reader's).

* :func:`describe` turns a validation error (pydantic's type, the field and the context)
  into the field's path and a plain :class:`Message`, e.g. ``action_type`` and "use capital
  letters, digits and _, starting with a letter, e.g. SALE".
* :func:`label` is the field's name as a form shows it (:data:`LABELS`, translatable).
* :func:`known` finds the message id behind a text the services or the core wrote in
  English (an f-string): one without values is its own message id; one with values is
  matched against :data:`KNOWN`, whose message ids give back the very same English, so an
  English answer is unchanged and every other language gets a translation. A text that
  is in neither is shown as it is.

Pure: no catalog is read here (``postback/i18n.py`` does that); ``N_`` only marks a string
for the extractor (``python -m postback.web.messages``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from postback.core import template_syntax

Gettext = Callable[[str], str]
Param = str | int | float | None


def N_(msgid: str) -> str:  # gettext's name: mark now, translate where shown
    """Mark ``msgid`` for the catalog; it is translated where it is shown."""
    return msgid


class Message:
    """A message id and its values; a value may itself be a message (translated too)."""

    __slots__ = ("msgid", "params")

    def __init__(self, msgid: str, **params: Param | Message) -> None:
        self.msgid = msgid
        self.params = params

    def render(self, gettext: Gettext) -> str:
        text = gettext(self.msgid)
        if not self.params:
            return text
        return text % {k: v.render(gettext) if isinstance(v, Message) else v
                       for k, v in self.params.items()}

    def english(self) -> str:
        return self.render(str)

    def to_json(self) -> dict[str, Any]:
        """A plain form to keep (the web app's flash) and read back with :func:`from_json`."""
        return {"msgid": self.msgid, "params": {
            k: v.to_json() if isinstance(v, Message) else v for k, v in self.params.items()}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (self.msgid, self.params) == (
            other.msgid, other.params)

    def __hash__(self) -> int:
        return hash(self.msgid)

    def __repr__(self) -> str:
        return f"Message({self.msgid!r}, **{self.params!r})"


def from_json(data: Any) -> Message:
    if isinstance(data, str):
        return Message(data)
    params = {k: from_json(v) if isinstance(v, dict) else v
              for k, v in dict(data.get("params") or {}).items()}
    return Message(str(data["msgid"]), **params)


#: "<field>: <problem>", the way every refusal reads
FIELD_PROBLEM = N_("%(field)s: %(problem)s")
#: after the first of several problems (the API names the first)
MORE = N_("%(message)s (and %(n)s more)")


def field_problem(field: str | Message, problem: Message) -> Message:
    return Message(FIELD_PROBLEM, field=field, problem=problem)


# -- field labels ----------------------------------------------------------------------------

#: a field's name as the pages show it; the dotted path first, then the last name
LABELS: dict[str, str] = {
    # programs, event types, contracts
    "name": N_("Name"), "currency": N_("Currency"), "action_type": N_("Action type"),
    "event_type_ids": N_("Event types"), "locking": N_("Locking"),
    "clearing": N_("Clearing"), "locking.rule": N_("Locking rule"),
    "locking.days": N_("Locking days"), "clearing.rule": N_("Clearing rule"),
    "clearing.days": N_("Clearing days"),
    # actions
    "program_id": N_("Program"), "event_type_id": N_("Event type"),
    "event_type": N_("Program and event type"), "partner_id": N_("Partner"),
    "oid": N_("Order ID"), "amount": N_("Amount"), "payout": N_("Payout"),
    "event_date": N_("Event date"), "reason": N_("Reason"), "sub_id1": "SubId1",
    "sub_id2": "SubId2", "sub_id3": "SubId3", "shared_id": "SharedId",
    "promo_code": N_("Promo code"), "customer_id": N_("Customer ID"),
    "customer_status": N_("Customer status"), "customer_country": N_("Customer country"),
    "referring_type": N_("Referring type"), "items": N_("Items"), "actions": N_("Actions"),
    "quantity": N_("Quantity"), "sku": "SKU",
    # event notifications
    "url": "URL", "method": N_("Method"), "body_format": N_("Body format"),
    "body": N_("Body"), "headers": N_("HTTP Headers"), "enabled": N_("Enabled"),
    "minimum_delay_seconds": N_("Minimum Delay (seconds)"),
    "max_requests_per_second": N_("Maximum Requests per second"),
    "success_response": N_("Success Response"), "error_response": N_("Error Response"),
    "extra_triggers": N_("Extra triggers"), "signed": N_("Signing"),
    "signing_scheme": N_("Signing scheme"), "sample_id": N_("Sample"),
    # inquiries
    "inquiry_type": N_("Inquiry type"), "transaction_date": N_("Transaction date"),
    "transaction_amount": N_("Transaction amount"), "expected_payout": N_("Expected payout"),
    "notes": N_("Notes"), "resolution_status": N_("Resolution"),
    "reject_reason": N_("Reject reason"),
    "auto_approval.event_type_id": N_("Auto-approval event type"),
    "auto_approval.mode": N_("Auto-approval"),
    # accounts, deliveries, catalog
    "partner_type": N_("Partner type"), "account_type": N_("Account type"),
    "account_id": N_("Account"), "since": N_("Since"), "until": N_("Until"),
    "type": N_("Type"), "status": N_("Status"), "file": N_("File"), "item_id": "item_id",
}

_INDEX = re.compile(r"\[\d+\]")


def label(path: str, labels: Mapping[str, str] | None = None) -> str | Message:
    """The field at ``path`` (``actions[2].oid``, ``locking.days``) as a form names it: a
    message to translate, or the path itself when the table has no name for it."""
    table = LABELS if labels is None else labels
    bare = _INDEX.sub("", path)
    for key in (bare, bare.rsplit(".", 1)[-1]):
        if key in table:
            return Message(table[key]) if table[key] != key else key
    return path


def field_path(loc: Iterable[Any]) -> str:
    """A validation error's location as one path: ``actions[2].oid`` (the ``body``,
    ``query`` or ``path`` it came in left out)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


# -- validation errors -----------------------------------------------------------------------

#: what a pattern asks for, field by field (a regular expression means nothing to most)
PATTERNS: dict[str, str] = {
    "action_type": N_("use capital letters, digits and _, starting with a letter, "
                      "e.g. SALE"),
    "currency": N_("use the three-letter currency code in capitals, e.g. USD"),
    "customer_country": N_("use the two-letter country code in capitals, e.g. US"),
    "referring_type": N_("use capital letters and _, e.g. CLICK"),
}
#: what an empty required field says, where it helps to say more than "enter a value"
EMPTY: dict[str, str] = {
    "url": N_("enter the address of your server, e.g. https://example.com/postback"),
    "oid": N_("enter the order ID, e.g. ORD-1001"),
    "name": N_("enter a name"),
    "event_type_ids": N_("choose at least one event type"),
    "actions": N_("send at least one action"),
}
#: ids a form offers as a choice: empty means nothing was chosen
CHOICES = frozenset({"program_id", "event_type_id", "partner_id", "account_id",
                     "event_type_ids", "sample_id", "event_type"})
#: the English of a validator's ValueError, said more plainly (the key stays a msgid too)
PLAINER: dict[str, str] = {
    'must be a decimal string of ASCII digits with at most 2 decimals and no spaces, such '
    'as "10.50"': N_('enter an amount such as 10.50: digits, a point and at most 2 decimals, '
                     'no spaces'),
}


def _last_name(path: str) -> str:
    return _INDEX.sub("", path).rsplit(".", 1)[-1]


def _problem(kind: str, name: str, ctx: Mapping[str, Any], value: Any,
             fallback: str) -> Message:
    text = isinstance(value, str)
    if kind == "missing":
        return Message(EMPTY.get(name, N_("is required")))
    if kind in ("string_too_short", "too_short"):
        least = int(ctx.get("min_length", 1))
        if least <= 1 and (text or name in EMPTY or value is None):
            return Message(EMPTY.get(name, N_("enter a value")))
        if least <= 1:
            return Message(EMPTY.get(name, N_("choose at least one")))
        if text:
            return Message(N_("enter at least %(n)s characters"), n=least)
        return Message(N_("needs at least %(n)s"), n=least)
    if kind in ("string_too_long", "too_long"):
        most = ctx.get("max_length")
        if text or kind == "string_too_long":
            return Message(N_("use at most %(n)s characters"), n=most)
        return Message(N_("holds %(actual)s; at most %(n)s are allowed"),
                       actual=ctx.get("actual_length"), n=most)
    if kind == "string_pattern_mismatch":
        return Message(PATTERNS.get(name, N_("is not written the way this field needs")))
    if kind in ("int_parsing", "int_type", "int_from_float", "int_parsing_size"):
        if name in CHOICES:
            return Message(N_("choose one") if value in ("", None)
                           else N_("must be an id: a whole number such as 42"))
        return Message(N_("enter a whole number, e.g. 30"))
    if kind in ("float_parsing", "float_type", "decimal_parsing", "decimal_type"):
        return Message(N_("enter a number, e.g. 2.5"))
    if kind == "greater_than_equal":
        return Message(N_("must be %(n)s or more"), n=ctx.get("ge"))
    if kind == "greater_than":
        return Message(N_("must be more than %(n)s"), n=ctx.get("gt"))
    if kind == "less_than_equal":
        return Message(N_("must be %(n)s or less"), n=ctx.get("le"))
    if kind == "less_than":
        return Message(N_("must be less than %(n)s"), n=ctx.get("lt"))
    if kind in ("literal_error", "enum"):
        return Message(N_("choose one of %(choices)s"), choices=str(ctx.get("expected", "")))
    if kind in ("bool_parsing", "bool_type"):
        return Message(N_("must be true or false"))
    if kind == "string_type":
        return Message(N_("must be text"))
    if kind in ("list_type", "tuple_type", "set_type"):
        return Message(N_("must be a list"))
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        return Message(N_("must be an object with named fields"))
    if kind == "extra_forbidden":
        return Message(N_("is not a known field; remove it (check the spelling)"))
    if kind == "json_invalid":
        return Message(N_("the body is not valid JSON (%(error)s)"),
                       error=str(ctx.get("error", "parse error")))
    if kind in ("datetime_parsing", "datetime_type", "datetime_from_date_parsing"):
        return Message(N_("must be a date and time in ISO-8601 with a UTC offset, e.g. "
                          "2026-11-02T18:04:05+00:00 or ...Z"))
    if kind in ("value_error", "assertion_error"):
        said = str(ctx.get("error", fallback))
        said = said.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return known(PLAINER.get(said, said))
    return Message(fallback)  # a kind this table does not know: pydantic's own words


def describe(error: Mapping[str, Any]) -> tuple[str, Message]:
    """One validation error (as ``ValidationError.errors()`` lists it) as the field's path
    and what is wrong, in plain words."""
    path = field_path(error.get("loc", ()))
    problem = _problem(str(error.get("type", "")), _last_name(path),
                       error.get("ctx") or {}, error.get("input"),
                       str(error.get("msg", "is invalid")).removeprefix("Value error, "))
    return path, problem


# -- texts the services and the core write in English ---------------------------------------

@dataclass(frozen=True)
class Known:
    """A message the code writes as an f-string: ``msgid`` gives back its exact English
    with the values it holds; ``translate`` names the values that are words (translated
    too), ``shapes`` what a value may look like where the text alone is ambiguous, and
    ``plain`` a plainer wording for the web's pages (the API keeps ``msgid``)."""

    msgid: str
    translate: frozenset[str] = frozenset()
    shapes: Mapping[str, str] = field(default_factory=dict)
    plain: str | None = None

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compiled(self.msgid, tuple(sorted(self.shapes.items())))


_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@cache
def _compiled(msgid: str, shapes: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    shape = dict(shapes)
    out, at, seen = [], 0, set()
    for m in _PLACEHOLDER.finditer(msgid):
        out.append(re.escape(msgid[at:m.start()].replace("%%", "%")))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>{shape.get(name, '.+?')})")
        seen.add(name)
        at = m.end()
    out.append(re.escape(msgid[at:].replace("%%", "%")))
    return re.compile("".join(out), re.S)


def _k(msgid: str, *translate: str, plain: str | None = None, **shapes: str) -> Known:
    return Known(msgid, frozenset(translate), shapes, plain)


_WORD = r"[a-z][a-z ]*"
_NUMBER = r"\d+"
#: the services' and the core's messages that carry values (see the module's docstring)
KNOWN: tuple[Known, ...] = (
    # services/errors.NotFound
    _k(N_("%(what)s not found"), "what", what=_WORD),
    # services/ledger.py
    _k(N_("oid %(oid)s is already used by an action of event type %(event_type)s"),
       event_type=_NUMBER,
       plain=N_("%(oid)s is already used by an action of event type %(event_type)s; each "
                "order is reported once per event type")),
    _k(N_("oid %(oid)s appears twice for event type %(event_type)s (also at index "
          "%(index)s)"), event_type=_NUMBER, index=_NUMBER),
    _k(N_("partner %(partner)s has no contract on program %(program)s"),
       partner=_NUMBER, program=_NUMBER),
    _k(N_("event type %(event_type)s is outside partner %(partner)s's contract on program "
          "%(program)s"), event_type=_NUMBER, partner=_NUMBER, program=_NUMBER),
    _k(N_("event type %(event_type)s is not in program %(program)s"),
       event_type=_NUMBER, program=_NUMBER),
    _k(N_("amount and payout are unchanged; send a new amount or payout"),
       plain=N_("the amount and the payout are unchanged; enter a new amount or payout")),
    # services/feeds.py, core/feed_schedule.py
    _k(N_("%(reason)s: feeds go to public addresses only (an operator can open ranges for "
          "testing with POSTBACK_ALLOW_TARGETS)"), "reason"),
    _k(N_("this run's file was deleted on %(date)s: files are kept for the retention period "
          "(POSTBACK_FEED_RETENTION_DAYS)"), date=r"[0-9-]+"),
    _k(N_("this run has no file yet (it is %(status)s); try again when its status is "
          "succeeded"), status=r"[a-z]+"),
    _k(N_("%(name)s is a postback's own id and no column of a feed; use ChangeId, the id of "
          "the change a row shows"), name=r"\S+"),
    _k(N_("%(name)s is not a column of an actions feed%(hint)s"), "hint"),
    _k(N_("%(name)s is not a column of a catalog feed%(hint)s"), "hint"),
    _k(N_("; did you mean %(names)s?"), names=r"[^?]+"),
    _k(N_(" (see GET /v1/feeds/columns?content=%(content)s for the names)"),
       content=r"[a-z]+"),
    _k(N_("%(name)s is already column %(number)s; list each column once"), name=r"\S+",
       number=_NUMBER),
    _k(N_("%(name)s is not a known time zone%(hint)s"), "hint"),
    _k(N_("for a weekly feed, give the weekday: one of %(days)s")),
    _k(N_("the stored %(secret)s cannot be opened with this server's POSTBACK_SECRET_KEY; "
          "enter it again"), "secret", secret=r"password|private key"),
    # core/lifecycle.py
    _k(N_("reason %(reason)s is not a reason code; use one of %(codes)s")),
    _k(N_("cannot %(verb)s this action: it is already REVERSED"), "verb", verb=_WORD),
    _k(N_("cannot %(verb)s this action: it is APPROVED (locked) and final"), "verb",
       verb=_WORD),
    _k(N_("cannot %(verb)s this action: it locked at %(date)s"), "verb", verb=_WORD),
    # services/notification_settings.py
    _k(N_("%(trigger)s is not an opt-in trigger of %(type)s; it accepts %(allowed)s"),
       trigger=r"\S+", type=r"\S+"),
    _k(N_("event type %(event_type)s is not in partner %(partner)s's contract on program "
          "%(program)s"), event_type=_NUMBER, partner=_NUMBER, program=_NUMBER),
    _k(N_("event type %(event_type)s belongs to program %(program)s, not %(other)s"),
       event_type=_NUMBER, program=_NUMBER, other=_NUMBER),
    _k(N_("%(reason)s: postbacks go to public addresses only (an operator can open ranges "
          "for testing with POSTBACK_ALLOW_TARGETS)"), "reason"),
    _k(N_("%(title)s are only for %(types)s partners (impact.com's rule); this partner is "
          "of type %(type)s"), "title"),
    _k(N_("url: %(warning)s"), "warning"),
    # core/addresses.py and delivery/resolver.py: why an address is refused
    _k(N_("%(address)s is an IPv6 form of %(inner)s (%(reason)s)"), "reason",
       address=r"[0-9A-Fa-f:.]+", inner=r"[0-9A-Fa-f:.]+"),
    _k(N_("%(address)s is %(what)s"), "what", address=r"[0-9A-Fa-f:.]+(?:%\w+)?"),
    _k(N_("%(reason)s (%(host)s resolves to it)"), "reason", host=r"\S+"),
    _k(N_("%(host)s is a reserved name that never resolves on the public internet"),
       host=r"\S+"),
    _k(N_("%(host)s did not resolve within %(seconds)s s; it is checked again on every "
          "send"), host=r"\S+"),
    _k(N_("%(host)s does not resolve now (%(error)s); postbacks fail until it does"),
       host=r"\S+"),
    # services/inquiries.py
    _k(N_("inquiry %(id)s is %(state)s, not OPEN; only an open inquiry can be closed or "
          "resolved"), id=_NUMBER, state=r"[A-Z_]+"),
    _k(N_("a DECLINED resolution needs one of these exact reject reasons: %(reasons)s")),
    # services/programs.py, services/catalog.py
    _k(N_("event types %(unknown)s are not in program %(program)s; its event types are "
          "%(known)s"), program=_NUMBER),
    _k(N_("item %(item)s appears twice")),
    # services/test_tool.py
    _k(N_("no %(type)s setting is saved yet; pass url (and method, body) to test one before "
          "saving it"), type=r"[a-z-]+"),
    _k(N_("brand-created postbacks are tested as the brand saved them, with sample values; "
          "remove %(field)s"), field=r"\w+"),
    _k(N_("%(type)s tests use sample values; remove sample_id"), type=r"[a-z-]+"),
    # services/lane.py (the test tool's lane), api/deps.py
    _k(N_("%(n)s tests are being sent already; wait a few seconds for one to finish and "
          "test again"), n=_NUMBER),
    _k(N_("this endpoint is for %(roles)s keys; you are signed in as %(role)s"),
       role=r"\w+"),
    # core/render.py: a template's problems
    _k(N_("unknown token {%(token)s}; did you mean %(names)s?"), token=r"\w+"),
    _k(N_("unknown token {%(token)s}"), token=r"\w+"),
    _k(N_("{%(token)s} stands in the scheme or host of the URL; tokens may only appear in "
          "the path or query"), token=r"\w+"),
    _k(N_("{%(token)s:%(spec)s}: %(problem)s"), "problem", token=r"\w+", spec=r"[^{}]*"),
    _k(N_("{%(token)s}: %(problem)s"), "problem", token=r"\w+"),
    _k(N_("bad date format (%(error)s)")),
    # core/template_syntax.py: a body that is not the document its format says
    _k(N_("line %(line)s, column %(column)s: %(problem)s"), "problem", line=_NUMBER,
       column=_NUMBER),
    _k(N_("{%(token)s} cannot stand inside %(kind)s: %(how)s"), "kind", "how", token=r"\w+"),
    _k(N_("{%(token)s} cannot stand here: %(how)s"), "how", token=r"\w+"),
    _k(N_("the backslash just before {%(token)s} would let its value end the string; remove "
          "the backslash"), token=r"\w+"),
    _k(N_("{%(token)s} stands in a name; %(how)s"), "how", token=r"\w+"),
    _k(N_("a comma is missing before {%(token)s}"), token=r"\w+"),
    _k(N_("%(name)s is not JSON; write a number or null"), name=r"NaN|-?Infinity"),
    _k(N_("this is not valid JSON (%(error)s)")),
    _k(N_("this is not well-formed XML (%(reason)s)")),
    _k(N_("“%(name)s” has no value; write name=value (an empty value is name=)")),
    _k(N_("“%(char)s” must be percent-encoded in a form body: write %(encoded)s"),
       encoded=r"(?:%[0-9A-F]{2})+"),
    # core/values.py, models.py: money and currencies
    _k(N_("%(currency)s has no decimals, but %(field)s is \"%(value)s\"; send whole amounts "
          "such as \"%(whole)s\""), currency=r"[A-Z]{3}", field=r"[\w.\[\]]+"),
    _k(N_("%(problem)s (the program's currency)"), "problem"),
    _k(N_("%(code)s is not an ISO 4217 currency code; use one such as USD, EUR or JPY"),
       code=r"[A-Z]{3}"),
    # core/urls.py
    _k(N_("contains %(what)s at character %(n)s; remove it (a space in a path or query is "
          "written %%20)"), "what", n=_NUMBER),
    _k(N_("the port %(port)s is not a number from 1 to 65535")),
    _k(N_("the host %(host)s is not a valid host name or address")),
    _k(N_("the host %(host)s has unbalanced brackets")),
    _k(N_("the IPv6 address %(host)s has no closing ]")),
    # models.py: header checks
    _k(N_("header name %(name)s is not a valid HTTP token")),
    _k(N_("header %(name)s is set by the sender; remove it")),
    _k(N_("header %(name)s value must not contain CR, LF or NUL")),
    _k(N_("header %(name)s value is over 4096 characters")),
    # delivery/engine.py: an attempt's error; delivery/queue.py: a setting turned off
    _k(N_("retries exhausted after %(n)s attempts; last: %(last)s"), "last", n=_NUMBER),
    _k(N_("retries exhausted after %(n)s attempts"), n=_NUMBER),
    _k(N_("disabled automatically: every delivery failed for %(hours)s hours (%(failures)s "
          "or more failures in a row); fix the endpoint, then save the setting again to "
          "re-enable it"), failures=_NUMBER),
)

#: texts without values that the code writes, marked here so the catalog translates them
#: (they are their own message ids: :func:`known` needs no table for them)
TEXTS = (
    # services
    N_("must start with http:// or https://"),
    N_("must not carry user:password@; use a header instead"),
    N_("needs a host name, e.g. https://postbacks.example.com/in"),
    N_("a GET postback carries its values in the url; remove body or use method POST"),
    N_("auto-approval needs the event type its actions get; set auto_approval.event_type_id"),
    N_("a VALID resolution needs the event type of the action it creates"),
    N_("must be 1 to 255 characters"),
    N_("this setting does not sign its postbacks; save it with \"signed\": true first"),
    N_("this delivery is held because its postback is turned off; turn it on to send it, or "
       "discard what it holds"),
    N_("this delivery is being sent right now; read it again in a moment"),
    N_("the partner turned this postback off"),
    # what a NotFound names, a lifecycle verb, a notification type's title is in the web's
    N_("program"), N_("partner"), N_("brand"), N_("action"), N_("delivery"), N_("inquiry"),
    N_("event type"), N_("event notification type"), N_("event notification setting"),
    N_("catalog item"), N_("api key"), N_("change"),
    N_("modify"), N_("reverse"), N_("approve"),
    # addresses
    N_("a cloud metadata address"), N_("the unspecified address"), N_("a loopback address"),
    N_("a link-local address"), N_("a multicast address"),
    N_("a carrier-grade NAT address (100.64.0.0/10)"), N_("a unique-local address"),
    N_("a reserved address"), N_("a private address (RFC 1918)"),
    N_("not a globally routable address"),
    # urls
    N_("a carriage return (CR)"), N_("a line break (LF)"), N_("a tab"), N_("a space"),
    N_("has a #fragment, which never reaches your server; remove it"),
    N_("needs a host name written out, e.g. https://postbacks.example.com/in (tokens may "
       "stand in the path and the query)"),
    N_("not an absolute http(s) URL"),
    # models
    N_("must not be negative"),
    N_("must be a whole number, not true or false"),
    N_("must be true or false"),
    N_("must be a date and time in ISO-8601 with a UTC offset, e.g. 2026-11-02T18:04:05+00:00 "
       "or ...Z"),
    N_("needs a UTC offset, e.g. 2026-11-02T18:04:05+00:00 or ...Z"),
    N_("must be between the years 1900 and 9000 (in UTC)"),
    N_("is not valid Unicode text (lone surrogate)"),
    N_("must not contain NUL characters"),
    N_('send money as a decimal string such as "10.50", not a JSON number'),
    N_('must be a decimal string of ASCII digits with at most 2 decimals and no spaces, such '
       'as "10.50"'),
    # render
    N_("is over the 64 KiB limit; shorten it"),
    N_("a date format needs strftime codes, e.g. {EventDate:%Y-%m-%d}"),
    N_("{Items} takes no format"),
    N_("a value map is KEY=VALUE pairs separated by commas, e.g. "
       "{Status:PENDING=0,APPROVED=1,REVERSED=2}"),
    # data feeds (services/feeds.py, core/feed_schedule.py), replay, updates feeds
    N_("feed"), N_("feed run"), N_("feed file"), N_("replay"),
    N_("password"), N_("private key"),
    N_("choose at least one column, e.g. ActionId, Status, Payout"),
    N_("choose at least one column, e.g. CatalogItemId, Name, CurrentPrice"),
    N_("a catalog feed is one program's catalog: give its program_id (a program you are "
       "contracted on)"),
    N_("this download link has expired; the run's page (GET /v1/feeds/{id}/runs/{run_id}) "
       "gives a new one while the file is kept"),
    N_("only an SFTP destination can be tested: a hosted feed needs no connection, and an "
       "email feed's test is a run"),
    N_("a catalog feed is always the whole current catalog; leave window out"),
    N_("must be a host name (labels of 1 to 63 characters between dots) or an IP address, "
       "e.g. sftp.partner.example"),
    N_("email feeds are not available on this server: the operator has not set up a mail "
       "relay (POSTBACK_SMTP_HOST); use hosted or sftp"),
    N_("must be a host name or an IP address, e.g. sftp.partner.example"),
    N_("give the password or private_key again when you change the host, port or username: "
       "the stored one is never sent to another server"),
    N_("an SFTP destination needs a password or a private_key"),
    N_("give the time of day as HH:MM in 24-hour time, e.g. 06:30"),
    N_('for a monthly feed, give a day of the month from 1 to 28, or "last" for the last day '
       '(29, 30 and 31 are not in every month)'),
    N_("an hourly feed runs every day: leave day out"),
    N_("for an hourly feed, give the minute past each hour as :MM, e.g. :15"),
    N_("a daily feed runs every day: leave day out"),
    N_(" (use an IANA name such as Europe/Paris, America/New_York or UTC)"),
    N_("must be after since"),
    N_("a one-off replay URL is sent as written and cannot hold tokens such as {EventId}; "
       "remove them"),
    N_("is not a cursor this feed gave out: send back a next_cursor (or an item's cursor) "
       "exactly as you received it, or leave after out to start from the first change"),
    # HTTP
    N_("send Authorization: Bearer <api key>"), N_("unknown or revoked API key"),
    N_("the body is not valid JSON (it must be UTF-8 text)"),
    N_("Not Found"), N_("Method Not Allowed"),
)
_TEXTS = frozenset((*TEXTS, *template_syntax.TEXTS))


def known(text: str, plain: bool = False, extra: Iterable[Known] = ()) -> Message:
    """The message behind ``text``, an English text the code wrote: itself when it holds no
    values (the catalog has it, or it is shown as it is), else the :data:`KNOWN` message it
    matches (or one of ``extra``), with its values. ``plain`` prefers the plainer wording
    the pages use."""
    if text in _TEXTS:
        return Message(text)
    for entry in (*KNOWN, *extra):
        found = entry.pattern.fullmatch(text)
        if found is None:
            continue
        values = found.groupdict()
        params: dict[str, Param | Message] = {
            k: known(v, plain, extra) if k in entry.translate else v
            for k, v in values.items()}
        return Message(entry.plain if plain and entry.plain else entry.msgid, **params)
    return Message(text)


_FIELD_PREFIX = re.compile(r"(?P<field>[a-z_][a-z0-9_]*(?:\[\d+\])*"
                           r"(?:\.[a-z_][a-z0-9_]*(?:\[\d+\])*)*): (?P<rest>.+)", re.S)


def split_field(text: str, field: str | None = None) -> tuple[str | None, str]:
    """``("oid", "...")`` from ``"oid: ..."``: the field a refusal's text starts with (the
    one given, or any lower-case field path), and the rest."""
    if field is not None:
        return (field, text[len(field) + 2:]) if text.startswith(f"{field}: ") else (None, text)
    if text in _TEXTS:
        return None, text
    found = _FIELD_PREFIX.fullmatch(text)
    if found is None:
        return None, text
    return found.group("field"), found.group("rest")


def refusal(text: str, field: str | None = None,
            plain: bool = False) -> tuple[str | None, Message]:
    """A refusal's text (``NotFound``, ``Invalid``, ``RuleViolation``) as the field it is
    about (or None) and its message, the field's part left out."""
    named, rest = split_field(text, field)
    return named, known(rest, plain)
