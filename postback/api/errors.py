"""Every refusal is a JSON body ``{error, message, field?, ...}`` whose message names the
field and the fix, in the caller's language (``Accept-Language``: Chinese for ``zh``, else
English; ``core/messages.py`` has the words); nothing here ever answers 500 for bad input."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from postback.core.lifecycle import RuleViolation
from postback.core.messages import MORE, Message, describe, field_problem, refusal
from postback.i18n import negotiate, say
from postback.services.errors import Invalid, NotFound

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid",
          429: "too_many_requests"}


def _language(request: Request) -> str:
    return negotiate(None, request.headers.get("accept-language"))


def _refusal(request: Request, text: str, field: str | None = None) -> dict[str, Any]:
    """``message`` (and ``field`` when the text names one) of a service's refusal."""
    named, problem = refusal(text, field)
    named = named or field
    message = field_problem(named, problem) if named else problem
    return {"message": say(message, _language(request)), **({"field": named} if named else {})}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        language = _language(request)
        described = [describe(e) for e in exc.errors()]
        errors = [{"field": path, "message": say(problem, language)}
                  for path, problem in described]
        first = field_problem(*described[0]) if described else Message("is invalid")
        if len(described) > 1:
            first = Message(MORE, message=first, n=len(described) - 1)
        return JSONResponse(status_code=422, content={
            "error": "invalid", "message": say(first, language),
            **({"field": described[0][0]} if described else {}), "errors": errors[:100]})

    @app.exception_handler(Invalid)
    async def invalid(request: Request, exc: Invalid) -> JSONResponse:
        language = _language(request)
        extra = dict(exc.extra)
        problems = extra.get("problems")
        listed = problems if isinstance(problems, list) and all(
            isinstance(p, dict) and "field" in p and "message" in p for p in problems) else []
        if listed and exc.message == "; ".join(f"{p['field']}: {p['message']}" for p in listed):
            # a template's problems, the message listing them all: each in the caller's words
            said = [(str(p["field"]), refusal(str(p["message"]))[1]) for p in listed]
            extra["problems"] = [{**p, "message": say(problem, language)}
                                 for p, (_, problem) in zip(listed, said, strict=True)]
            message = "; ".join(say(field_problem(*one), language) for one in said)
        else:
            message = _refusal(request, exc.message, exc.field)["message"]
        return JSONResponse(status_code=422, content={
            "error": "invalid", "message": message, **extra, "field": exc.field})

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": "not_found",
                                                      **_refusal(request, str(exc))})

    @app.exception_handler(RuleViolation)
    async def rule(request: Request, exc: RuleViolation) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={
            "error": exc.rule, "rule": exc.rule, **_refusal(request, exc.message)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if message == "There was an error parsing the body":
            message = "the body is not valid JSON (it must be UTF-8 text)"
        return JSONResponse(status_code=exc.status_code, headers=exc.headers, content={
            "error": _CODES.get(exc.status_code, "error"), **_refusal(request, message)})
