"""On a SQLite file the worker's claim and record are each a transaction in one hop to
SQLite's thread (``Store.sqlite_transaction``), not ``write()``'s several: the same rows
written, all or nothing, behind the same lock. A batch that pauses or disables its webhook,
and the rate-limited share of a claim, still go through ``write()``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consent_relay import ids
from consent_relay.runtime import Context
from consent_relay.storage import batches, flow, inspect, queue, tamper
from consent_relay.storage.queue import Claimed, Result
from consent_relay.storage.store import Store
from consent_relay.storage.tx import Tx
from tests.rows import webhook_row

NOW = "2026-01-01T00:00:00.000Z"
LEASE_MS = 60_000


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: PostgreSQL has no such path (its claim and record are one round trip
    each on the raw driver already)."""
    return f"sqlite:///{tmp_path / 'test.db'}"


async def _queues(ctx: Context, users: list[str], hook: str = "wh_1", per_user: int = 1) -> int:
    now = ctx.clock_ms()
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "webhooks", [webhook_row(hook)])
        items = [
            ("acme", hook, f"msg_{hook}_{user}_{n}", user)
            for user in users
            for n in range(per_user)
        ]
        messages = [
            {"id": m, "organization_id": "acme", "type": "user.updated", "regulation": "none",
             "user_id": u, "parameters": '{"n": 1}', "created_at": NOW}
            for _o, _h, m, u in items
        ]  # fmt: skip
        await tamper.insert_rows(tx, "messages", messages)
        await queue.append(tx, items, now, NOW)
    return now


def _delivered(item: Claimed, **fields: Any) -> Result:
    values: dict[str, Any] = {
        "claimed": item,
        "status": "delivered",
        "due_ms": None,
        "outcome": "ok",
        "attempt_id": ids.new_id("atm"),
        "started_at": NOW,
        "duration_ms": 5,
        "status_code": 204,
        "response_body": "",
        "request_headers": {},
        "error": None,
        "payload_sha256": "ab" * 32,
    }
    values.update(fields)
    return Result(**values)


async def _claim(ctx: Context, now: int, lease: str = "w1") -> list[Claimed]:
    return await batches.claim(ctx.store, limit=100, now_ms=now, lease=lease, lease_ms=LEASE_MS)


async def _statuses(ctx: Context) -> dict[tuple[str, int], tuple[Any, Any, str]]:
    """(user, seq) -> (due_ms, lease_owner, status) of every delivery."""
    async with ctx.store.read() as tx:
        return {
            (d["user_id"], d["seq"]): (d["due_ms"], d["lease_owner"], d["status"])
            for d in await inspect.deliveries_with_clock(tx)
        }


@contextlib.contextmanager
def _counting_writes(store: Store, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Counts ``store.write()`` calls and the worker's own transactions
    (``store.sqlite_transaction``, or ``store.pg_transaction`` on PostgreSQL)."""
    counts = {"write": 0, "one hop": 0}
    write = store.write
    name = "sqlite_transaction" if store.is_sqlite else "pg_transaction"
    one_hop = getattr(store, name)

    @contextlib.asynccontextmanager
    async def counted_write() -> AsyncIterator[Tx]:
        counts["write"] += 1
        async with write() as tx:
            yield tx

    async def counted_one_hop(work: Any, **options: Any) -> Any:
        counts["one hop"] += 1
        return await one_hop(work, **options)

    monkeypatch.setattr(store, "write", counted_write)
    monkeypatch.setattr(store, name, counted_one_hop)
    yield counts


async def test_a_transaction_commits_its_work(ctx: Context) -> None:
    now = await _queues(ctx, ["ann", "bob", "cy"])
    claimed, more = await ctx.store.sqlite_transaction(
        lambda db: queue.claim_sqlite(db, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
    )
    assert sorted(c.user_id for c in claimed) == ["ann", "bob", "cy"]
    assert all(c.message is not None for c in claimed)
    assert more is False  # no rate-limited webhook has due heads
    assert await _claim(ctx, now, "w2") == []  # leased, committed
    assert {key: owner for key, (_due, owner, _s) in (await _statuses(ctx)).items()} == {
        ("ann", 1): "w1",
        ("bob", 1): "w1",
        ("cy", 1): "w1",
    }


async def test_a_transaction_that_fails_leaves_nothing_behind(ctx: Context) -> None:
    now = await _queues(ctx, ["ann", "bob"])

    def claim_then_fail(db: Any) -> None:
        claimed, _ = queue.claim_sqlite(db, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        assert len(claimed) == 2
        raise ValueError("something after the claim went wrong")

    with pytest.raises(ValueError, match="after the claim"):
        await ctx.store.sqlite_transaction(claim_then_fail)
    # rolled back whole: both heads are due and unleased, and the next claim takes them
    assert {key: owner for key, (_due, owner, _s) in (await _statuses(ctx)).items()} == {
        ("ann", 1): None,
        ("bob", 1): None,
    }
    assert sorted(c.user_id for c in await _claim(ctx, now)) == ["ann", "bob"]
    # and the connection is usable again, outside any transaction
    assert (await ctx.store.sqlite_transaction(lambda db: db.in_transaction)) is True


async def test_transactions_queue_behind_write_transactions(ctx: Context) -> None:
    """The same lock as ``write()``: a transaction in one hop waits for an open ``write()``
    to finish rather than failing with "database is locked"."""
    now = await _queues(ctx, ["ann"])
    opened, release = asyncio.Event(), asyncio.Event()

    async def holding_a_write() -> None:
        async with ctx.store.write() as tx:
            await flow.pause(tx, [("wh_1", now + 1, "test")])
            opened.set()
            await release.wait()

    holder = asyncio.create_task(holding_a_write())
    await opened.wait()
    claiming = asyncio.create_task(_claim(ctx, now + 2))
    await asyncio.sleep(0.05)
    assert not claiming.done()  # waiting for the lock, not failing
    release.set()
    await holder
    assert [c.user_id for c in await claiming] == ["ann"]


async def test_the_worker_claims_and_records_a_plain_batch_in_one_hop_each(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = await _queues(ctx, ["ann", "bob"], per_user=2)
    with _counting_writes(ctx.store, monkeypatch) as counts:
        heads = await _claim(ctx, now)
        recorded = await batches.record(
            ctx.store, [_delivered(c) for c in heads], now_ms=now, now=NOW
        )
    assert counts == {"write": 0, "one hop": 2}
    assert sorted(r.claimed.user_id for r in recorded.kept) == ["ann", "bob"]
    assert await _statuses(ctx) == {  # the heads delivered, the next ones due at once
        ("ann", 1): (None, None, "delivered"),
        ("ann", 2): (now, None, "pending"),
        ("bob", 1): (None, None, "delivered"),
        ("bob", 2): (now, None, "pending"),
    }
    async with ctx.store.read() as tx:  # the ledger entries went with the record
        assert await inspect.count(tx, "ledger_entries") == 2
        assert await inspect.count(tx, "attempts") == 2


async def test_a_batch_that_pauses_its_webhook_is_recorded_through_write(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause (Retry-After) is written with the record that asks for it, in one
    transaction: that batch takes ``write()``, where the pause's statements are."""
    now = await _queues(ctx, ["ann", "bob"])
    heads = await _claim(ctx, now)
    results = [_delivered(heads[0]), _delivered(heads[1], pause_until_ms=now + 60_000)]
    with _counting_writes(ctx.store, monkeypatch) as counts:
        recorded = await batches.record(ctx.store, results, now_ms=now, now=NOW)
    assert counts == {"write": 1, "one hop": 0}
    assert len(recorded.kept) == 2
    async with ctx.store.read() as tx:
        assert await flow.paused_until(tx, ["wh_1"], now) == {"wh_1": now + 60_000}


async def test_a_short_claim_takes_rate_limited_heads_in_a_second_transaction(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _queues(ctx, ["ann", "bob"])
    now = await _queues(ctx, [f"u{n}" for n in range(8)], hook="wh_limited")
    async with ctx.store.write() as tx:
        hook = next(h for h in await tx.list_all_webhooks() if h.id == "wh_limited")
        await tx.update_webhook(dataclasses.replace(hook, rate_limit=12.0))
        await flow.ensure_bucket(tx, "wh_limited", now)
    assert flow.refill(0, 0, now, 12.0) == 3  # a full bucket: three tokens
    with _counting_writes(ctx.store, monkeypatch) as counts:
        claimed = await _claim(ctx, now)
    assert counts == {"write": 1, "one hop": 1}
    by_hook: dict[str, int] = {}
    for c in claimed:
        by_hook[c.webhook_id] = by_hook.get(c.webhook_id, 0) + 1
        assert c.message is not None
    assert by_hook == {"wh_1": 2, "wh_limited": 3}
