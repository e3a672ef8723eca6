"""/v1/webhooks: the organization's webhook configuration."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from consent_relay.api.deps import Ctx, Cursor, JSONOut, Limit, Org
from consent_relay.api.params import WebhookId
from consent_relay.domain import samples
from consent_relay.schemas import Strict, WebhookIn, WebhookPatch
from consent_relay.services import webhooks
from consent_relay.services.pagination import Page
from consent_relay.services.views import TestSentOut, WebhookOut, WebhookWithSecretOut

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
EventType = Literal[
    "event.created", "event.updated", "event.deleted", "user.created", "user.updated",
    "user.deleted",
]  # fmt: skip


@router.post(
    "",
    status_code=201,
    response_class=JSONOut,
    response_model=WebhookWithSecretOut,
)
async def create_webhook(body: WebhookIn, ctx: Ctx, org: Org) -> JSONOut:
    """Create a webhook. The answer holds its ``signing_secret``, shown this once."""
    return JSONOut(await webhooks.create_webhook(ctx, org, body), status_code=201)


@router.get(
    "",
    response_class=JSONOut,
    response_model=Page[WebhookOut],
)
async def list_webhooks(ctx: Ctx, org: Org, cursor: Cursor = None, limit: Limit = 100) -> JSONOut:
    return JSONOut(await webhooks.list_webhooks(ctx, org, cursor=cursor, limit=limit))


@router.get("/samples", response_class=JSONOut)
async def sample_payload(
    _org: Org,
    type: Annotated[EventType, Query(description="The event type")] = "user.updated",
    flatten: bool = False,
) -> JSONOut:
    """A sample payload of one event type, flattened or not (as the console offers)."""
    return JSONOut(samples.sample_body(type, flatten=flatten))


@router.get(
    "/{webhook_id}",
    response_class=JSONOut,
    response_model=WebhookOut,
)
async def get_webhook(webhook_id: WebhookId, ctx: Ctx, org: Org) -> JSONOut:
    return JSONOut(await webhooks.get_webhook(ctx, org, webhook_id))


@router.patch("/{webhook_id}", response_class=JSONOut, response_model=WebhookOut)
async def update_webhook(webhook_id: WebhookId, body: WebhookPatch, ctx: Ctx, org: Org) -> JSONOut:
    return JSONOut(await webhooks.update_webhook(ctx, org, webhook_id, body))


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: WebhookId, ctx: Ctx, org: Org) -> Response:
    """Delete the webhook with its queued deliveries and dead letters."""
    await webhooks.delete_webhook(ctx, org, webhook_id)
    return Response(status_code=204)


class TestIn(Strict):
    type: EventType = "user.updated"


@router.post(
    "/{webhook_id}/test", status_code=202, response_class=JSONOut, response_model=TestSentOut
)
async def send_test(
    webhook_id: WebhookId, ctx: Ctx, org: Org, body: TestIn | None = None
) -> JSONOut:
    """Send a sample message of ``type`` (default user.updated) to this webhook only."""
    kind = body.type if body is not None else "user.updated"
    return JSONOut(await webhooks.send_test(ctx, org, webhook_id, kind), status_code=202)


@router.post(
    "/{webhook_id}/rotate-secret", response_class=JSONOut, response_model=WebhookWithSecretOut
)
async def rotate_secret(webhook_id: WebhookId, ctx: Ctx, org: Org) -> JSONOut:
    """A new signing secret (shown once); the old one keeps signing for 24 hours."""
    return JSONOut(await webhooks.rotate_secret(ctx, org, webhook_id))
