"""The write path's batch statements (storage/write_batch.py): each delivery takes its place
at the back of its (webhook, user) queue, the first of an empty queue due at once and the
others waiting, however the batches fall; the same rule as ``queue_append.append``."""

from __future__ import annotations

import asyncio
from typing import Any

from consent_relay.domain.users import UserState
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, OrganizationIn, WebhookIn
from consent_relay.services import events, orgs, webhooks
from consent_relay.storage import inspect, tamper, write_batch
from consent_relay.storage.records import EventRecord, UserRecord


def _event(ouid: str, n: int) -> EventIn:
    return EventIn.model_validate(
        {
            "user": {"organization_user_id": ouid},
            "consents": {"purposes": [{"id": f"p{n}", "enabled": True}]},
        }
    )


async def _queues(ctx: Context) -> dict[tuple[str, str], list[dict[str, Any]]]:
    async with ctx.store.read() as tx:
        found = await inspect.deliveries_with_clock(tx)
    by_queue: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in found:
        by_queue.setdefault((row["webhook_id"], row["user_id"]), []).append(row)
    return {key: sorted(rows, key=lambda r: r["seq"]) for key, rows in by_queue.items()}


async def test_each_queue_numbers_its_deliveries_in_order_across_batches(ctx: Context) -> None:
    await orgs.create_organization(ctx, OrganizationIn(id="acme", name="acme"))
    for n in range(2):
        hook = WebhookIn.model_validate({"url": f"http://127.0.0.1:9/in{n}"})
        await webhooks.create_webhook(ctx, "acme", hook)
    # Concurrent events land in shared batches; then more, for the same users, in others.
    for round_ in range(3):
        await asyncio.gather(
            *(
                events.create_event(ctx, "acme", _event(f"user{u}", round_ * 10 + k))
                for u in range(4)
                for k in range(3)
            )
        )

    queues = await _queues(ctx)
    assert len(queues) == 2 * 4  # two webhooks x four users
    for rows in queues.values():
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        assert rows[0]["due_ms"] is not None  # the head is due
        assert all(r["due_ms"] is None for r in rows[1:])  # the others wait their turn
        assert all(r["status"] == "pending" and r["attempt_count"] == 0 for r in rows)
        assert all(r["id"].startswith("dlv_") for r in rows)
    async with ctx.store.read() as tx:
        heads = await inspect.rows(tx, "delivery_queues")
    for head in heads:
        rows = queues[(head["webhook_id"], head["user_id"])]
        assert head["last_seq"] == len(rows)
        assert head["pending"] == len(rows)


async def test_sqlite_reads_each_named_user_and_event_through_its_unique_index(
    ctx: Context,
) -> None:
    """The batch's read must not walk the organization's users (it did, with
    ``id IN (...) OR organization_user_id IN (...)``: a scan a batch)."""
    if not ctx.store.is_sqlite:
        return
    async with ctx.store.write() as tx:
        plans = await write_batch.sqlite_read_plans(tx)
    touching = [p for p in plans if " users " in f"{p} " or " events " in f"{p} "]
    assert len(touching) == 3, plans  # users by id, users by organization_user_id, events
    for plan in touching:
        assert plan.startswith("SEARCH"), plans
        assert "organization_id=? AND " in plan, plans


async def test_postgresql_reads_each_named_user_and_event_by_name_without_statistics(
    ctx: Context,
) -> None:
    """On tables PostgreSQL has no statistics for (a new database), the batch's read must
    still probe each name: with ``id = ANY(...) OR organization_user_id = ANY(...)`` the plan
    read every user (and every event) of the organization and filtered them."""
    if ctx.store.is_sqlite:
        return
    users = [
        {
            "organization_id": "acme",
            "id": f"u{n}",
            "identity_organization_user_id": f"u{n}@example.com",
            "organization_user_id": f"u{n}@example.com",
            "metadata": "{}",
            "consents": "{}",
            "version": 1,
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
            "seq_counter": 1,
            "applied_at": "2026-01-01T00:00:00.000Z",
            "applied_seq": 1,
        }
        for n in range(3000)
    ]
    events = [
        {
            "organization_id": "acme",
            "id": f"e{n}",
            "user_id": f"u{n % 3000}",
            "status": "confirmed",
            "regulation": "gdpr",
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
            "document": "{}",
        }
        for n in range(6000)
    ]
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "users", users)
        await tamper.insert_rows(tx, "events", events)
        await tamper.forget_statistics(tx, ["users", "events"])
        plan = await write_batch.postgres_read_plan(
            tx,
            "acme",
            [f"u{n}" for n in range(0, 40, 2)],
            [f"u{n}@example.com" for n in range(1, 40, 2)] + ["nobody"],
            [f"e{n}" for n in range(20)] + ["x"],
        )
    removed = [n for n in plan if n.get("Rows Removed by Filter", 0)]
    assert removed == [], [(n["Node Type"], n.get("Filter")) for n in removed]
    scans = [n for n in plan if n.get("Relation Name") in ("users", "events")]
    assert scans, plan
    # 40 users named (by id or organization_user_id), 21 event ids: every index scan reads
    # at most what was named, and all the scans together each name once and each user again
    # by primary key to lock it (40 + 21 + 20 + 21 probes, 40 rows locked).
    index_scans = [(n["Node Type"], n.get("Index Name"), n["Actual Rows"]) for n in plan]
    assert all(rows <= 40 for kind, index, rows in index_scans if index), index_scans
    read = sum(n["Actual Rows"] * n["Actual Loops"] for n in scans)
    assert read <= 20 + 21 + 21 + 40, index_scans


def _user(user_id: str) -> UserRecord:
    at = "2026-12-02T00:00:00.000Z"
    return UserRecord("acme", user_id, None, UserState(), 1, at, at)


def _event_row(event_id: str, user_id: str) -> EventRecord:
    at = "2026-12-02T00:00:00.000Z"
    return EventRecord("acme", event_id, user_id, "confirmed", "gdpr", at, at, at, 1, {})


async def _write(ctx: Context, users: list[UserRecord], events_: list[EventRecord]) -> Any:
    async with ctx.store.write() as tx:
        return await write_batch.write(
            tx,
            new_users=users,
            changed_users=[],
            new_events=events_,
            new_messages=[],
            new_deliveries=[],
            now_ms=0,
            now="2026-12-02T00:00:00.000Z",
        )


async def test_the_write_counts_what_it_inserted_and_leaves_what_exists(ctx: Context) -> None:
    """A user or an event id another writer created first is not written again, and the
    count tells the batch to run again on what is stored (services/ingest.py)."""
    await orgs.create_organization(ctx, OrganizationIn(id="acme", name="acme"))
    first = await _write(ctx, [_user("u1")], [_event_row("e1", "u1")])
    assert (first.users, first.events) == (1, 1)
    again = await _write(ctx, [_user("u1"), _user("u2")], [])
    assert again.users == 1  # u2 only
    events_again = await _write(ctx, [], [_event_row("e1", "u2"), _event_row("e2", "u2")])
    assert events_again.events == 1  # e2 only
    async with ctx.store.read() as tx:
        stored = await inspect.rows(tx, "events")
    assert sorted((row["id"], row["user_id"]) for row in stored) == [("e1", "u1"), ("e2", "u2")]
