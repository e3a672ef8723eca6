"""The storage contract: what ``Tx`` promises, checked on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from consent_relay import errors
from consent_relay.domain.users import UserState
from consent_relay.storage import inspect, queue
from consent_relay.storage.records import (
    EventRecord,
    MessageRecord,
    NewDelivery,
    Organization,
    UserRecord,
    WebhookRecord,
)
from consent_relay.storage.store import Store

T0 = "2026-01-01T00:00:00.000Z"


def _user(user_id: str, ouid: str | None = None) -> UserRecord:
    return UserRecord("acme", user_id, ouid, UserState(organization_user_id=ouid), 1, T0, T0)


def _event(event_id: str, user_id: str, at: str | None, seq: int | None) -> EventRecord:
    document = {"id": event_id, "user": {"id": user_id}, "consents": {}}
    status = "confirmed" if at else "pending_approval"
    return EventRecord("acme", event_id, user_id, status, "gdpr", T0, T0, at, seq, document)


def _webhook(webhook_id: str, org: str = "acme") -> WebhookRecord:
    return WebhookRecord(
        org, webhook_id, "http://127.0.0.1:9/", True, [], ["gdpr"], False, {}, None, None,
        "ciphertext", None, None, "", T0, T0,
    )  # fmt: skip


def _message(message_id: str, user_id: str) -> MessageRecord:
    return MessageRecord("acme", message_id, "user.updated", "gdpr", user_id, {"a": 1}, T0)


async def test_organizations_are_unique(store: Store) -> None:
    async with store.write() as tx:
        assert await tx.insert_organization(Organization("acme", "Acme", T0))
        assert not await tx.insert_organization(Organization("acme", "Other", T0))
        assert (await tx.get_organization("acme")) == Organization("acme", "Acme", T0)


async def test_users_are_unique_by_id_and_by_organization_user_id(store: Store) -> None:
    async with store.write() as tx:
        assert await tx.insert_user(_user("u1", "jane@example.com"))
        assert not await tx.insert_user(_user("u1"))
        assert not await tx.insert_user(_user("u2", "jane@example.com"))
        found = await tx.get_user_by_ouid("acme", "jane@example.com", lock=True)
        assert found is not None
        assert found.id == "u1"
        assert await tx.get_user("other-org", "u1") is None


async def _insert_then_crash(store: Store) -> None:
    async with store.write() as tx:
        await tx.insert_user(_user("u1"))
        raise RuntimeError("crash in the middle")


async def test_a_failed_transaction_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        await _insert_then_crash(store)
    async with store.read() as tx:
        assert await tx.get_user("acme", "u1") is None


async def test_a_conflicting_update_is_a_conflict_error(store: Store) -> None:
    async with store.write() as tx:
        await tx.insert_user(_user("u1", "a@example.com"))
        await tx.insert_user(_user("u2", "b@example.com"))
    with pytest.raises(errors.Conflict):
        async with store.write() as tx:
            await tx.update_user(_user("u2", "a@example.com"))


async def test_fold_items_hold_confirmed_events_and_profile_patches(store: Store) -> None:
    async with store.write() as tx:
        await tx.insert_user(_user("u1"))
        assert await tx.insert_event(_event("e1", "u1", "2026-01-02T00:00:00.000Z", 2))
        assert await tx.insert_event(_event("e2", "u1", None, None))  # pending: not folded
        assert not await tx.insert_event(_event("e1", "u1", T0, 9))  # id taken
        await tx.insert_profile_change("acme", "u1", T0, 1, {"metadata": {"a": 1}})
        items = await tx.fold_items("acme", "u1")
    assert sorted((item.at, item.seq, item.is_patch) for item in items) == [
        (T0, 1, True),
        ("2026-01-02T00:00:00.000Z", 2, False),
    ]


async def test_deleting_a_user_takes_its_events(store: Store) -> None:
    async with store.write() as tx:
        await tx.insert_user(_user("u1"))
        await tx.insert_event(_event("e1", "u1", T0, 1))
        await tx.delete_user("acme", "u1")
        assert await tx.get_event("acme", "e1") is None
        assert await tx.fold_items("acme", "u1") == []


async def test_lists_page_by_insertion_order(store: Store) -> None:
    async with store.write() as tx:
        for n in range(5):
            await tx.insert_user(_user(f"u{n}"))
        first = await tx.list_users("acme", organization_user_id=None, after_pk=0, limit=3)
        rest = await tx.list_users(
            "acme", organization_user_id=None, after_pk=first[-1].pk or 0, limit=3
        )
    assert [u.id for u in first + rest] == ["u0", "u1", "u2", "u3", "u4"]


async def test_webhooks_are_scoped_to_their_organization(store: Store) -> None:
    async with store.write() as tx:
        await tx.insert_webhook(_webhook("wh_a"))
        await tx.insert_webhook(_webhook("wh_b", org="beta"))
        assert [w.id for w in await tx.list_webhooks("acme")] == ["wh_a"]
        assert await tx.get_webhook("acme", "wh_b") is None
        assert await tx.get_webhook(None, "wh_b") is not None


async def test_enqueue_sequences_each_queue_and_makes_only_its_head_due(store: Store) -> None:
    async with store.write() as tx:
        messages = [_message(f"msg_{n}", "u1" if n < 3 else "u2") for n in range(4)]
        new = [NewDelivery(m, hook) for m in messages for hook in ("wh_a", "wh_b")]
        await queue.enqueue(tx, messages, new, 1000, T0)
        more = [_message("msg_4", "u1")]
        await queue.enqueue(tx, more, [NewDelivery(more[0], "wh_a")], 2000, T0)
        rows = await inspect.deliveries_with_clock(tx)
    queues: dict[tuple[str, str], list[tuple[int, int | None]]] = {}
    for row in rows:
        queues.setdefault((row["webhook_id"], row["user_id"]), []).append(
            (row["seq"], row["due_ms"])
        )
    assert queues[("wh_a", "u1")] == [(1, 1000), (2, None), (3, None), (4, None)]
    assert queues[("wh_b", "u1")] == [(1, 1000), (2, None), (3, None)]
    assert queues[("wh_a", "u2")] == [(1, 1000)]
    assert queues[("wh_b", "u2")] == [(1, 1000)]
    assert all(isinstance(new_item.id, str) and new_item.id.startswith("dlv_") for new_item in new)
