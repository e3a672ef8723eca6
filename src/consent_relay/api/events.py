"""/v1/consents/events: consent events, Didomi-shaped."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from consent_relay.api.deps import Ctx, Cursor, JSONOut, LeanRoute, Limit, Org, Quiet
from consent_relay.api.params import EventId, QueryText
from consent_relay.schemas import EventIn, EventPatch
from consent_relay.services import events
from consent_relay.services.pagination import Page
from consent_relay.services.views import EventOut

router = APIRouter(prefix="/v1/consents/events", tags=["consent events"])


async def create_event(body: EventIn, ctx: Ctx, org: Org, quiet: Quiet = False) -> JSONOut:
    """Record a consent event; the user is created when unknown. Fires event.created and
    user.created / user.updated as docs/webhook-rules.md says."""
    return JSONOut(await events.create_event(ctx, org, body, quiet=quiet), status_code=201)


# The ingest path: a lean route (api/lean.py) spares it FastAPI's per-request dependency solving.
router.add_api_route(
    "",
    create_event,
    methods=["POST"],
    status_code=201,
    response_class=JSONOut,
    response_model=EventOut,
    route_class_override=LeanRoute,
)


@router.get("", response_class=JSONOut, response_model=Page[EventOut])
async def list_events(
    ctx: Ctx,
    org: Org,
    user_id: QueryText = None,
    organization_user_id: QueryText = None,
    status: Annotated[Literal["confirmed", "pending_approval"] | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> JSONOut:
    page = await events.list_events(
        ctx,
        org,
        user_id=user_id,
        organization_user_id=organization_user_id,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return JSONOut(page)


@router.get("/{event_id}", response_class=JSONOut, response_model=EventOut)
async def get_event(event_id: EventId, ctx: Ctx, org: Org) -> JSONOut:
    return JSONOut(await events.get_event(ctx, org, event_id))


@router.patch("/{event_id}", response_class=JSONOut, response_model=EventOut)
async def update_event(
    event_id: EventId, body: EventPatch, ctx: Ctx, org: Org, quiet: Quiet = False
) -> JSONOut:
    """Change ``status`` (pending_approval -> confirmed only), ``consents``, ``metadata`` or
    ``delegate``."""
    return JSONOut(await events.update_event(ctx, org, event_id, body, quiet=quiet))


@router.delete("/{event_id}", status_code=204)
async def delete_event(event_id: EventId, ctx: Ctx, org: Org, quiet: Quiet = False) -> Response:
    """Delete an event; the user is recomputed as if it had never existed."""
    await events.delete_event(ctx, org, event_id, quiet=quiet)
    return Response(status_code=204)
