"""/v1/admin: organizations (admin token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from consent_relay.api import deps
from consent_relay.api.deps import Ctx, JSONOut
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(deps.admin)])


@router.post("/organizations", status_code=201, response_class=JSONOut)
async def create_organization(body: OrganizationIn, ctx: Ctx) -> JSONOut:
    """Create an organization and its first API key (shown this once)."""
    return JSONOut(await orgs.create_organization(ctx, body), status_code=201)


@router.get("/organizations", response_class=JSONOut)
async def list_organizations(ctx: Ctx) -> JSONOut:
    return JSONOut({"data": await orgs.list_organizations(ctx), "next_cursor": None})
