"""The named queries and damage of storage.inspect and storage.tamper that the converted
tests lean on (leases, refusals, joins, the schema), on SQLite and PostgreSQL: each does
what its name says, and no more."""

from __future__ import annotations

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import inspect, queue, tamper
from tests.integration.test_inspect import _attempt, _two_users


async def test_leases_expire_by_owner_prefix(ctx: Context, org: tuple[str, str]) -> None:
    await _two_users(ctx, org[0])  # two queues: two due heads
    now = ctx.clock_ms()
    async with ctx.store.write() as tx:
        [first] = await queue.claim(tx, limit=1, now_ms=now, lease="a:1", lease_ms=60_000)
        [second] = await queue.claim(tx, limit=1, now_ms=now, lease="b:2", lease_ms=60_000)
    async with ctx.store.write() as tx:
        assert await tamper.expire_leases(tx, "a:") == 1
    async with ctx.store.read() as tx:
        [a] = await inspect.deliveries_with_clock(tx, pk=first.pk)
        [b] = await inspect.deliveries_with_clock(tx, pk=second.pk)
    assert (a["due_ms"], a["lease_owner"]) == (0, "a:1")
    assert b["due_ms"] == now + 60_000
    async with ctx.store.write() as tx:
        assert await tamper.expire_leases(tx) == 2  # every leased pending delivery
        await tamper.set_delivery_status(tx, "delivered", ids=[second.id])
        assert await tamper.expire_leases(tx) == 1  # not a delivered one


async def test_a_refused_insert_fails_until_allowed(ctx: Context, org: tuple[str, str]) -> None:
    _hook, (ann, _bob) = await _two_users(ctx, org[0])
    async with ctx.store.read() as tx:
        [delivery, *_] = await inspect.deliveries_with_clock(tx, user_id=ann)
    odd = "it's refused"  # a quote: the value is a literal of its own
    async with ctx.store.write() as tx:
        await tamper.refuse_inserts(tx, "attempts", "response_body", odd)
    refused = {**_attempt("atm_1", delivery["id"], "E_HTTP", 500), "response_body": odd}
    with pytest.raises(Exception, match="row refused by test"):
        async with ctx.store.write() as tx:
            await tamper.insert_attempts(tx, [refused])
    async with ctx.store.write() as tx:  # another body passes
        await tamper.insert_attempts(tx, [_attempt("atm_2", delivery["id"], "E_HTTP", 500)])
    async with ctx.store.write() as tx:
        await tamper.allow_inserts(tx, "attempts")
        await tamper.allow_inserts(tx, "attempts")  # none left: nothing to drop
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "attempts", [{**refused, "attempt_number": 2}])
    async with ctx.store.read() as tx:
        assert [a["id"] for a in await inspect.rows(tx, "attempts")] == ["atm_2", "atm_1"]
    with pytest.raises(ValueError, match="no column"):
        async with ctx.store.write() as tx:
            await tamper.refuse_inserts(tx, "attempts", "nothing", "x")
    with pytest.raises(ValueError, match="no table"):
        async with ctx.store.write() as tx:
            await tamper.insert_rows(tx, "nothing", [{"id": "x"}])


async def test_a_disabled_webhook_and_its_joins(ctx: Context, org: tuple[str, str]) -> None:
    hook_id, (ann, _bob) = await _two_users(ctx, org[0])
    async with ctx.store.write() as tx:
        ann_ids = [d["id"] for d in await inspect.deliveries_with_clock(tx, user_id=ann)]
        await tamper.insert_attempts(tx, [_attempt("atm_1", ann_ids[0], "E_HTTP", 500)])
        await tamper.disable_webhook(tx, hook_id, "HTTP 410 at 2026-01-01T00:00:00.000Z")
    async with ctx.store.read() as tx:
        [hook] = await inspect.rows(tx, "webhooks", id=hook_id)
        by_webhook = await inspect.attempts_of(tx, webhook_id=hook_id)
        elsewhere = await inspect.attempts_of(tx, webhook_id="wh_other")
        joined = await inspect.deliveries_with_attempts(tx, hook_id)
        queued = await inspect.queued_messages(tx, org[0])
    assert (hook["enabled"], hook["disabled_reason"]) == (
        False,
        "HTTP 410 at 2026-01-01T00:00:00.000Z",
    )
    assert [a["id"] for a in by_webhook] == ["atm_1"]
    assert elsewhere == []
    # Four deliveries, one attempt: the three others stand with no attempt (a LEFT JOIN).
    assert len(joined) == 4
    [tried] = [j for j in joined if j["attempt_number"] is not None]
    assert (tried["delivery_id"], tried["status"], tried["outcome"]) == (
        ann_ids[0],
        "pending",
        "E_HTTP",
    )
    assert all(j["outcome"] is None for j in joined if j is not tried)
    assert [(q["organization_user_id"], q["seq"], q["type"]) for q in queued] == [
        ("ann@example.com", 1, "event.created"),
        ("ann@example.com", 2, "user.created"),
        ("bob@example.com", 1, "event.created"),
        ("bob@example.com", 2, "user.created"),
    ]
    assert {q["url"] for q in queued} == {"http://127.0.0.1:9/hook"}
    async with ctx.store.read() as tx:
        every = {d["id"] for d in await inspect.deliveries_with_clock(tx, webhook_id=hook_id)}
    assert {j["delivery_id"] for j in joined} == every


async def test_the_schema_is_read_back(ctx: Context) -> None:
    async with ctx.store.read() as tx:
        assert await inspect.schema_differences(tx) == []
        names = await inspect.index_names(tx, "deliveries")
        queue_names = await inspect.index_names(tx, "delivery_queues")
    assert {"ix_deliveries_queue", "ix_deliveries_dead_letters"} <= names
    assert "ix_deliveries_due" not in names  # the clock is the queue's (migration 0009)
    assert "ix_delivery_queues_webhook_due" in queue_names
    assert "ix_delivery_queues_due" not in queue_names  # due a webhook at a time (0012)
    with pytest.raises(ValueError, match="no table"):
        async with ctx.store.read() as tx:
            await inspect.index_names(tx, "nothing")


async def test_an_unreadable_message_is_refused_by_the_parsing_reads(
    ctx: Context, org: tuple[str, str]
) -> None:
    await _two_users(ctx, org[0])
    async with ctx.store.read() as tx:
        [first, second, *_] = await inspect.rows(tx, "messages")
    async with ctx.store.write() as tx:
        await tamper.make_message_unreadable(tx, first["id"])
    if ctx.store.is_sqlite:  # text that is not UTF-8: SQLite cannot hand it back as str
        with pytest.raises(Exception) as refused:  # noqa: PT011 - told apart by its cause
            async with ctx.store.read() as tx:
                await inspect.rows(tx, "messages", id=first["id"])
        assert "Could not decode to UTF-8" in str(refused.value.__cause__ or refused.value)
        return
    async with ctx.store.read() as tx:
        read = await tamper.messages_by_id_parsed(tx, [second["id"]])
    assert read[second["id"]]["type"] == second["type"]
    with pytest.raises(Exception, match="invalid input syntax for type json"):
        async with ctx.store.read() as tx:
            await tamper.messages_by_id_parsed(tx, [first["id"], second["id"]])
    parsing = tamper.parsing_claim_sql(queue.claim_sql)
    assert "CAST(m.parameters AS jsonb)" in parsing("postgresql", True)
    assert parsing("postgresql", False) == queue.claim_sql("postgresql", False)
