"""``Store.pg_transaction``, the worker's claim and record on PostgreSQL: the raw driver on a
small pool of their own; the claim as its one statement (``begin=False``), the record in a
transaction, all or nothing. (What goes through it, and what still through ``write()``:
test_worker_transactions.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, inspect_driver, queue
from tests.conftest import _session_database_url
from tests.queues import LEASE_MS, clocks, queued

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url() -> str:
    """PostgreSQL only (SQLite's twin: test_sqlite_transaction.py)."""
    return _session_database_url()


async def test_the_claim_is_one_statement_that_commits(ctx: Context) -> None:
    now = await queued(ctx, {"ann": 1, "bob": 1, "cy": 1})
    claimed, more = await ctx.store.pg_transaction(
        lambda raw: queue.claim_pg(raw, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS),
        begin=False,
    )
    assert sorted(c.user_id for c in claimed) == ["ann", "bob", "cy"]
    assert all(c.message is not None for c in claimed)
    assert more is False  # no rate-limited webhook has due heads
    assert (
        await batches.claim(ctx.store, limit=100, now_ms=now, lease="w2", lease_ms=LEASE_MS) == []
    )
    leased = {key: owner for key, (_due, owner, _s) in (await clocks(ctx)).items()}
    assert leased == {("ann", 1): "w1", ("bob", 1): "w1", ("cy", 1): "w1"}


async def test_a_transaction_that_fails_leaves_nothing_behind(ctx: Context) -> None:
    now = await queued(ctx, {"ann": 1, "bob": 1})

    async def claim_then_fail(raw: Any) -> None:
        claimed, _ = await queue.claim_pg(raw, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        assert len(claimed) == 2
        raise ValueError("something after the claim went wrong")

    with pytest.raises(ValueError, match="after the claim"):
        await ctx.store.pg_transaction(claim_then_fail)
    leased = {key: owner for key, (_due, owner, _s) in (await clocks(ctx)).items()}
    assert leased == {("ann", 1): None, ("bob", 1): None}
    again = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w2", lease_ms=LEASE_MS)
    assert sorted(c.user_id for c in again) == ["ann", "bob"]


async def test_a_claim_beside_a_running_claim_still_fills_up(ctx: Context) -> None:
    """Two claims at once on one webhook: the second, while the first still holds its
    queues (leased, not committed), passes over them (``SKIP LOCKED``) and takes the next
    ones, a full claim: the claim reads twice its limit in candidates before it locks."""
    now = await queued(ctx, {f"u{n:02d}": 1 for n in range(30)})

    async def first(raw: Any) -> list[str]:
        taken, _ = await queue.claim_pg(raw, limit=10, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        beside, _ = await ctx.store.pg_transaction(
            lambda other: queue.claim_pg(
                other, limit=10, now_ms=now, lease="w2", lease_ms=LEASE_MS
            ),
            begin=False,
        )
        return [c.user_id for c in taken] + ["|"] + [c.user_id for c in beside]

    both = await ctx.store.pg_transaction(first)  # the first claim's transaction stays open
    taken, beside = both[: both.index("|")], both[both.index("|") + 1 :]
    assert len(taken) == len(beside) == 10
    assert not set(taken) & set(beside)


async def test_a_claim_locks_only_what_it_takes(ctx: Context) -> None:
    """Twice the limit in due queues, two claims at once: the first locks the ten it takes,
    not its twenty candidates, so the second takes the other ten (the candidates are locked
    one at a time, in their order, as the claim needs them: a claim that sorted after
    locking would hold them all)."""
    now = await queued(ctx, {f"u{n:02d}": 1 for n in range(20)})

    async def first(raw: Any) -> tuple[list[str], list[str]]:
        taken, _ = await queue.claim_pg(raw, limit=10, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        beside, _ = await ctx.store.pg_transaction(
            lambda other: queue.claim_pg(
                other, limit=10, now_ms=now, lease="w2", lease_ms=LEASE_MS
            ),
            begin=False,
        )
        return [c.user_id for c in taken], [c.user_id for c in beside]

    taken, beside = await ctx.store.pg_transaction(first)
    assert len(taken) == len(beside) == 10
    assert sorted(taken + beside) == [f"u{n:02d}" for n in range(20)]


async def test_claims_at_once_lease_each_queue_once(ctx: Context) -> None:
    """Eight claims at a time (four at once: the pool's size), round after round, on 600
    due queues: together they lease every queue, none twice, each with its owner written.
    Each claim walks the same candidates, locks them through the versions it read and
    passes over those another holds; the lease is written through the version locked. (A
    claim that commits between another's snapshot and its lock, which the recheck of
    ``due_ms`` guards, is too narrow a window to force from here.)"""
    users = [f"u{n:03d}" for n in range(600)]
    now = await queued(ctx, dict.fromkeys(users, 1))

    async def one(worker: int) -> list[str]:
        claimed, _ = await ctx.store.pg_transaction(
            lambda raw: queue.claim_pg(
                raw, limit=40, now_ms=now, lease=f"w{worker}", lease_ms=LEASE_MS
            ),
            begin=False,
        )
        return [c.user_id for c in claimed]

    taken: list[str] = []
    for _round in range(len(users)):
        claims = await asyncio.gather(*(one(worker) for worker in range(8)))
        if not any(claims):
            break
        taken += [user for claim in claims for user in claim]
    assert sorted(taken) == users
    owners = {key: owner for key, (_due, owner, _s) in (await clocks(ctx)).items()}
    assert len(owners) == len(users)
    assert all(owners.values())


async def test_a_connection_goes_back_to_the_pool_without_a_reset(ctx: Context) -> None:
    """The claim's and record's work leaves no session state: the pool's reset (``RESET
    ALL``, ``CLOSE ALL``, ``UNLISTEN *``, advisory unlocks) would be a round trip more each."""
    sent = await inspect_driver.pg_transaction_statements(ctx.store)
    assert [" ".join(q.split()).upper().rstrip(";") for q in sent] == ["COMMIT"]
