"""Consent events and users: record the change, derive the user, fire the webhooks.

Every function here is one write transaction: the event or user row, the user's derived
state, the webhook messages and their deliveries commit together or not at all.
"""

from __future__ import annotations

from typing import Any, cast

from consent_relay import errors, ids
from consent_relay.domain import rules, users
from consent_relay.domain.rules import Change, ChangeKind
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, EventPatch, UserIn, UserPatch
from consent_relay.services import ingest, outbox, pagination, privacy, views
from consent_relay.services.folding import (
    GDPR,
    apply,
    bump_if_changed,
    event_view,
    refold,
    user_view,
)
from consent_relay.storage.records import EventRecord, UserRecord
from consent_relay.storage.tx import Tx

JSON = dict[str, Any]


class _Retry(Exception):
    """A concurrent writer created the same user first: run the transaction again."""


async def _publish(
    ctx: Context, tx: Tx, org_id: str, user_id: str, regulation: str, change: Change, quiet: bool
) -> int:
    if quiet:
        return 0
    return await outbox.publish(
        tx,
        organization_id=org_id,
        user_id=user_id,
        regulation=regulation,
        fired=rules.messages_for(change),
        now_ms=ctx.clock_ms(),
    )


async def _write(ctx: Context, work: Any) -> Any:
    """Run ``work(tx)`` in a write transaction, again if a concurrent user creation won."""
    for _ in range(5):
        try:
            async with ctx.store.write() as tx:
                result, queued = await work(tx)
        except _Retry:
            continue
        if queued:
            ctx.notify_enqueued()
        return result
    raise errors.Conflict("the user is being changed concurrently; retry")


# -- events ----------------------------------------------------------------------------------


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
        queued = await _publish(ctx, tx, org_id, user.id, event.regulation, change, quiet)
        return document, queued

    result: JSON = await _write(ctx, work)
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
        return None, await _publish(ctx, tx, org_id, user.id, event.regulation, change, quiet)

    await _write(ctx, work)


# -- users -----------------------------------------------------------------------------------


async def _ouid_free(tx: Tx, org_id: str, ouid: str | None, user_id: str | None) -> None:
    if ouid is None:
        return
    holder = await tx.get_user_by_ouid(org_id, ouid)
    if holder is not None and holder.id != user_id:
        raise errors.Conflict(
            f"organization_user_id {ouid!r} belongs to user {holder.id!r}",
            [errors.FieldError("organization_user_id", "already used by another user")],
        )


def _profile_patch(given: JSON) -> JSON:
    return {k: v for k, v in given.items() if k != "id" and v not in (None, {})}


async def create_user(
    ctx: Context, org_id: str, data: UserIn, *, quiet: bool = False
) -> views.UserOut:
    now = now_ts()
    user_id = data.id or ids.new_uuid()

    async def work(tx: Tx) -> tuple[JSON, int]:
        if await tx.get_user(org_id, user_id) is not None:
            raise errors.Conflict(
                f"a user with id {user_id!r} exists",
                [errors.FieldError("id", "already exists in this organization")],
            )
        await _ouid_free(tx, org_id, data.organization_user_id, None)
        ouid = data.organization_user_id
        user = UserRecord(
            organization_id=org_id,
            id=user_id,
            identity_organization_user_id=ouid,
            state=users.UserState(organization_user_id=ouid),
            version=1,
            created_at=now,
            updated_at=now,
        )
        patch = _profile_patch(data.model_dump(mode="json"))
        if patch:
            item = users.FoldItem(at=now, seq=user.next_seq(), user=patch, is_patch=True)
            await apply(tx, user, item)
        if not await tx.insert_user(user):
            raise _Retry()
        if patch:
            await tx.insert_profile_change(org_id, user.id, now, user.seq_counter, patch)
        view = user_view(user)
        change = Change(ChangeKind.USER_CREATED, user_after=view)
        return view, await _publish(ctx, tx, org_id, user.id, GDPR, change, quiet)

    result: JSON = await _write(ctx, work)
    return cast(views.UserOut, result)


async def get_user(
    ctx: Context, org_id: str, user_id: str, regulation: str = GDPR
) -> views.UserOut:
    async with ctx.store.read() as tx:
        user = await tx.get_user(org_id, user_id)
    if user is None:
        raise errors.NotFound(f"no user {user_id!r}")
    return cast(views.UserOut, user_view(user, regulation))


async def list_users(
    ctx: Context,
    org_id: str,
    *,
    organization_user_id: str | None = None,
    regulation: str = GDPR,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> pagination.Page[views.UserOut]:
    after = pagination.decode(cursor)
    pagination.check_limit(limit)
    async with ctx.store.read() as tx:
        rows = await tx.list_users(
            org_id, organization_user_id=organization_user_id, after_pk=after, limit=limit + 1
        )
    return pagination.page(
        [cast(views.UserOut, user_view(r, regulation)) for r in rows],
        [r.pk or 0 for r in rows],
        limit,
    )


async def update_user(
    ctx: Context, org_id: str, user_id: str, data: UserPatch, *, quiet: bool = False
) -> JSON:
    patch = _profile_patch(data.model_dump(mode="json", exclude_unset=True))

    async def work(tx: Tx) -> tuple[JSON, int]:
        user = await tx.get_user(org_id, user_id, lock=True)
        if user is None:
            raise errors.NotFound(f"no user {user_id!r}")
        await _ouid_free(tx, org_id, patch.get("organization_user_id"), user_id)
        before = user_view(user)
        if not patch:
            return before, 0
        now = now_ts()
        item = users.FoldItem(at=now, seq=user.next_seq(), user=patch, is_patch=True)
        await tx.insert_profile_change(org_id, user.id, now, item.seq, patch)
        await apply(tx, user, item)
        after = bump_if_changed(user, before, GDPR, now)
        await tx.update_user(user)
        change = Change(ChangeKind.USER_UPDATED, user_before=before, user_after=after)
        return after, await _publish(ctx, tx, org_id, user.id, GDPR, change, quiet)

    result: JSON = await _write(ctx, work)
    return result


async def delete_user(ctx: Context, org_id: str, user_id: str, *, quiet: bool = False) -> None:
    async def work(tx: Tx) -> tuple[None, int]:
        user = await tx.get_user(org_id, user_id, lock=True)
        if user is None:
            raise errors.NotFound(f"no user {user_id!r}")
        view = user_view(user)
        await tx.delete_user(org_id, user_id)
        change = Change(ChangeKind.USER_DELETED, user_before=view)
        queued = await _publish(ctx, tx, org_id, user.id, GDPR, change, quiet)
        await privacy.erase(ctx, tx, org_id, user.id)  # payloads and attempts' texts too
        return None, queued

    await _write(ctx, work)
    await privacy.after_erasure(ctx)
