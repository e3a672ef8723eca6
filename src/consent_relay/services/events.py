"""Consent events: record, change, delete; each change folds the user again and fires the
webhooks, in one transaction (events are created through services/ingest.py's group commit).
"""

from __future__ import annotations

from typing import Any, cast

from consent_relay import errors
from consent_relay.domain.rules import Change, ChangeKind
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, EventPatch
from consent_relay.services import ingest, pagination, views, writes
from consent_relay.services.folding import bump_if_changed, event_view, refold, user_view
from consent_relay.storage.records import EventRecord, UserRecord
from consent_relay.storage.tx import Tx

JSON = dict[str, Any]


async def create_event(
    ctx: Context, org_id: str, data: EventIn, *, quiet: bool = False
) -> views.EventOut:
    """Record a consent event (group commit: see services/ingest.py)."""
    return cast(views.EventOut, await ingest.writer(ctx).create(org_id, data, quiet=quiet))


async def get_event(ctx: Context, org_id: str, event_id: str) -> views.EventOut:
    async with ctx.store.read() as tx:
        event = await tx.get_event(org_id, event_id)
    if event is None:
        raise errors.NotFound(f"no consent event {event_id!r}")
    return cast(views.EventOut, event_view(event))


async def list_events(
    ctx: Context,
    org_id: str,
    *,
    user_id: str | None = None,
    organization_user_id: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> pagination.Page[views.EventOut]:
    after = pagination.decode(cursor)
    pagination.check_limit(limit)
    async with ctx.store.read() as tx:
        if organization_user_id is not None:
            owner = await tx.get_user_by_ouid(org_id, organization_user_id)
            if owner is None or (user_id is not None and owner.id != user_id):
                return {"data": [], "next_cursor": None}
            user_id = owner.id
        rows = await tx.list_events(
            org_id, user_id=user_id, status=status, after_pk=after, limit=limit + 1
        )
    views_ = [cast(views.EventOut, event_view(r)) for r in rows]
    return pagination.page(views_, [r.pk or 0 for r in rows], limit)


async def _locked_event(tx: Tx, org_id: str, event_id: str) -> tuple[EventRecord, UserRecord]:
    event = await tx.get_event(org_id, event_id)
    if event is None:
        raise errors.NotFound(f"no consent event {event_id!r}")
    user = await tx.get_user(org_id, event.user_id, lock=True)
    if user is None:  # pragma: no cover - events go with their user
        raise errors.NotFound(f"no user {event.user_id!r}")
    fresh = await tx.get_event(org_id, event_id)  # re-read under the user's lock
    if fresh is None:
        raise errors.NotFound(f"no consent event {event_id!r}")
    return fresh, user


async def update_event(
    ctx: Context, org_id: str, event_id: str, patch: EventPatch, *, quiet: bool = False
) -> JSON:
    given = patch.model_dump(mode="json", exclude_unset=True)
    for key in ("consents", "delegate"):
        value = getattr(patch, key)
        if key in given and value is not None:
            # Stored whole, defaults included, in the same shape as on creation.
            given[key] = value.model_dump(mode="json")
    if given.get("status") is None:
        given.pop("status", None)
    for key in ("consents", "metadata"):
        if key in given and given[key] is None:
            raise errors.Unprocessable(
                f"{key} cannot be null", [errors.FieldError(key, "cannot be null")]
            )

    async def work(tx: Tx) -> tuple[JSON, int]:
        event, user = await _locked_event(tx, org_id, event_id)
        if event.status == "confirmed" and given.get("status") == "pending_approval":
            raise errors.Unprocessable(
                "a confirmed event cannot go back to pending_approval",
                [errors.FieldError("status", "confirmed events stay confirmed")],
            )
        now = now_ts()
        old_document = event.document
        document = {**old_document, **given}
        if "consents" in given and given["consents"].get("tcfcs") is None:
            document["consents"].pop("tcfcs", None)
        if document == old_document:
            return old_document, 0  # nothing changed: no write, no webhook
        document["updated_at"] = now
        before = user_view(user, event.regulation)
        confirming = event.status == "pending_approval" and document["status"] == "confirmed"
        event.status, event.updated_at, event.document = document["status"], now, document
        if confirming:
            event.confirmed_at, event.seq = now, user.next_seq()
        await tx.update_event(event)
        if event.status == "confirmed":
            await refold(tx, user)
        after = bump_if_changed(user, before, event.regulation, now)
        await tx.update_user(user)
        change = Change(
            ChangeKind.EVENT_UPDATED,
            event_before=old_document,
            event_after=document,
            user_before=before,
            user_after=after,
        )
        queued = await writes.publish(ctx, tx, org_id, user.id, event.regulation, change, quiet)
        return document, queued

    result: JSON = await writes.write(ctx, work)
    return result


async def delete_event(ctx: Context, org_id: str, event_id: str, *, quiet: bool = False) -> None:
    async def work(tx: Tx) -> tuple[None, int]:
        event, user = await _locked_event(tx, org_id, event_id)
        now = now_ts()
        before = user_view(user, event.regulation)
        await tx.delete_event(org_id, event_id)
        await refold(tx, user)
        after = bump_if_changed(user, before, event.regulation, now)
        await tx.update_user(user)
        change = Change(
            ChangeKind.EVENT_DELETED,
            event_before=event.document,
            user_before=before,
            user_after=after,
        )
        return None, await writes.publish(ctx, tx, org_id, user.id, event.regulation, change, quiet)

    await writes.write(ctx, work)
