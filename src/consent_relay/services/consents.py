"""Consent events and users: record the change, derive the user, fire the webhooks.

Every function here is one write transaction: the event or user row, the user's derived
state, the webhook messages and their deliveries commit together or not at all.
"""

from __future__ import annotations

from typing import Any

from consent_relay import errors, ids
from consent_relay.domain import rules, users
from consent_relay.domain.rules import Change, ChangeKind
from consent_relay.domain.timefmt import format_ts, now_ts
from consent_relay.schemas import EventIn, EventPatch, UserIn, UserPatch
from consent_relay.services import outbox, pagination
from consent_relay.services.context import Context
from consent_relay.storage.records import EventRecord, UserRecord
from consent_relay.storage.tx import Tx

JSON = dict[str, Any]
GDPR = "gdpr"


class _Retry(Exception):
    """A concurrent writer created the same user first: run the transaction again."""


# -- views -----------------------------------------------------------------------------------


def user_view(user: UserRecord, regulation: str = GDPR) -> JSON:
    return users.user_view(
        user_id=user.id,
        organization_id=user.organization_id,
        state=user.state,
        regulation=regulation,
        version=user.version,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


def event_view(event: EventRecord) -> JSON:
    return event.document


# -- the fold, applied to a stored user --------------------------------------------------------


async def _refold(tx: Tx, user: UserRecord) -> None:
    """Recompute the user's state from everything stored (after a reorder or a deletion)."""
    items = await tx.fold_items(user.organization_id, user.id)
    user.state = users.fold(user.identity_organization_user_id, items)
    last = max((item.order for item in items), default=("", 0))
    user.applied_at, user.applied_seq = last


async def _apply(tx: Tx, user: UserRecord, item: users.FoldItem) -> None:
    """Fold one new item in: incrementally when it sorts last (the usual case), else again
    from the start (an import with an old ``created_at``)."""
    if item.order > (user.applied_at, user.applied_seq):
        users.apply_item(user.state, item)
        user.applied_at, user.applied_seq = item.order
    else:
        await _refold(tx, user)


def _bump_if_changed(user: UserRecord, before: JSON, regulation: str, now: str) -> JSON:
    after = user_view(user, regulation)
    if rules.effectively_changed(before, after):
        user.version += 1
        user.updated_at = now
        after = user_view(user, regulation)
    return after


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


async def _resolve_user(tx: Tx, org_id: str, given: JSON, now: str) -> tuple[UserRecord, bool]:
    """The user an event names, or a new one (not stored yet) when unknown. Returns
    (user, is_new)."""
    user_id, ouid = given.get("id"), given.get("organization_user_id")
    by_id = await tx.get_user(org_id, user_id, lock=True) if user_id else None
    by_ouid = await tx.get_user_by_ouid(org_id, ouid, lock=True) if ouid else None
    if by_ouid is not None and user_id and (by_id is None or by_id.id != by_ouid.id):
        raise errors.Conflict(
            f"user.organization_user_id {ouid!r} belongs to user {by_ouid.id!r}, "
            f"not to user.id {user_id!r}",
            [errors.FieldError("user.id", "names another user than user.organization_user_id")],
        )
    existing = by_id or by_ouid
    if existing is not None:
        return existing, False
    user = UserRecord(
        organization_id=org_id,
        id=user_id or ids.new_uuid(),
        identity_organization_user_id=ouid,
        state=users.UserState(organization_user_id=ouid),
        version=1,
        created_at=now,
        updated_at=now,
    )
    return user, True  # stored by _save_user, once its state is known


async def _save_user(tx: Tx, user: UserRecord, is_new: bool) -> None:
    """Insert a new user (a concurrent creation of the same user wins: run again) or
    update an existing one."""
    if not is_new:
        await tx.update_user(user)
    elif not await tx.insert_user(user):
        raise _Retry()


def _event_document(org_id: str, event_id: str, data: EventIn, user: UserRecord, at: str) -> JSON:
    payload = data.model_dump(mode="json", exclude={"id", "created_at"})
    payload["user"]["id"] = user.id
    if payload["user"].get("organization_user_id") is None:
        payload["user"]["organization_user_id"] = user.state.organization_user_id
    if payload["consents"].get("tcfcs") is None:
        payload["consents"].pop("tcfcs", None)
    return {
        "id": event_id,
        "organization_id": org_id,
        "created_at": at,
        "updated_at": at,
        **payload,
    }


async def create_event(ctx: Context, org_id: str, data: EventIn, *, quiet: bool = False) -> JSON:
    now = now_ts()
    created_at = format_ts(data.created_at) if data.created_at else now
    event_id = data.id or ids.new_uuid()
    given_user = data.user.model_dump(mode="json")

    async def work(tx: Tx) -> tuple[JSON, int]:
        user, is_new = await _resolve_user(tx, org_id, given_user, now)
        before = None if is_new else user_view(user, data.regulation)
        document = _event_document(org_id, event_id, data, user, created_at)
        confirmed = data.status == "confirmed"
        seq = user.next_seq()
        event = EventRecord(
            organization_id=org_id,
            id=event_id,
            user_id=user.id,
            status=data.status,
            regulation=data.regulation,
            created_at=created_at,
            updated_at=created_at,
            confirmed_at=created_at if confirmed else None,
            seq=seq if confirmed else None,
            document=document,
        )
        if not await tx.insert_event(event):
            raise errors.Conflict(
                f"an event with id {event_id!r} exists",
                [errors.FieldError("id", "already exists in this organization")],
            )
        if confirmed:
            item = users.FoldItem(
                at=created_at,
                seq=seq,
                user=document["user"],
                regulation=data.regulation,
                consents=document["consents"],
            )
            await _apply(tx, user, item)
        after = user_view(user, data.regulation)
        if before is not None:
            after = _bump_if_changed(user, before, data.regulation, now)
        await _save_user(tx, user, is_new)
        change = Change(
            ChangeKind.EVENT_CREATED, event_after=document, user_before=before, user_after=after
        )
        queued = await _publish(ctx, tx, org_id, user.id, data.regulation, change, quiet)
        return document, queued

    result: JSON = await _write(ctx, work)
    return result


async def get_event(ctx: Context, org_id: str, event_id: str) -> JSON:
    async with ctx.store.read() as tx:
        event = await tx.get_event(org_id, event_id)
    if event is None:
        raise errors.NotFound(f"no consent event {event_id!r}")
    return event_view(event)


async def list_events(
    ctx: Context,
    org_id: str,
    *,
    user_id: str | None = None,
    organization_user_id: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> JSON:
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
    return pagination.page([event_view(r) for r in rows], [r.pk or 0 for r in rows], limit)


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
            await _refold(tx, user)
        after = _bump_if_changed(user, before, event.regulation, now)
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
        await _refold(tx, user)
        after = _bump_if_changed(user, before, event.regulation, now)
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


async def create_user(ctx: Context, org_id: str, data: UserIn, *, quiet: bool = False) -> JSON:
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
            await _apply(tx, user, item)
        if not await tx.insert_user(user):
            raise _Retry()
        if patch:
            await tx.insert_profile_change(org_id, user.id, now, user.seq_counter, patch)
        view = user_view(user)
        change = Change(ChangeKind.USER_CREATED, user_after=view)
        return view, await _publish(ctx, tx, org_id, user.id, GDPR, change, quiet)

    result: JSON = await _write(ctx, work)
    return result


async def get_user(ctx: Context, org_id: str, user_id: str, regulation: str = GDPR) -> JSON:
    async with ctx.store.read() as tx:
        user = await tx.get_user(org_id, user_id)
    if user is None:
        raise errors.NotFound(f"no user {user_id!r}")
    return user_view(user, regulation)


async def list_users(
    ctx: Context,
    org_id: str,
    *,
    organization_user_id: str | None = None,
    regulation: str = GDPR,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> JSON:
    after = pagination.decode(cursor)
    pagination.check_limit(limit)
    async with ctx.store.read() as tx:
        rows = await tx.list_users(
            org_id, organization_user_id=organization_user_id, after_pk=after, limit=limit + 1
        )
    return pagination.page(
        [user_view(r, regulation) for r in rows], [r.pk or 0 for r in rows], limit
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
        await _apply(tx, user, item)
        after = _bump_if_changed(user, before, GDPR, now)
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
        return None, await _publish(ctx, tx, org_id, user.id, GDPR, change, quiet)

    await _write(ctx, work)
