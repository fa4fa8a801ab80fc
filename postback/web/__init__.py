"""The web app, served by ``postback serve`` at ``/``: server-rendered pages (Jinja2) over
the same services as the API, for partners, brands and the operator. No build step and
nothing from elsewhere: templates, one stylesheet and one small script ship in the package.

A browser never gets the API's JSON: an unknown address, an id that cannot be one, or a
form's address opened as a page answer with the app's own error page, in the reader's
language; the API's paths (``/v1/...``, ``/docs``, ``/healthz``...) keep their JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match

from postback.web import auth, brand, deliveries, feeds, ledger, notifications, operator
from postback.web.pages import (
    Forbidden,
    Page,
    SignInRequired,
    anonymous,
    page,
    sign_in_redirect,
)

STATIC = Path(__file__).parent / "static"
#: the API's own paths, which answer JSON whatever goes wrong
API_PATHS = ("/v1/", "/docs", "/openapi.json", "/healthz", "/readyz")

Handler = Callable[[Request, Exception], Awaitable[Response]]


def is_api(path: str) -> bool:
    return path == "/v1" or path.startswith(API_PATHS)


def _reader(request: Request) -> Page:
    try:
        return page(request)  # signed in: keep the navigation
    except (SignInRequired, Forbidden):
        return anonymous(request)


def _nearest_page(app: FastAPI, path: str) -> str:
    """The closest page above ``path`` that a GET opens: where a form's address (opened as
    a page) or a mistyped one leads back to."""
    parts = path.rstrip("/").split("/")
    while len(parts) > 1:
        parts.pop()
        candidate = "/".join(parts) or "/"
        if is_api(candidate + "/"):
            break
        scope = {"type": "http", "path": candidate, "method": "GET", "root_path": "",
                 "app": app}
        if any(route.matches(scope)[0] is Match.FULL for route in app.router.routes):
            return candidate
    return "/"


def error_page(request: Request, status: int) -> Response:
    """The app's page for a web address that is not there (404), or a form's address opened
    as a page (405): in the reader's language, with the way back."""
    p = _reader(request)
    if status == 405:
        message = p.gettext("This address belongs to a button on a page: it does something "
                            "when its form is sent, and there is nothing to show here.")
    elif status == 404:
        message = p.gettext("There is no page at this address. It may have been mistyped, or "
                            "what it showed is gone.")
    else:
        message = p.gettext("The request could not be read. Go back, reload the page and "
                            "send it again.")
    return p.render("error.html", status=status, message=message, code=status,
                    back=_nearest_page(request.app, request.url.path))


def install(app: FastAPI) -> None:
    for module in (auth, notifications, deliveries, ledger, feeds, brand, operator):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in(_: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(exc.path)

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:  # reads the session: a thread
        p = _reader(request)
        return p.render("error.html", status=exc.status, message=exc.message, code=exc.status,
                        back=_nearest_page(request.app, request.url.path))

    # the API's handlers answer its own paths; the web's paths get pages
    api_http: Handler | None = app.exception_handlers.get(HTTPException)  # type: ignore[assignment]
    api_invalid: Handler | None = app.exception_handlers.get(  # type: ignore[assignment]
        RequestValidationError)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if is_api(request.url.path) and api_http is not None:
            return await api_http(request, exc)
        if exc.status_code < 400 or exc.status_code >= 500:
            return Response(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
        return await run_in_threadpool(error_page, request, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if is_api(request.url.path) and api_invalid is not None:
            return await api_invalid(request, exc)
        # a page's path holds an id that cannot be one (the pages read their forms
        # themselves): there is no such page
        return await run_in_threadpool(error_page, request, 404)
