"""Deliveries, their attempts, and dead-letter replay."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field, StringConstraints

from consent_relay.api.deps import Ctx, Cursor, JSONOut, Limit, Org
from consent_relay.api.params import DeliveryId, WebhookId
from consent_relay.domain.timefmt import format_ts
from consent_relay.schemas import NO_NUL, Strict, Timestamp
from consent_relay.services import deliveries
from consent_relay.services.pagination import Page
from consent_relay.services.views import DeliveryDetailOut, DeliveryOut, ReplayedOut

router = APIRouter(tags=["deliveries"])


class ReplayIn(Strict):
    """``{"delivery_ids": [...]}``, or ``{"since": ..., "until": ...}``, or ``{}`` for all."""

    delivery_ids: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]],
            Field(min_length=1, max_length=10_000),
        ]
        | None
    ) = None
    since: Timestamp = None
    until: Timestamp = None
    # Replay superseded dead letters named by id too (a later message about the same user
    # or event was delivered since: the receiver gets an older state over a newer one).
    force: bool = False


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries", response_class=JSONOut, response_model=Page[DeliveryOut]
)
async def list_deliveries(
    webhook_id: WebhookId,
    ctx: Ctx,
    org: Org,
    status: Annotated[Literal["pending", "delivered", "dead", "superseded"] | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> JSONOut:
    page = await deliveries.list_deliveries(
        ctx, org, webhook_id, status=status, cursor=cursor, limit=limit
    )
    return JSONOut(page)


@router.get(
    "/v1/deliveries/{delivery_id}", response_class=JSONOut, response_model=DeliveryDetailOut
)
async def get_delivery(delivery_id: DeliveryId, ctx: Ctx, org: Org) -> JSONOut:
    """A delivery with its message and every attempt (request headers, response, timing)."""
    return JSONOut(await deliveries.get_delivery(ctx, org, delivery_id))


@router.post(
    "/v1/webhooks/{webhook_id}/dead-letters/replay",
    status_code=202,
    response_class=JSONOut,
    response_model=ReplayedOut,
)
async def replay(webhook_id: WebhookId, body: ReplayIn, ctx: Ctx, org: Org) -> JSONOut:
    """Replay dead letters: by ids, by time range (``since`` <= created_at < ``until``), or
    all not yet replayed. Each goes out again with the same ``webhook-id``. Superseded dead
    letters never go out in a bulk replay; by id they get a 409 unless ``force``."""
    since = format_ts(body.since) if body.since is not None else None
    until = format_ts(body.until) if body.until is not None else None
    count = await deliveries.replay(
        ctx,
        org,
        webhook_id,
        delivery_ids=body.delivery_ids,
        since=since,
        until=until,
        force=body.force,
    )
    return JSONOut({"replayed": count}, status_code=202)
