"""The web dashboard at /dashboard (server-rendered with Jinja2).

Signed in with an API key (see ``session.py``); every page shows the organization of that key
only, through the same services as the HTTP API. Pages: the webhooks with their health, a
webhook's form, its detail (health, deliveries, dead letters with replay, test event, secret
rotation, sample payloads), a delivery with its attempts, recent consent events and users.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from consent_relay import __version__, crypto, errors
from consent_relay.dashboard import forms, health
from consent_relay.dashboard.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    LOGIN_MAX_AGE,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    CsrfRefused,
    NotSignedIn,
    Session,
    check_csrf,
    clear_cookie,
    current,
    end,
    require,
    sessions_for,
    set_cookie,
)
from consent_relay.domain import payloads, samples
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.domain.timefmt import parse_ts
from consent_relay.runtime import Context
from consent_relay.schemas import REGULATIONS
from consent_relay.services import deliveries, privacy, webhooks

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


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["age"] = _age
_env.filters["pretty"] = _pretty
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


def _error_page(status: int, title: str, detail: str) -> HTMLResponse:
    return render("error.html", session=None, status_code=status, title=title, detail=detail)


def _redirect(path: str, **query: str | int) -> RedirectResponse:
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
                response = _redirect("/login")
            except CsrfRefused:
                response = _error_page(
                    403,
                    "Form refused",
                    "This form did not carry this session's security token (it may come from "
                    "another site or an old page). Reload the page and try again.",
                )
            except errors.ConsentRelayError as exc:
                response = _error_page(exc.status, exc.title, exc.detail)
            except RequestValidationError:
                response = _error_page(400, "Bad request", "The request could not be read.")
            except HTTPException as exc:
                response = _error_page(exc.status_code, "Error", str(exc.detail))
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route


router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=DashboardRoute)


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


async def _form(request: Request) -> FormData:
    try:
        async with request.form(max_files=0, max_fields=1000) as form:
            return form
    except HTTPException as exc:  # a malformed or multipart-with-files body
        raise errors.BadRequest(str(exc.detail)) from exc


async def _posted(request: Request) -> tuple[Session, FormData]:
    """The session and the form of a POST that carries the session's CSRF token."""
    session = await require(request)
    form = await _form(request)
    check_csrf(session.csrf_token, form.get(CSRF_FIELD))
    return session, form


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


def _delivery_id(request: Request) -> str | None:
    value = request.query_params.get("delivery", "")
    return value if _DELIVERY_ID.fullmatch(value) else None


def _count(request: Request) -> int | None:
    value = request.query_params.get("count", "")
    return int(value) if value.isdigit() and len(value) < 10 else None


def _before(request: Request) -> int | None:
    value = request.query_params.get("before", "")
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        raise errors.BadRequest("'before' must be a page position from a link on this page")
    return int(value)


# -- sign in and out -------------------------------------------------------------------------


def _login_page(
    request: Request, *, status_code: int = 200, error: str | None = None, notice: str | None = None
) -> HTMLResponse:
    token, cookie = sessions_for(request).login_token(request.cookies.get(LOGIN_COOKIE))
    response = render(
        "login.html",
        session=None,
        status_code=status_code,
        login_token=token,
        error=error,
        notice=notice,
    )
    set_cookie(response, request, LOGIN_COOKIE, cookie, LOGIN_MAX_AGE)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await current(request) is not None:
        return _redirect("")
    return _login_page(request, notice=_notice(request))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    expected = sessions_for(request).login_token_of(request.cookies.get(LOGIN_COOKIE))
    try:
        if expected is None:
            raise CsrfRefused()
        check_csrf(expected, form.get(CSRF_FIELD))
    except CsrfRefused:
        return _login_page(
            request,
            status_code=403,
            error="The sign-in form expired or did not come from this page. Please sign in again.",
        )
    api_key = form.get("api_key")
    api_key = api_key.strip() if isinstance(api_key, str) else ""
    if not api_key:
        return _login_page(request, status_code=422, error="Enter an API key.")
    key_hash = crypto.hash_key(api_key)
    async with _ctx(request).store.read() as tx:
        org_id = await tx.organization_for_key(key_hash)
    if org_id is None:
        return _login_page(
            request, status_code=401, error="That API key is unknown or has been revoked."
        )
    _session, cookie = sessions_for(request).issue(org_id, key_hash)
    response = _redirect("")
    set_cookie(response, request, SESSION_COOKIE, cookie, SESSION_MAX_AGE)
    clear_cookie(response, request, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, _form = await _posted(request)
    await end(request, session)  # on the server: a copy of the cookie is refused too
    response = _redirect("/login", notice="signed-out")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


# -- webhooks --------------------------------------------------------------------------------


@router.get("")
async def webhook_list(request: Request) -> Response:
    session = await require(request)
    ctx = _ctx(request)
    listed = await webhooks.list_webhooks(ctx, session.organization_id, limit=1000)
    rows = [
        {"hook": hook, "health": await health.webhook_health(ctx, hook["id"])}
        for hook in listed["data"]
    ]
    return render("webhooks.html", session=session, rows=rows, notice=_notice(request))


def _form_page(
    session: Session,
    form: forms.WebhookForm,
    hook: Mapping[str, Any] | None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        "webhook_form.html", session=session, form=form, hook=hook, status_code=status_code
    )


@router.get("/webhooks/new")
async def new_webhook(request: Request) -> Response:
    session = await require(request)
    return _form_page(session, forms.WebhookForm(), None)


@router.post("/webhooks")
async def create_webhook(request: Request) -> Response:
    session, form = await _posted(request)
    parsed = forms.parse(form, editing=False)
    model = forms.to_create(form, parsed)
    if model is not None:
        try:
            created = await webhooks.create_webhook(_ctx(request), session.organization_id, model)
        except errors.Unprocessable as exc:
            forms.add_service_errors(parsed, exc)
        else:
            return await _webhook_page(
                request, session, created["id"], new_secret=created["signing_secret"], created=True
            )
    return _form_page(session, parsed, None, status_code=422)


@router.get("/webhooks/{webhook_id}/edit")
async def edit_webhook(request: Request, webhook_id: str) -> Response:
    session = await require(request)
    hook = await webhooks.get_webhook(_ctx(request), session.organization_id, webhook_id)
    return _form_page(session, forms.WebhookForm.from_webhook(hook), hook)


@router.post("/webhooks/{webhook_id}/edit")
async def update_webhook(request: Request, webhook_id: str) -> Response:
    session, form = await _posted(request)
    ctx = _ctx(request)
    hook = await webhooks.get_webhook(ctx, session.organization_id, webhook_id)
    secret_set = bool((hook.get("authentication") or {}).get("client_secret_set"))
    parsed = forms.parse(form, editing=True, client_secret_set=secret_set)
    patch = forms.to_patch(form, parsed)
    if patch is not None:
        try:
            await webhooks.update_webhook(ctx, session.organization_id, webhook_id, patch)
        except errors.Unprocessable as exc:
            forms.add_service_errors(parsed, exc)
        else:
            return _redirect(f"/webhooks/{webhook_id}", notice="saved")
    return _form_page(session, parsed, hook, status_code=422)


async def _webhook_page(
    request: Request,
    session: Session,
    webhook_id: str,
    *,
    new_secret: str | None = None,
    created: bool = False,
) -> HTMLResponse:
    ctx = _ctx(request)
    hook = await webhooks.get_webhook(ctx, session.organization_id, webhook_id)
    return render(
        "webhook.html",
        session=session,
        hook=hook,
        health=await health.webhook_health(ctx, webhook_id),
        recent=await health.recent_deliveries(ctx, webhook_id),
        dead=await health.dead_letters(ctx, webhook_id),
        new_secret=new_secret,
        created=created,
        notice=_notice(request),
        sent_delivery=_delivery_id(request),
        replayed=_count(request),
    )


@router.get("/webhooks/{webhook_id}")
async def webhook_detail(request: Request, webhook_id: str) -> Response:
    session = await require(request)
    return await _webhook_page(request, session, webhook_id)


@router.post("/webhooks/{webhook_id}/test")
async def send_test(request: Request, webhook_id: str) -> Response:
    session, form = await _posted(request)
    kind = form.get("type")
    if kind not in EVENT_TYPES:
        raise errors.BadRequest(f"unknown event type {kind!r}")
    sent = await webhooks.send_test(_ctx(request), session.organization_id, webhook_id, str(kind))
    return _redirect(f"/webhooks/{webhook_id}", notice="test-sent", delivery=sent["delivery_id"])


@router.post("/webhooks/{webhook_id}/rotate-secret")
async def rotate_secret(request: Request, webhook_id: str) -> Response:
    session, _form_data = await _posted(request)
    rotated = await webhooks.rotate_secret(_ctx(request), session.organization_id, webhook_id)
    return await _webhook_page(request, session, webhook_id, new_secret=rotated["signing_secret"])


@router.post("/webhooks/{webhook_id}/replay")
async def replay(request: Request, webhook_id: str) -> Response:
    """Replay one dead letter (``delivery_id``) or all of them not replayed yet."""
    session, form = await _posted(request)
    ctx = _ctx(request)
    ids = forms.replay_ids(form)
    if ids is not None:
        # A second click, or a page left open: never send the same dead letter twice.
        dead = await deliveries.get_delivery(ctx, session.organization_id, ids[0])
        if dead["webhook_id"] == webhook_id and dead["replayed_by"]:
            return _redirect(f"/webhooks/{webhook_id}", notice="already-replayed")
    count = await deliveries.replay(ctx, session.organization_id, webhook_id, delivery_ids=ids)
    return _redirect(f"/webhooks/{webhook_id}", notice="replayed", count=count)


@router.post("/webhooks/{webhook_id}/delete")
async def delete_webhook(request: Request, webhook_id: str) -> Response:
    session, _form_data = await _posted(request)
    await webhooks.delete_webhook(_ctx(request), session.organization_id, webhook_id)
    return _redirect("", notice="deleted")


# -- deliveries ------------------------------------------------------------------------------


@router.get("/deliveries/{delivery_id}")
async def delivery_detail(request: Request, delivery_id: str) -> Response:
    session = await require(request)
    ctx = _ctx(request)
    delivery = await deliveries.get_delivery(ctx, session.organization_id, delivery_id)
    hook = await webhooks.get_webhook(ctx, session.organization_id, delivery["webhook_id"])
    message = delivery["message"]
    purged, parameters = message["purged"], message["parameters"]
    if purged is not None or parameters is None:  # README, "Privacy": gone, say why
        why = purged or {"reason": "payload gone", "at": None}
        shown, size = f"({why['reason']} at {why['at']})", 0
    else:
        body = payloads.render_body(
            message["type"],
            parameters,
            message["regulation"],
            flatten=hook["flatten"],
            include_regulation=payloads.include_regulation_for(hook["regulations"]),
        )
        shown, size = _pretty(orjson.loads(body)), len(body)
    pending = delivery["status"] == "pending"
    response = render(
        "delivery.html",
        session=session,
        delivery=delivery,
        hook=hook,
        body=shown,
        body_bytes=size,
        refresh_seconds=PENDING_REFRESH_SECONDS if pending else None,
        notice=_notice(request),
    )
    return response


# -- events and users ------------------------------------------------------------------------


@router.get("/events")
async def event_list(request: Request) -> Response:
    session = await require(request)
    user_id = request.query_params.get("user_id") or None
    page = await health.recent_events(
        _ctx(request), session.organization_id, user_id=user_id, before=_before(request)
    )
    return render("events.html", session=session, page=page, user_id=user_id)


@router.get("/users")
async def user_list(request: Request) -> Response:
    session = await require(request)
    page = await health.recent_users(
        _ctx(request), session.organization_id, before=_before(request)
    )
    return render("users.html", session=session, page=page)


@router.get("/users/{user_id}")
async def user_detail(request: Request, user_id: str) -> Response:
    """The user and which receivers were told what about them, and when (the ledger); also
    for a user already deleted (README, "Privacy")."""
    session = await require(request)
    ctx = _ctx(request)
    told = await privacy.told_about(ctx, session.organization_id, user_id)
    hooks = await webhooks.list_webhooks(ctx, session.organization_id, limit=1000)
    by_id = {hook["id"]: hook for hook in hooks["data"]}
    return render(
        "user.html",
        session=session,
        user_id=user_id,
        told=told,
        hooks=by_id,
        notice="User deleted; personal data erased." if request.query_params.get("notice")
        == "erased" else None,
    )  # fmt: skip


@router.post("/users/{user_id}/erase")
async def erase_user(request: Request, user_id: str) -> Response:
    """Delete the user and erase their personal data (as DELETE /v1/consents/users/{id})."""
    session, _form_data = await _posted(request)
    await privacy.erase_user(_ctx(request), session.organization_id, user_id)
    return _redirect(f"/users/{quote(user_id, safe='')}", notice="erased")


# -- sample payloads -------------------------------------------------------------------------


@router.get("/samples/{message_type}")
async def sample(request: Request, message_type: str) -> Response:
    await require(request)
    if message_type not in EVENT_TYPES:
        raise errors.NotFound(f"no event type {message_type!r}")
    flatten = request.query_params.get("flatten", "").lower() in ("1", "true", "yes", "on")
    body = samples.sample_body(message_type, flatten=flatten)
    name = f"{message_type}{'.flattened' if flatten else ''}.json"
    return Response(
        orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n",
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
