"""Every refusal is a JSON body ``{error, message, ...}`` whose message names the field
and the fix; nothing here ever answers 500 for bad input."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from postback.core.lifecycle import RuleViolation
from postback.services.errors import Invalid, NotFound

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid",
          429: "too_many_requests"}


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "is invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err.get("type") == "extra_forbidden":
        msg = "is not a known field; remove it (check the spelling)"
    elif err.get("type") == "missing":
        msg = "is required"
    elif err.get("type") == "json_invalid":
        msg = f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
    return msg


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(tuple(e.get("loc", ()))), "message": _message(e)}
                  for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "is invalid"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return JSONResponse(status_code=422, content={
            "error": "invalid", "message": f"{first['field']}: {first['message']}{more}",
            "errors": errors[:100]})

    @app.exception_handler(Invalid)
    async def invalid(_: Request, exc: Invalid) -> JSONResponse:
        message = exc.message if exc.message.startswith(f"{exc.field}:") else (
            f"{exc.field}: {exc.message}")
        return JSONResponse(status_code=422, content={
            "error": "invalid", "message": message, "field": exc.field, **exc.extra})

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": "not_found", "message": str(exc)})

    @app.exception_handler(RuleViolation)
    async def rule(_: Request, exc: RuleViolation) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={
            "error": exc.rule, "rule": exc.rule, "message": exc.message})

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if message == "There was an error parsing the body":
            message = "the body is not valid JSON (it must be UTF-8 text)"
        return JSONResponse(status_code=exc.status_code, headers=exc.headers, content={
            "error": _CODES.get(exc.status_code, "error"), "message": message})
