"""/v1/webhooks: the organization's webhook configuration."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from consent_relay.api.deps import Ctx, Cursor, JSONOut, Limit, Org
from consent_relay.schemas import WebhookIn, WebhookPatch
from consent_relay.services import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.post("", status_code=201, response_class=JSONOut)
async def create_webhook(body: WebhookIn, ctx: Ctx, org: Org) -> JSONOut:
    """Create a webhook. The answer holds its ``signing_secret``, shown this once."""
    return JSONOut(await webhooks.create_webhook(ctx, org, body), status_code=201)


@router.get("", response_class=JSONOut)
async def list_webhooks(ctx: Ctx, org: Org, cursor: Cursor = None, limit: Limit = 100) -> JSONOut:
    return JSONOut(await webhooks.list_webhooks(ctx, org, cursor=cursor, limit=limit))


@router.get("/{webhook_id}", response_class=JSONOut)
async def get_webhook(webhook_id: str, ctx: Ctx, org: Org) -> JSONOut:
    return JSONOut(await webhooks.get_webhook(ctx, org, webhook_id))


@router.patch("/{webhook_id}", response_class=JSONOut)
async def update_webhook(webhook_id: str, body: WebhookPatch, ctx: Ctx, org: Org) -> JSONOut:
    return JSONOut(await webhooks.update_webhook(ctx, org, webhook_id, body))


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: str, ctx: Ctx, org: Org) -> Response:
    """Delete the webhook with its queued deliveries and dead letters."""
    await webhooks.delete_webhook(ctx, org, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_class=JSONOut)
async def rotate_secret(webhook_id: str, ctx: Ctx, org: Org) -> JSONOut:
    """A new signing secret (shown once); the old one keeps signing for 24 hours."""
    return JSONOut(await webhooks.rotate_secret(ctx, org, webhook_id))
