"""Sign in with an API key (or the operator token), sign out, switch language.

The key is checked once and never stored or echoed: the browser gets an HttpOnly,
SameSite=Strict cookie naming a server-side session (``services/web_sessions``). The
sign-in form is protected by a double-submit token, since it has no session yet.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from postback.db.engine import reader
from postback.services.accounts import Role, authenticate
from postback.services.web_sessions import LIFETIME, close_session, open_session
from postback.web.i18n import LANGUAGES
from postback.web.pages import (
    CSRF_FIELD,
    LANG_COOKIE,
    SESSION_COOKIE,
    Form,
    anonymous,
    page,
    redirect,
    safe_next,
)

router = APIRouter(include_in_schema=False)
SIGNIN_COOKIE = "pb_signin"
HOME: dict[Role, str] = {"partner": "/partner/event-notifications", "brand": "/brand",
                         "operator": "/operator"}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
def home(request: Request) -> Response:
    p = page(request)
    assert p.role is not None
    return redirect(HOME[p.role])


def _form(request: Request, target: str, error: str | None = None,
          status: int = 200) -> Response:
    """The sign-in page, with a fresh double-submit token in the form and a cookie."""
    token = secrets.token_urlsafe(24)
    response = anonymous(request).render("signin.html", status=status, signin_token=token,
                                         next=target, error=error)
    response.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="strict",
                        secure=_secure(request), path="/signin")
    return response


@router.get("/signin")
def signin_form(request: Request, next: str = "/") -> Response:
    return _form(request, safe_next(next))


@router.post("/signin")
def signin(request: Request, sent: Form) -> Response:
    p = anonymous(request)
    form = sent.fields
    key = str(form.get("api_key", "")).strip()
    token_sent = str(form.get(CSRF_FIELD, ""))
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    target = safe_next(str(form.get("next", "/")))
    if not expected or not hmac.compare_digest(token_sent, expected):
        error = p.gettext("This form has expired: sign in again.")
    elif not key:
        error = p.gettext("Enter your API key.")
    else:
        db = request.app.state.db
        with reader(db).connect() as conn:
            who = authenticate(conn, key, request.app.state.settings.admin_token)
        if who is not None:
            with db.begin() as conn:
                token, _ = open_session(conn, who, key, datetime.now(UTC))
            response = redirect(target if target != "/" else HOME[who.role])
            response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                                secure=_secure(request), path="/",
                                max_age=int(LIFETIME.total_seconds()))
            response.delete_cookie(SIGNIN_COOKIE, path="/signin")
            return response
        error = p.gettext("That key is unknown or has been revoked.")
    return _form(request, target, error, 401)


@router.post("/signout")
def signout(request: Request, sent: Form) -> Response:
    p = page(request)
    p.form(sent)
    token = request.cookies.get(SESSION_COOKIE, "")
    with request.app.state.db.begin() as conn:
        close_session(conn, token)
    response = redirect("/signin")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/language/{code}")
def language(code: str, request: Request, next: str = "/") -> Response:
    """Remember a language choice (a preference, not a privilege: no session needed)."""
    response = redirect(safe_next(next))
    if code in LANGUAGES:
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, samesite="lax",
                            secure=_secure(request), path="/")
    return response
