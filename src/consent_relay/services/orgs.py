"""Organizations and their API keys (stored hashed; shown once)."""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from consent_relay import crypto, errors, ids
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.storage import notices
from consent_relay.storage.records import ApiKey, Organization
from consent_relay.storage.store import Store

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
    """Revoke a key: this process forgets every key it knows at once, and every other one
    when the commit's notice reaches it (PostgreSQL) or within half a second (SQLite)."""
    async with ctx.store.write() as tx:
        if not await tx.revoke_api_key(key_id, now_ts()):
            raise errors.NotFound(f"no active API key {key_id!r}")
        await notices.notify(tx, notices.API_KEYS)
    cache = _caches.get(ctx.store)
    if cache is not None:
        cache.forget_all()


KEY_CACHE_TTL = 5.0  # seconds; a backstop only: a revocation's notice clears the cache
# SQLite has no notices: a key is remembered this long at most, so a key revoked by another
# process (``consent-relay keys revoke``) stops working within it (the promise is 1 s); one
# lookup every half second instead of one a request (a read transaction cost ~0.3-0.8 ms,
# a third of an event's ingest on SQLite).
SQLITE_KEY_CACHE_TTL = 0.5
KEY_CACHE_SIZE = 10_000


class KeyCache:
    """API keys known to be valid, remembered so that a request does not spend a database
    transaction on authentication, but trusted only while this process hears revocations
    (``notices.API_KEYS`` on PostgreSQL): every notice, every (re)connection and every loss
    of the LISTEN connection forgets them all, and nothing is remembered while not listening.
    So a key revoked anywhere stops working in every process as soon as the notice arrives
    (milliseconds). SQLite has no notices: there the cache trusts what it remembers for
    ``SQLITE_KEY_CACHE_TTL`` only, so a key revoked by another process (``consent-relay keys
    revoke``) stops within half a second, and one revoked by this process at once."""

    def __init__(self, ttl: float = KEY_CACHE_TTL) -> None:
        self.ttl = ttl
        self.listening = False
        self._keys: dict[str, tuple[str, float]] = {}
        self._generation = 0
        # Lookups running now, by key hash: requests that miss together share one (when a
        # key's entry expires under load, every request in flight missed at once).
        self.lookups: dict[str, asyncio.Future[str]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def generation(self) -> int:
        """Read it before a lookup and hand it to ``remember``: a revocation heard during the
        lookup then keeps its (possibly stale) answer out of the cache."""
        return self._generation

    def get(self, key_hash: str) -> str | None:
        known = self._keys.get(key_hash)
        if known is None or known[1] <= time.monotonic():
            return None
        return known[0]

    def remember(self, key_hash: str, org_id: str, generation: int) -> None:
        if not self.listening or generation != self._generation:
            return
        if len(self._keys) >= KEY_CACHE_SIZE:
            self._keys.clear()
        self._keys[key_hash] = (org_id, time.monotonic() + self.ttl)

    def forget_all(self) -> None:
        self._keys.clear()
        self._generation += 1
        self.lookups.clear()  # a request from now on looks the key up afresh

    def connected(self) -> None:
        self.forget_all()  # revocations sent while not listening were missed
        self.listening = True

    def lost(self) -> None:
        self.listening = False
        self.forget_all()


_caches: weakref.WeakKeyDictionary[Store, KeyCache] = weakref.WeakKeyDictionary()


def key_cache(store: Store) -> KeyCache:
    """The key cache of one database (of this process), listening from its first use."""
    cache = _caches.get(store)
    if cache is None and store.is_sqlite:
        cache = _caches[store] = KeyCache(ttl=SQLITE_KEY_CACHE_TTL)
        cache.listening = True  # bounded by the short lifetime instead of by notices
    elif cache is None:
        cache = _caches[store] = KeyCache()
        store.watch(
            notices.API_KEYS,
            on_notice=cache.forget_all,
            on_connected=cache.connected,
            on_lost=cache.lost,
        )
    return cache


async def authenticate(ctx: Context, api_key: str) -> str:
    """The organization an API key belongs to; Unauthorized when unknown or revoked."""
    key_hash = crypto.hash_key(api_key)
    cache = key_cache(ctx.store)
    known = cache.get(key_hash)
    if known is not None:
        return known
    lookup = cache.lookups.get(key_hash)
    if lookup is None:
        lookup = asyncio.ensure_future(_look_up(ctx, cache, key_hash))
        cache.lookups[key_hash] = lookup
        lookup.add_done_callback(lambda done: _finished(cache, key_hash, done))
    # shielded: one waiting request that goes away does not cancel the others' lookup
    return await asyncio.shield(lookup)


def _finished(cache: KeyCache, key_hash: str, done: asyncio.Future[str]) -> None:
    if cache.lookups.get(key_hash) is done:
        del cache.lookups[key_hash]
    if not done.cancelled():
        done.exception()  # retrieved: every waiter may have gone away meanwhile


async def _look_up(ctx: Context, cache: KeyCache, key_hash: str) -> str:
    generation = cache.generation
    async with ctx.store.read() as tx:
        org_id = await tx.organization_for_key(key_hash)
    if org_id is None:
        raise errors.Unauthorized("unknown or revoked API key")
    cache.remember(key_hash, org_id, generation)
    return org_id
