"""Users: create, change, delete through the users API; their consents change through
events only. Each change fires the webhooks in its own transaction."""

from __future__ import annotations

from typing import Any, cast

from consent_relay import errors, ids
from consent_relay.domain import users as fold
from consent_relay.domain.rules import Change, ChangeKind
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import UserIn, UserPatch
from consent_relay.services import pagination, privacy, views, writes
from consent_relay.services.folding import GDPR, apply, bump_if_changed, user_view
from consent_relay.storage.records import UserRecord
from consent_relay.storage.tx import Tx

JSON = dict[str, Any]


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
            state=fold.UserState(organization_user_id=ouid),
            version=1,
            created_at=now,
            updated_at=now,
        )
        patch = _profile_patch(data.model_dump(mode="json"))
        if patch:
            item = fold.FoldItem(at=now, seq=user.next_seq(), user=patch, is_patch=True)
            await apply(tx, user, item)
        if not await tx.insert_user(user):
            raise writes.Retry()
        if patch:
            await tx.insert_profile_change(org_id, user.id, now, user.seq_counter, patch)
        view = user_view(user)
        change = Change(ChangeKind.USER_CREATED, user_after=view)
        return view, await writes.publish(ctx, tx, org_id, user.id, GDPR, change, quiet)

    result: JSON = await writes.write(ctx, work)
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
        item = fold.FoldItem(at=now, seq=user.next_seq(), user=patch, is_patch=True)
        await tx.insert_profile_change(org_id, user.id, now, item.seq, patch)
        await apply(tx, user, item)
        after = bump_if_changed(user, before, GDPR, now)
        await tx.update_user(user)
        change = Change(ChangeKind.USER_UPDATED, user_before=before, user_after=after)
        return after, await writes.publish(ctx, tx, org_id, user.id, GDPR, change, quiet)

    result: JSON = await writes.write(ctx, work)
    return result


async def delete_user(ctx: Context, org_id: str, user_id: str, *, quiet: bool = False) -> None:
    async def work(tx: Tx) -> tuple[None, int]:
        user = await tx.get_user(org_id, user_id, lock=True)
        if user is None:
            raise errors.NotFound(f"no user {user_id!r}")
        view = user_view(user)
        await tx.delete_user(org_id, user_id)
        change = Change(ChangeKind.USER_DELETED, user_before=view)
        queued = await writes.publish(ctx, tx, org_id, user.id, GDPR, change, quiet)
        await privacy.erase(ctx, tx, org_id, user.id)  # payloads and attempts' texts too
        return None, queued

    await writes.write(ctx, work)
    await privacy.after_erasure(ctx)
