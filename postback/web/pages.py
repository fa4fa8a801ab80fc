"""What every page shares: templates in the reader's language, the session behind the
cookie, CSRF checks, and the response headers that keep pages to themselves.

A page handler gets a :class:`Page` (request, session, language) and returns
``page.render(template, **context)``. Pages without a live session redirect to sign-in.

Handlers are plain ``def`` functions: FastAPI runs them on its thread pool, so a page's
database reads, writes and save-time DNS lookups never hold up the event loop (nor with it
every other request). What must be awaited, reading a posted form or JSON body, is done
before the handler runs, by the :data:`Form` and :data:`JsonBody` dependencies.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.datastructures import UploadFile

from postback.core.lifecycle import RuleViolation
from postback.db.engine import reader
from postback.services.accounts import Role
from postback.services.errors import Invalid, NotFound
from postback.services.web_sessions import Session, find_session
from postback.web.i18n import LANGUAGES, negotiate, translations

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


@dataclass
class Page:
    request: Request
    session: Session | None
    language: str

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

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
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


def errors_of(exc: Exception) -> dict[str, Any]:
    """{field: message} (and the template problems, for highlighting) from a refusal."""
    if isinstance(exc, ValidationError):
        out: dict[str, Any] = {}
        for err in exc.errors():
            field = ".".join(str(x) for x in err.get("loc", ())) or "form"
            message = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
            out.setdefault(field.split(".")[0], message)
        return out
    if isinstance(exc, Invalid):
        out = {exc.field: exc.message}
        problems = exc.extra.get("problems")
        if isinstance(problems, list):
            out["problems"] = problems
        return out
    if isinstance(exc, RuleViolation):
        return {"form": exc.message}
    raise exc


def refusal_message(exc: Exception) -> str:
    """A refusal in one line, for pages that show it above the form."""
    if isinstance(exc, NotFound):
        return str(exc)
    if isinstance(exc, RuleViolation):
        return exc.message
    return "; ".join(f"{k}: {v}" for k, v in errors_of(exc).items() if k != "problems")


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
    if token:
        with reader(db).connect() as conn:
            session = find_session(conn, token, datetime.now(UTC),
                                   request.app.state.settings.admin_token)
    if session is None:  # after signing in, come back here (a form's page cannot be)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target if request.method == "GET" else "/")
    p = Page(request, session, language_of(request))
    if roles and session.principal.role not in roles:
        raise Forbidden(p.gettext("This page is for another kind of account."))
    return p


def anonymous(request: Request) -> Page:
    return Page(request, None, language_of(request))


def sign_in_redirect(path: str) -> Response:
    return redirect(f"/signin?next={quote(path, safe='')}")
