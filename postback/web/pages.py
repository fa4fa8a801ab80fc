"""What every page shares: templates in the reader's language, the session behind the
cookie, CSRF checks, and the response headers that keep pages to themselves.

A page handler gets a :class:`Page` (request, session, language) and returns
``page.render(template, **context)``. Pages without a live session redirect to sign-in.

A form that is refused is shown again as it was sent, each problem beside its field, in
the reader's words (:meth:`Page.refusal`, :class:`Filled`; ``core/messages.py`` has the
words). A form that changes something answers with a redirect (Post/Redirect/Get,
:meth:`Page.done`): what it has to say (a notice, a result, a secret shown once) waits in
the session for the page it leads to, which takes it, so a reload shows it no more and
repeats nothing.

Handlers are plain ``def`` functions: FastAPI runs them on its thread pool, so a page's
database reads, writes and save-time DNS lookups never hold up the event loop (nor with it
every other request). What must be awaited, reading a posted form or JSON body, is done
before the handler runs, by the :data:`Form` and :data:`JsonBody` dependencies.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.datastructures import UploadFile

from postback.core.diagnosis import DIAGNOSES
from postback.core.lifecycle import RuleViolation
from postback.core.messages import Message, describe, field_problem, known, label, refusal
from postback.db.engine import reader
from postback.models import MAX_ID
from postback.sealing import SealError
from postback.services.accounts import Role
from postback.services.errors import Invalid, NotFound
from postback.services.web_sessions import (
    Session,
    add_flash,
    find_session,
    flash_waiting,
    take_flash,
)
from postback.web.i18n import LANGUAGES, negotiate, say, translations

TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "pb_session"
LANG_COOKIE = "pb_lang"
CSRF_FIELD = "csrf_token"
# No inline script or style, nothing from elsewhere: an injected tag could do nothing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


#: an id in a page's path: one the database can hold (anything else is a 404 page)
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class SignInRequired(Exception):
    """No live session: the handler answers with a redirect to the sign-in page."""

    def __init__(self, path: str) -> None:
        self.path = path


class Forbidden(Exception):
    """Signed in, but this page is for another kind of account, a form's CSRF token did
    not match (403), or what was asked for is not there or not the caller's (404: the two
    look the same, so nothing leaks)."""

    def __init__(self, message: str, status: int = 403) -> None:
        self.message = message
        self.status = status


@cache
def environment(language: str) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals["LANGUAGES"] = LANGUAGES
    return env


def safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//elsewhere`` or a full URL): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return "/"


class Filled:
    """A form as it was sent, to show again with what was wrong: each problem beside its
    field (``error``), those about no field of the form above it (``general``). A page
    with several forms shows it in the one called ``name`` (``of``); the others, and every
    form of a page shown afresh, get ``EMPTY``."""

    def __init__(self, name: str = "", values: Mapping[str, Any] | None = None,
                 errors: Mapping[str, Any] | None = None, fields: Iterable[str] = ()) -> None:
        self.name = name
        self.values = dict(values or {})
        self.errors = {k: v for k, v in (errors or {}).items() if k != "problems"}
        self.fields = frozenset(fields) | frozenset(self.values)

    def __bool__(self) -> bool:
        return bool(self.name)

    def of(self, name: str) -> Filled:
        return self if name == self.name else EMPTY

    def value(self, field: str, default: Any = "") -> Any:
        return self.values.get(field, default) if self else default

    def checked(self, field: str, default: bool = False) -> bool:
        """A checkbox: ticked as sent, or as the page has it at first."""
        return bool(self.values.get(field)) if self else default

    def error(self, field: str) -> str | None:
        found = self.errors.get(field)
        return None if found is None else str(found)

    def general(self) -> list[str]:
        return [str(v) for k, v in self.errors.items() if k not in self.fields]


EMPTY = Filled()


_INDEX = re.compile(r"\[\d+\]")


def _top(path: str) -> str:
    return path.split(".", 1)[0].split("[", 1)[0]


@dataclass
class Page:
    request: Request
    session: Session | None
    language: str
    token: str | None = None
    flash_due: bool = False

    @property
    def role(self) -> Role | None:
        return self.session.principal.role if self.session else None

    @property
    def account_id(self) -> int:
        assert self.session is not None and self.session.principal.account_id is not None
        return self.session.principal.account_id

    def gettext(self, message: str, **values: Any) -> str:
        text = translations(self.language).gettext(message)
        return text % values if values else text

    def say(self, message: Message) -> str:
        return say(message, self.language)

    def said(self, text: str | None) -> str:
        """A text the services, the engine or the test tool wrote in English (a reason, an
        attempt's error), in the reader's words where the catalog has them."""
        return self.say(known(text, plain=True, extra=DIAGNOSES)) if text else ""

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        flash = self.flash if self.request.method == "GET" else {}
        for key in ("notice", "warnings"):
            if key in flash and context.get(key) is None:
                context[key] = flash[key]
        context.setdefault("filled", EMPTY)
        context.setdefault("said", self.said)
        html = environment(self.language).get_template(template).render(
            page=self, csrf_token=self.session.csrf_token if self.session else "",
            path=self.request.url.path, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def form(self, sent: Posted) -> dict[str, str]:
        """The posted form (the last value of each field), after checking its CSRF token
        against the session's."""
        fields = dict(sent.fields)
        token = fields.pop(CSRF_FIELD, "")
        if self.session is None or not hmac.compare_digest(token, self.session.csrf_token):
            raise Forbidden(self.gettext("This form has expired or did not come from this "
                                         "site: reload the page and send it again."))
        return fields

    # -- Post/Redirect/Get ------------------------------------------------------------------

    def done(self, to: str, notice: str | None = None, sealed: Mapping[str, Any] | None = None,
             **data: Any) -> RedirectResponse:
        """A 303 to the page ``to``, which shows ``notice`` and gets ``data`` (JSON) once,
        as :attr:`flash`; ``sealed`` values (secrets: a new key, a signing secret) are
        kept sealed under ``POSTBACK_SECRET_KEY`` until then."""
        entry: dict[str, Any] = dict(data)
        if notice is not None:
            entry["notice"] = notice
        if sealed:
            sealer = self.request.app.state.settings.sealer
            entry["sealed"] = {k: sealer.seal(json.dumps(v)) for k, v in sealed.items()}
        if entry and self.token is not None:
            with self.request.app.state.db.begin() as conn:
                add_flash(conn, self.token, urlsplit(to).path, entry, datetime.now(UTC))
        return redirect(to)

    @cached_property
    def flash(self) -> dict[str, Any]:
        """What the form before this page left for it (:meth:`done`), taken as it is read:
        the next reload shows none of it."""
        if not self.flash_due or self.token is None:
            return {}
        with self.request.app.state.db.begin() as conn:
            entries = take_flash(conn, self.token, self.request.url.path, datetime.now(UTC))
        out: dict[str, Any] = {}
        for entry in entries:
            sealed = entry.pop("sealed", None) or {}
            out.update(entry)
            for key, value in dict(sealed).items():
                try:
                    out[key] = json.loads(self.request.app.state.settings.sealer.open(value))
                except (SealError, ValueError, RuntimeError):
                    out.pop(key, None)  # the key changed since: nothing to show
        return out

    # -- refusals in the reader's words -------------------------------------------------------

    def refusal(self, exc: Exception, names: Mapping[str, str] | None = None,
                labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """{form field: what is wrong with it} from a refusal (a validation error, or the
        services' ``Invalid``, ``NotFound`` or ``RuleViolation``), in the reader's
        language, each as "<label>: <problem>"; ``form`` for what is about no field, and
        ``problems`` (a template's, for marking where they stand). ``names`` maps a model's
        field path to the form's field where they differ; ``labels`` replaces the table of
        field labels (``core.messages.LABELS``)."""
        names = names or {}
        out: dict[str, Any] = {}

        def put(path: str | None, problem: Message) -> None:
            if not path:
                out.setdefault("form", self.say(problem))
                return
            key = names.get(_INDEX.sub("", path), names.get(_top(path), _top(path)))
            out.setdefault(key, self.say(field_problem(label(path, labels), problem)))

        if isinstance(exc, ValidationError):
            for err in exc.errors():
                put(*describe(err))
        elif isinstance(exc, Invalid):
            problems = exc.extra.get("problems")
            if isinstance(problems, list) and problems:
                shown = []
                for problem in problems:
                    _, said = refusal(str(problem.get("message", "")), plain=True)
                    put(str(problem.get("field") or exc.field), said)
                    shown.append({**problem, "message": self.say(said)})
                out["problems"] = shown
            else:
                put(exc.field, refusal(exc.message, exc.field, plain=True)[1])
        elif isinstance(exc, RuleViolation | NotFound):
            put(*refusal(exc.message if isinstance(exc, RuleViolation) else str(exc),
                         plain=True))
        else:
            raise exc
        return out

    def refusal_text(self, exc: Exception, **how: Any) -> str:
        """A refusal in one line, for pages that show it above everything."""
        return "; ".join(str(v) for k, v in self.refusal(exc, **how).items() if k != "problems")


@dataclass(frozen=True)
class Posted:
    """A posted form, as read from the request: each text field's last value, every value
    of every field (for repeated fields such as header rows), and the files."""

    fields: dict[str, str]
    lists: dict[str, list[str]]
    files: dict[str, UploadFile]


async def posted(request: Request) -> Posted:
    data = await request.form()
    fields: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    files: dict[str, UploadFile] = {}
    for key, value in data.multi_items():
        if isinstance(value, str):
            fields[key] = value
            lists.setdefault(key, []).append(value)
        elif isinstance(value, UploadFile):
            files.setdefault(key, value)
    return Posted(fields, lists, files)


#: a handler's posted form, read (awaited) before the handler runs on its thread
Form = Annotated[Posted, Depends(posted)]

#: a request body that is not JSON
NOT_JSON = object()


async def json_body(request: Request) -> Any:
    """The request's JSON body, or :data:`NOT_JSON`."""
    try:
        return await request.json()
    except ValueError:
        return NOT_JSON


#: a handler's JSON body (or NOT_JSON), read before the handler runs on its thread
JsonBody = Annotated[Any, Depends(json_body)]


def utc_input(text: str | None) -> datetime | None:
    """A ``datetime-local`` field (taken as UTC) or an ISO timestamp; None when blank or
    unreadable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


def language_of(request: Request) -> str:
    return negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def page(request: Request, *roles: Role) -> Page:
    """The page's context; raises unless a live session of one of ``roles`` is behind it."""
    db: Engine = request.app.state.db
    token = request.cookies.get(SESSION_COOKIE)
    session = None
    due = False
    if token:
        with reader(db).connect() as conn:
            session = find_session(conn, token, datetime.now(UTC),
                                   request.app.state.settings.admin_token)
            due = session is not None and request.method == "GET" and flash_waiting(
                conn, token, request.url.path)
    if session is None:  # after signing in, come back here (a form's page cannot be)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target if request.method == "GET" else "/")
    p = Page(request, session, language_of(request), token, due)
    if roles and session.principal.role not in roles:
        raise Forbidden(p.gettext("This page is for another kind of account."))
    return p


def anonymous(request: Request) -> Page:
    return Page(request, None, language_of(request))


def sign_in_redirect(path: str) -> Response:
    return redirect(f"/signin?next={quote(path, safe='')}")
