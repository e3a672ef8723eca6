"""Browsing the organization's data: a delivery with its attempts, consent events, users
(and what each receiver was told about one, with erasure), sample payloads."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response

from consent_relay import errors
from consent_relay.dashboard import health
from consent_relay.dashboard.session import (
    require,
)
from consent_relay.dashboard.web import (
    PENDING_REFRESH_SECONDS,
    before_of,
    ctx_of,
    notice_of,
    posted_form,
    pretty,
    redirect,
    render,
    router,
)
from consent_relay.domain import payloads, samples
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.services import deliveries, privacy, webhooks

# -- deliveries ------------------------------------------------------------------------------


@router.get("/deliveries/{delivery_id}")
async def delivery_detail(request: Request, delivery_id: str) -> Response:
    session = await require(request)
    ctx = ctx_of(request)
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
        shown, size = pretty(orjson.loads(body)), len(body)
    pending = delivery["status"] == "pending"
    response = render(
        "delivery.html",
        session=session,
        delivery=delivery,
        hook=hook,
        body=shown,
        body_bytes=size,
        refresh_seconds=PENDING_REFRESH_SECONDS if pending else None,
        notice=notice_of(request),
    )
    return response


# -- events and users ------------------------------------------------------------------------


@router.get("/events")
async def event_list(request: Request) -> Response:
    session = await require(request)
    user_id = request.query_params.get("user_id") or None
    page = await health.recent_events(
        ctx_of(request), session.organization_id, user_id=user_id, before=before_of(request)
    )
    return render("events.html", session=session, page=page, user_id=user_id)


@router.get("/users")
async def user_list(request: Request) -> Response:
    session = await require(request)
    page = await health.recent_users(
        ctx_of(request), session.organization_id, before=before_of(request)
    )
    return render("users.html", session=session, page=page)


@router.get("/users/{user_id}")
async def user_detail(request: Request, user_id: str) -> Response:
    """The user and which receivers were told what about them, and when (the ledger); also
    for a user already deleted (README, "Privacy")."""
    session = await require(request)
    ctx = ctx_of(request)
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
    session, _form_data = await posted_form(request)
    await privacy.erase_user(ctx_of(request), session.organization_id, user_id)
    return redirect(f"/users/{quote(user_id, safe='')}", notice="erased")


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
