"""The accountability ledger, read: pages for the API, the whole chain for ``ledger verify``
and ``ledger export``.

The ledger proves who was told what and when: every delivered message left an entry (its
type, user id, webhook, time, the receiver's status code and the SHA-256 of the exact body
sent), chained per organization. It holds no personal data beyond the user's id, so it
outlives erasure and payload retention (see README, "Privacy").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from consent_relay.domain import ledger as chain
from consent_relay.domain.ledger import Break, Entry
from consent_relay.runtime import Context
from consent_relay.services import pagination
from consent_relay.storage import ledger


def entry_out(entry: Entry, *, organization: bool = False) -> dict[str, Any]:
    """An entry as the API and the export show it: every hashed field, so that anyone can
    recompute ``entry_hash`` (domain/ledger.py ``canonical``)."""
    f = entry.fields
    out: dict[str, Any] = {"organization_id": f.organization_id} if organization else {}
    out.update(
        seq=f.seq,
        message_id=f.message_id,
        delivery_id=f.delivery_id,
        type=f.type,
        user_id=f.user_id,
        webhook_id=f.webhook_id,
        delivered_at=f.delivered_at,
        status_code=f.status_code,
        payload_sha256=f.payload_sha256,
        prev_hash=entry.prev_hash,
        entry_hash=entry.entry_hash,
    )
    return out


async def list_entries(
    ctx: Context,
    org: str,
    *,
    user_id: str | None = None,
    webhook_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> pagination.Page[dict[str, Any]]:
    """One page of the organization's entries in sequence order; works the same for a user
    already deleted (the ledger outlives the user)."""
    pagination.check_limit(limit)
    query = ledger.Query(org, user_id, webhook_id, since, until, pagination.decode(cursor))
    async with ctx.store.read() as tx:
        entries = await ledger.page(tx, query, limit + 1)
    items: list[dict[str, Any]] = [entry_out(e) for e in entries]
    return pagination.page(items, [e.fields.seq for e in entries], limit)


async def entries_about(ctx: Context, org: str, user_id: str) -> list[dict[str, Any]]:
    """Every entry about one user (the data-subject export)."""
    query = ledger.Query(org, user_id=user_id)
    return [entry_out(e) async for e in ledger.walk(ctx.store.read, query)]


async def export(ctx: Context, org: str | None, since: str | None) -> AsyncIterator[dict[str, Any]]:
    """Every entry (of ``org``, or of every organization), delivered at or after ``since``."""
    async with ctx.store.read() as tx:
        orgs = [org] if org is not None else await ledger.organizations(tx)
    for org_id in orgs:
        async for entry in ledger.walk(ctx.store.read, ledger.Query(org_id, since=since)):
            yield entry_out(entry, organization=True)


@dataclass(frozen=True)
class Verified:
    organization_id: str
    entries: int
    first_break: Break | None


async def verify(ctx: Context, org: str | None = None) -> list[Verified]:
    """Check every organization's chain (or ``org``'s) from its first entry to its head."""
    async with ctx.store.read() as tx:
        orgs = [org] if org is not None else await ledger.organizations(tx)
    checked: list[Verified] = []
    for org_id in orgs:
        verifier = chain.Verifier(org_id)
        async for entry in ledger.walk(ctx.store.read, ledger.Query(org_id)):
            if verifier.feed(entry) is not None:
                break
        async with ctx.store.read() as tx:
            head = await ledger.head(tx, org_id)
        checked.append(Verified(org_id, verifier.count, verifier.finish(head)))
    return checked
