"""A stored user's state, worked out from its events: the views the API and the webhooks
show, and the fold applied to a ``UserRecord`` (shared by every write of events and users)."""

from __future__ import annotations

from typing import Any

from consent_relay.domain import rules, users
from consent_relay.schemas import EventIn
from consent_relay.storage.records import EventRecord, UserRecord
from consent_relay.storage.tx import Tx

JSON = dict[str, Any]
GDPR = "gdpr"


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


def sorts_last(user: UserRecord, item: users.FoldItem) -> bool:
    """Whether ``item`` comes after everything folded into ``user`` so far (the usual case:
    it can be applied on top; otherwise the user is folded again from the start)."""
    return item.order > (user.applied_at, user.applied_seq)


def apply_last(user: UserRecord, item: users.FoldItem) -> None:
    """Fold in an item that sorts last."""
    users.apply_item(user.state, item)
    user.applied_at, user.applied_seq = item.order


async def refold(tx: Tx, user: UserRecord) -> None:
    """Recompute the user's state from everything stored (after a reorder or a deletion)."""
    items = await tx.fold_items(user.organization_id, user.id)
    user.state = users.fold(user.identity_organization_user_id, items)
    last = max((item.order for item in items), default=("", 0))
    user.applied_at, user.applied_seq = last


async def apply(tx: Tx, user: UserRecord, item: users.FoldItem) -> None:
    """Fold one new, stored item in: incrementally when it sorts last (the usual case), else
    again from the start (an import with an old ``created_at``)."""
    if sorts_last(user, item):
        apply_last(user, item)
    else:
        await refold(tx, user)


def bump_if_changed(user: UserRecord, before: JSON, regulation: str, now: str) -> JSON:
    """The user's view after a change; its version moves on only if the change shows."""
    after = user_view(user, regulation)
    if rules.effectively_changed(before, after):
        user.version += 1
        user.updated_at = now
        after = user_view(user, regulation)
    return after


def event_document(org_id: str, event_id: str, data: EventIn, user: UserRecord, at: str) -> JSON:
    """The event as stored and returned by the API."""
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
