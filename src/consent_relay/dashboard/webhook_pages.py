"""The webhook pages: the list with each one's health, the form, a webhook's detail
(health, deliveries, dead letters with replay, test event, secret rotation) and its actions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from consent_relay import errors
from consent_relay.dashboard import forms, health
from consent_relay.dashboard.session import (
    Session,
    require,
)
from consent_relay.dashboard.web import (
    count_of,
    ctx_of,
    delivery_id_of,
    notice_of,
    posted_form,
    redirect,
    render,
    router,
)
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.services import deliveries, webhooks

# -- webhooks --------------------------------------------------------------------------------


@router.get("")
async def webhook_list(request: Request) -> Response:
    session = await require(request)
    ctx = ctx_of(request)
    listed = await webhooks.list_webhooks(ctx, session.organization_id, limit=1000)
    rows = [
        {"hook": hook, "health": await health.webhook_health(ctx, hook["id"])}
        for hook in listed["data"]
    ]
    return render("webhooks.html", session=session, rows=rows, notice=notice_of(request))


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
    session, form = await posted_form(request)
    parsed = forms.parse(form, editing=False)
    model = forms.to_create(form, parsed)
    if model is not None:
        try:
            created = await webhooks.create_webhook(ctx_of(request), session.organization_id, model)
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
    hook = await webhooks.get_webhook(ctx_of(request), session.organization_id, webhook_id)
    return _form_page(session, forms.WebhookForm.from_webhook(hook), hook)


@router.post("/webhooks/{webhook_id}/edit")
async def update_webhook(request: Request, webhook_id: str) -> Response:
    session, form = await posted_form(request)
    ctx = ctx_of(request)
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
            return redirect(f"/webhooks/{webhook_id}", notice="saved")
    return _form_page(session, parsed, hook, status_code=422)


async def _webhook_page(
    request: Request,
    session: Session,
    webhook_id: str,
    *,
    new_secret: str | None = None,
    created: bool = False,
) -> HTMLResponse:
    ctx = ctx_of(request)
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
        notice=notice_of(request),
        sent_delivery=delivery_id_of(request),
        replayed=count_of(request),
    )


@router.get("/webhooks/{webhook_id}")
async def webhook_detail(request: Request, webhook_id: str) -> Response:
    session = await require(request)
    return await _webhook_page(request, session, webhook_id)


@router.post("/webhooks/{webhook_id}/test")
async def send_test(request: Request, webhook_id: str) -> Response:
    session, form = await posted_form(request)
    kind = form.get("type")
    if kind not in EVENT_TYPES:
        raise errors.BadRequest(f"unknown event type {kind!r}")
    sent = await webhooks.send_test(ctx_of(request), session.organization_id, webhook_id, str(kind))
    return redirect(f"/webhooks/{webhook_id}", notice="test-sent", delivery=sent["delivery_id"])


@router.post("/webhooks/{webhook_id}/rotate-secret")
async def rotate_secret(request: Request, webhook_id: str) -> Response:
    session, _form_data = await posted_form(request)
    rotated = await webhooks.rotate_secret(ctx_of(request), session.organization_id, webhook_id)
    return await _webhook_page(request, session, webhook_id, new_secret=rotated["signing_secret"])


@router.post("/webhooks/{webhook_id}/replay")
async def replay(request: Request, webhook_id: str) -> Response:
    """Replay one dead letter (``delivery_id``) or all of them not replayed yet."""
    session, form = await posted_form(request)
    ctx = ctx_of(request)
    ids = forms.replay_ids(form)
    if ids is not None:
        # A second click, or a page left open: never send the same dead letter twice.
        dead = await deliveries.get_delivery(ctx, session.organization_id, ids[0])
        if dead["webhook_id"] == webhook_id and dead["replayed_by"]:
            return redirect(f"/webhooks/{webhook_id}", notice="already-replayed")
    count = await deliveries.replay(ctx, session.organization_id, webhook_id, delivery_ids=ids)
    return redirect(f"/webhooks/{webhook_id}", notice="replayed", count=count)


@router.post("/webhooks/{webhook_id}/delete")
async def delete_webhook(request: Request, webhook_id: str) -> Response:
    session, _form_data = await posted_form(request)
    await webhooks.delete_webhook(ctx_of(request), session.organization_id, webhook_id)
    return redirect("", notice="deleted")
