"""The web app, served by ``postback serve`` at ``/``: server-rendered pages (Jinja2) over
the same services as the API, for partners, brands and the operator. No build step and
nothing from elsewhere: templates, one stylesheet and one small script ship in the package.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from postback.web import auth, brand, deliveries, ledger, notifications, operator
from postback.web.pages import Forbidden, SignInRequired, anonymous, page, sign_in_redirect

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    for module in (auth, notifications, deliveries, ledger, brand, operator):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in(_: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(exc.path)

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:  # reads the session: a thread
        try:
            p = page(request)  # signed in: keep the navigation
        except (SignInRequired, Forbidden):
            p = anonymous(request)
        return p.render("error.html", status=exc.status, message=exc.message, code=exc.status)
