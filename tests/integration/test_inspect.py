"""The named queries tests use instead of SQL (storage.inspect, storage.tamper,
storage.databases), on SQLite and PostgreSQL: each answers what the rows say."""

from __future__ import annotations

from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, WebhookIn
from consent_relay.services import events, webhooks
from consent_relay.storage import databases, inspect, tamper

URL = "http://127.0.0.1:9/hook"


async def _two_users(ctx: Context, org: str) -> tuple[str, list[str]]:
    """A webhook and one event for each of two users: four messages, four deliveries."""
    hook = await webhooks.create_webhook(ctx, org, WebhookIn.model_validate({"url": URL}))
    users = []
    for ouid in ("ann@example.com", "bob@example.com"):
        data = EventIn.model_validate({"user": {"organization_user_id": ouid}})
        users.append((await events.create_event(ctx, org, data))["user"]["id"])
    return str(hook["id"]), users


async def test_rows_and_counts_filter_by_column_values(ctx: Context, org: tuple[str, str]) -> None:
    hook_id, (ann, bob) = await _two_users(ctx, org[0])
    async with ctx.store.read() as tx:
        messages = await inspect.rows(tx, "messages")
        ann_deliveries = await inspect.deliveries_with_clock(tx, user_id=ann, webhook_id=hook_id)
        assert await inspect.count(tx, "messages") == len(messages) == 4
        assert await inspect.count(tx, "deliveries", user_id=bob) == 2
        assert await inspect.count(tx, "deliveries", status="delivered") == 0
        assert await inspect.count(tx, "organizations", id=org[0]) == 1
        assert await inspect.count_undelivered(tx) == 4
        assert await inspect.count_undelivered(tx, webhook_id="wh_other") == 0
        assert await inspect.count_deliveries_of_type(tx, org[0], "event.created") == 2
        assert await inspect.count_deliveries_of_type(tx, "beta", "event.created") == 0
        by_user = await inspect.events_by_user(tx)
    assert [m["pk"] for m in messages] == sorted(m["pk"] for m in messages)  # key order
    assert sorted(m["type"] for m in messages) == ["event.created"] * 2 + ["user.created"] * 2
    assert [d["user_id"] for d in ann_deliveries] == [ann, ann]
    assert [e["user_id"] for e in by_user] == sorted([ann, bob])
    with pytest.raises(ValueError, match="no table"):
        async with ctx.store.read() as tx:
            await inspect.rows(tx, "nothing")


async def test_forced_states_and_attempts_read_back(ctx: Context, org: tuple[str, str]) -> None:
    hook_id, (ann, bob) = await _two_users(ctx, org[0])
    async with ctx.store.write() as tx:
        ann_ids = [d["id"] for d in await inspect.deliveries_with_clock(tx, user_id=ann)]
        assert await tamper.set_delivery_status(tx, "delivered", user_id=bob) == 2
        await tamper.make_dead_letters(tx, ann_ids[:1], attempt_count=6, last_outcome="E_HTTP")
        await tamper.insert_attempts(tx, [_attempt("atm_1", ann_ids[0], "E_HTTP", 500)])
        await tamper.set_delivery_status(
            tx, "superseded", ids=ann_ids[1:], webhook_id=hook_id, clear_due=True
        )
    async with ctx.store.read() as tx:
        dead = (await inspect.deliveries_with_clock(tx, id=ann_ids[0]))[0]
        superseded = (await inspect.deliveries_with_clock(tx, id=ann_ids[1]))[0]
        assert await inspect.delivery_status(tx, ann_ids[0]) == "dead"
        assert await inspect.replayed_by(tx, ann_ids[0]) is None
        assert await inspect.count_undelivered(tx) == 2
        assert sorted(s for s, _reason in await inspect.statuses_and_purges(tx)) == [
            "dead", "delivered", "delivered", "superseded"
        ]  # fmt: skip
        assert [a["id"] for a in await inspect.attempts_of(tx, user_id=ann)] == ["atm_1"]
        assert await inspect.attempts_of(tx, user_id=bob) == []
        assert len(await inspect.attempts_of(tx, delivery_status="dead")) == 1
        assert await inspect.attempts_of(tx, purge_reason="erased") == []
        assert await inspect.count_failed_attempts(tx) == 1
        assert await inspect.count_leased(tx, "nobody:") == 0
        assert len(await inspect.unpurged_messages(tx)) == 4
        assert await inspect.count_erased_messages(tx, ann) == 0
        assert await inspect.message_purge_reason(tx, dead["message_id"]) is None
        assert await inspect.erasure_settled_at(tx, ann) is None
    assert (dead["status"], dead["due_ms"], dead["attempt_count"], dead["last_outcome"]) == (
        "dead", None, 6, "E_HTTP"
    )  # fmt: skip
    assert (superseded["status"], superseded["due_ms"]) == ("superseded", None)
    with pytest.raises(ValueError, match="choose the deliveries"):
        async with ctx.store.write() as tx:
            await tamper.set_delivery_status(tx, "dead")


def _attempt(attempt_id: str, delivery_id: str, outcome: str, code: int) -> dict[str, Any]:
    return {
        "id": attempt_id, "delivery_id": delivery_id, "attempt_number": 1,
        "started_at": "2026-01-01T00:00:00.000Z", "duration_ms": 5, "outcome": outcome,
        "status_code": code, "response_body": "busy", "request_headers": None, "error": None,
    }  # fmt: skip


async def test_the_whole_database_is_dumped_and_cleared(ctx: Context, org: tuple[str, str]) -> None:
    await _two_users(ctx, org[0])
    async with ctx.store.read() as tx:
        names = await inspect.table_names(tx)
        dumped = await inspect.dump(tx)
    assert {"webhooks", "deliveries", "attempts", "alembic_version"} <= set(names)
    assert {table for table, _row in dumped} >= {"organizations", "webhooks", "messages"}
    assert any("ann@example.com" in row for table, row in dumped if table == "users")
    async with ctx.store.write() as tx:
        await databases.clear_tables(tx, keep={"organizations", "api_keys"})
    async with ctx.store.read() as tx:
        assert await inspect.count(tx, "organizations") == 1
        assert await inspect.count(tx, "api_keys") == 1
        for table in ("users", "events", "messages", "deliveries", "webhooks"):
            assert await inspect.count(tx, table) == 0, table


async def test_database_urls_are_taken_apart() -> None:
    url = "postgresql://relay:pw@db.example:6543/consent"
    assert databases.database_name(url) == "consent"
    assert databases.host_and_port(url) == ("db.example", 6543)
    assert databases.host_and_port("postgresql://relay@/consent") == ("127.0.0.1", 5432)
    assert databases.with_database(url, "other") == "postgresql://relay:pw@db.example:6543/other"
    assert databases.with_port(url, 7000) == "postgresql://relay:pw@db.example:7000/consent"
    assert str(databases.sqlite_path("sqlite:////var/lib/relay/relay.db")) == (
        "/var/lib/relay/relay.db"
    )
