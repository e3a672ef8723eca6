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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from consent_relay import errors

log = logging.getLogger("consent_relay.api")
PROBLEM_BASE = "https://consent-relay.dev/problems/"


def problem(
    status: int,
    title: str,
    detail: str,
    field_errors: Sequence[errors.FieldError] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field_errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in field_errors]
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
            text += ("." if text else "") + str(part)
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
