"""/v1/consents/users: users and their derived consent state."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from consent_relay.api.deps import Ctx, Cursor, JSONOut, Limit, Org, Quiet
from consent_relay.api.params import QueryText, UserId
from consent_relay.schemas import Regulation, UserIn, UserPatch
from consent_relay.services import privacy, users
from consent_relay.services.pagination import Page
from consent_relay.services.views import UserOut

router = APIRouter(prefix="/v1/consents/users", tags=["users"])


@router.post("", status_code=201, response_class=JSONOut, response_model=UserOut)
async def create_user(body: UserIn, ctx: Ctx, org: Org, quiet: Quiet = False) -> JSONOut:
    return JSONOut(await users.create_user(ctx, org, body, quiet=quiet), status_code=201)


@router.get("", response_class=JSONOut, response_model=Page[UserOut])
async def list_users(
    ctx: Ctx,
    org: Org,
    organization_user_id: QueryText = None,
    regulation: Regulation = "gdpr",
    cursor: Cursor = None,
    limit: Limit = 100,
) -> JSONOut:
    page = await users.list_users(
        ctx,
        org,
        organization_user_id=organization_user_id,
        regulation=regulation,
        cursor=cursor,
        limit=limit,
    )
    return JSONOut(page)


@router.get("/{user_id}", response_class=JSONOut, response_model=UserOut)
async def get_user(user_id: UserId, ctx: Ctx, org: Org, regulation: Regulation = "gdpr") -> JSONOut:
    """The user with the consents of one regulation (``gdpr`` unless asked)."""
    return JSONOut(await users.get_user(ctx, org, user_id, regulation))


@router.get("/{user_id}/export", response_class=JSONOut)
async def export_user(user_id: UserId, ctx: Ctx, org: Org) -> JSONOut:
    """Everything stored about the user (GDPR Art. 15 and 20): state per regulation, every
    consent event, the ledger entries about them; for a deleted user, the ledger."""
    return JSONOut(await privacy.export_user(ctx, org, user_id))


@router.patch("/{user_id}", response_class=JSONOut, response_model=UserOut)
async def update_user(
    user_id: UserId, body: UserPatch, ctx: Ctx, org: Org, quiet: Quiet = False
) -> JSONOut:
    """Set identity and metadata (consents change through events only)."""
    return JSONOut(await users.update_user(ctx, org, user_id, body, quiet=quiet))


@router.delete("/{user_id}", status_code=204)
async def delete_user(user_id: UserId, ctx: Ctx, org: Org, quiet: Quiet = False) -> Response:
    """Delete the user and, silently, its events."""
    await users.delete_user(ctx, org, user_id, quiet=quiet)
    return Response(status_code=204)
