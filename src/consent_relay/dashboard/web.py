"""What every dashboard page shares: the templates and their filters, the router whose
routes answer errors as pages with the security headers, and reading a request (the
context, the form, a CSRF-checked post, notices, paging)."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from consent_relay import __version__, errors
from consent_relay.dashboard import forms
from consent_relay.dashboard.session import (
    CSRF_FIELD,
    CsrfRefused,
    NotSignedIn,
    Session,
    check_csrf,
    require,
)
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.domain.timefmt import parse_ts
from consent_relay.runtime import Context
from consent_relay.schemas import REGULATIONS

TEMPLATES = Path(__file__).parent / "templates"
PREFIX = "/dashboard"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NOTICES = {
    "saved": "Webhook saved.",
    "deleted": "Webhook deleted.",
    "test-sent": "Test event queued.",
    "replayed": "Dead letters queued again.",
    "already-replayed": "That dead letter was replayed already.",
    "signed-out": "You are signed out.",
}
PENDING_REFRESH_SECONDS = 1
_DELIVERY_ID = re.compile(r"dlv_[0-9a-z]{1,64}")


# -- templates -------------------------------------------------------------------------------


def _age(value: str | None) -> str:
    """``2026-05-14T09:12:31.402Z`` -> ``3 min`` (how long ago)."""
    if not value:
        return ""
    seconds = max(0, int((datetime.now(UTC) - parse_ts(value)).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["age"] = _age
_env.filters["pretty"] = pretty
_env.globals.update(
    prefix=PREFIX,
    version=__version__,
    csrf_field=CSRF_FIELD,
    event_types=EVENT_TYPES,
    regulations=REGULATIONS,
    auth_methods=forms.AUTH_METHODS,
)


def render(
    name: str, *, session: Session | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    template = _env.get_template(name)
    html = template.render(session=session, **context)
    return HTMLResponse(html, status_code=status_code)


def error_page(status: int, title: str, detail: str) -> HTMLResponse:
    return render("error.html", session=None, status_code=status, title=title, detail=detail)


def redirect(path: str, **query: str | int) -> RedirectResponse:
    url = PREFIX + path + (f"?{urlencode(query)}" if query else "")
    return RedirectResponse(url, status_code=303)


# -- errors and headers, for every dashboard route ---------------------------------------------


class DashboardRoute(APIRoute):
    """Turns refusals into pages (the API's problem+json handlers are for API clients) and
    adds the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handle(request)
            except NotSignedIn:
                response = redirect("/login")
            except CsrfRefused:
                response = error_page(
                    403,
                    "Form refused",
                    "This form did not carry this session's security token (it may come from "
                    "another site or an old page). Reload the page and try again.",
                )
            except errors.ConsentRelayError as exc:
                response = error_page(exc.status, exc.title, exc.detail)
            except RequestValidationError:
                response = error_page(400, "Bad request", "The request could not be read.")
            except HTTPException as exc:
                response = error_page(exc.status_code, "Error", str(exc.detail))
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route


router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=DashboardRoute)


def ctx_of(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


async def form_of(request: Request) -> FormData:
    try:
        async with request.form(max_files=0, max_fields=1000) as form:
            return form
    except HTTPException as exc:  # a malformed or multipart-with-files body
        raise errors.BadRequest(str(exc.detail)) from exc


async def posted_form(request: Request) -> tuple[Session, FormData]:
    """The session and the form of a POST that carries the session's CSRF token."""
    session = await require(request)
    form = await form_of(request)
    check_csrf(session.csrf_token, form.get(CSRF_FIELD))
    return session, form


def notice_of(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


def delivery_id_of(request: Request) -> str | None:
    value = request.query_params.get("delivery", "")
    return value if _DELIVERY_ID.fullmatch(value) else None


def count_of(request: Request) -> int | None:
    value = request.query_params.get("count", "")
    return int(value) if value.isdigit() and len(value) < 10 else None


def before_of(request: Request) -> int | None:
    value = request.query_params.get("before", "")
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise errors.BadRequest("'before' must be a page position from a link on this page")
    return int(value)
