"""Organizations and their API keys (stored hashed; shown once)."""

from __future__ import annotations

import time
from typing import Any

from consent_relay import crypto, errors, ids
from consent_relay.domain.timefmt import now_ts
from consent_relay.schemas import OrganizationIn
from consent_relay.services.context import Context
from consent_relay.storage.records import ApiKey, Organization

JSON = dict[str, Any]


def org_view(org: Organization) -> JSON:
    return {"id": org.id, "name": org.name, "created_at": org.created_at}


def key_view(key: ApiKey) -> JSON:
    return {
        "id": key.id,
        "organization_id": key.organization_id,
        "prefix": key.prefix,
        "name": key.name,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


async def create_organization(ctx: Context, data: OrganizationIn) -> JSON:
    """The organization and its first API key: ``{"organization": ..., "api_key": "..."}``."""
    now = now_ts()
    org = Organization(id=data.id, name=data.name or data.id, created_at=now)
    secret = crypto.new_api_key()
    key = ApiKey(ids.new_id("key"), org.id, secret[:12], "default", now)
    async with ctx.store.write() as tx:
        if not await tx.insert_organization(org):
            raise errors.Conflict(
                f"organization {data.id!r} exists",
                [errors.FieldError("id", "already exists")],
            )
        await tx.insert_api_key(key, crypto.hash_key(secret))
    return {"organization": org_view(org), "api_key": secret}


async def list_organizations(ctx: Context) -> list[JSON]:
    async with ctx.store.read() as tx:
        return [org_view(org) for org in await tx.list_organizations()]


async def create_key(ctx: Context, org_id: str, name: str = "") -> JSON:
    secret = crypto.new_api_key()
    key = ApiKey(ids.new_id("key"), org_id, secret[:12], name, now_ts())
    async with ctx.store.write() as tx:
        if await tx.get_organization(org_id) is None:
            raise errors.NotFound(f"no organization {org_id!r}")
        await tx.insert_api_key(key, crypto.hash_key(secret))
    return {**key_view(key), "api_key": secret}


async def list_keys(ctx: Context, org_id: str) -> list[JSON]:
    async with ctx.store.read() as tx:
        return [key_view(key) for key in await tx.list_api_keys(org_id)]


async def revoke_key(ctx: Context, key_id: str) -> None:
    async with ctx.store.write() as tx:
        if not await tx.revoke_api_key(key_id, now_ts()):
            raise errors.NotFound(f"no active API key {key_id!r}")
    _known_keys.clear()  # this process forgets every key at once; others within the TTL


# Known keys, remembered briefly so that a request does not spend a database transaction
# on authentication: a key revoked in this process stops at once, in another within the TTL.
KEY_CACHE_TTL = 5.0
_known_keys: dict[str, tuple[str, float]] = {}


async def authenticate(ctx: Context, api_key: str) -> str:
    """The organization an API key belongs to; Unauthorized when unknown or revoked."""
    key_hash = crypto.hash_key(api_key)
    known = _known_keys.get(key_hash)
    if known is not None and known[1] > time.monotonic():
        return known[0]
    async with ctx.store.read() as tx:
        org_id = await tx.organization_for_key(key_hash)
    if org_id is None:
        _known_keys.pop(key_hash, None)
        raise errors.Unauthorized("unknown or revoked API key")
    if len(_known_keys) > 10_000:
        _known_keys.clear()
    _known_keys[key_hash] = (org_id, time.monotonic() + KEY_CACHE_TTL)
    return org_id
