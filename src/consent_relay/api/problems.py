"""Errors as RFC 7807 problem+json, with the fields at fault listed.

``{"type": ".../problems/validation-failed", "title": ..., "status": 422, "detail": ...,
"errors": [{"field": "consents.purposes[0].id", "message": "..."}]}``
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from consent_relay import errors
from consent_relay.input_text import printable

log = logging.getLogger("consent_relay.api")
PROBLEM_BASE = "https://consent-relay.dev/problems/"


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 7807 problem, as every error of this API is answered."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = None


_ERRORS = {
    400: ("The body is not JSON.", "Bad request", "The body is not valid JSON."),
    401: ("Missing or unknown API key.", "Unauthorized", "unknown or revoked API key"),
    404: ("No such resource in your organization.", "Not found", "no consent event 'e1'"),
    409: ("An id that exists, or two ids naming two users.", "Conflict",
          "an event with id 'e1' exists"),
    413: ("The body is over 1 MiB.", "Payload too large",
          "Request bodies are limited to 1024 KiB."),
    422: ("A field is wrong; `errors` names each one.", "Validation failed",
          "consents.purposes.0.id: String should have at least 1 character"),
    503: ("The database is unavailable or busy; retry (see Retry-After).",
          "Service unavailable", "The database is unavailable or busy; retry shortly."),
}  # fmt: skip


def documented_errors() -> dict[int | str, dict[str, Any]]:
    """The error answers every route may give, for the OpenAPI document."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status, (description, title, detail) in _ERRORS.items():
        example: dict[str, Any] = {
            "type": PROBLEM_BASE + title.lower().replace(" ", "-"),
            "title": title,
            "status": status,
            "detail": detail,
        }
        if status == 422:
            example["errors"] = [{"field": "consents.purposes[0].id", "message": "required"}]
        answers[status] = {
            "model": Problem,
            "description": description,
            "content": {"application/problem+json": {"example": example}},
        }
    return answers


def problem(
    status: int,
    title: str,
    detail: str,
    field_errors: Sequence[errors.FieldError] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json answer. Texts that quote the input are made printable first (a lone
    surrogate in a field name or message would make the answer itself fail to encode)."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": printable(detail),
    }
    if field_errors:
        body["errors"] = [
            {"field": printable(e.field), "message": printable(e.message)} for e in field_errors
        ]
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def field_path(loc: Sequence[int | str]) -> str:
    """('body', 'consents', 'purposes', 0, 'id') -> 'consents.purposes[0].id'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith(("function-after", "function-before")):
            continue
        else:
            text += ("." if text else "") + printable(str(part))
    return text or "body"


def _validation_errors(exc: RequestValidationError) -> list[errors.FieldError]:
    found = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        where = "body" if error.get("type") == "json_invalid" else field_path(error.get("loc", ()))
        found.append(errors.FieldError(where, message))
    return found


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ConsentRelayError)
    async def _ours(_request: Request, exc: errors.ConsentRelayError) -> Response:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return problem(exc.status, exc.title, exc.detail, exc.errors, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        found = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return problem(400, "Bad request", "The body is not valid JSON.", found)
        summary = "; ".join(f"{e.field}: {e.message}" for e in found[:5])
        return problem(422, "Validation failed", summary or "Invalid request.", found)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error", exc_info=exc)
        return problem(500, "Internal error", "An unexpected error occurred.")
