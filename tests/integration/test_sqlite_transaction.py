"""``Store.sqlite_transaction``, the worker's claim and record on a SQLite file: a whole
transaction on the event loop's thread, all or nothing, behind ``write()``'s lock. (What
goes through it, and what still through ``write()``: test_worker_transactions.py; its wait
for another process's write lock: test_sqlite_contention.py.)"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, flow, queue
from tests.queues import LEASE_MS, clocks, queued


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only (PostgreSQL's twin: test_pg_transaction.py)."""
    return f"sqlite:///{tmp_path / 'test.db'}"


async def test_a_transaction_commits_its_work(ctx: Context) -> None:
    now = await queued(ctx, {"ann": 1, "bob": 1, "cy": 1})
    claimed, more = await ctx.store.sqlite_transaction(
        lambda db: queue.claim_sqlite(db, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
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

    def claim_then_fail(db: Any) -> None:
        claimed, _ = queue.claim_sqlite(db, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        assert len(claimed) == 2
        raise ValueError("something after the claim went wrong")

    with pytest.raises(ValueError, match="after the claim"):
        await ctx.store.sqlite_transaction(claim_then_fail)
    # rolled back whole: both heads are due and unleased, and the next claim takes them
    leased = {key: owner for key, (_due, owner, _s) in (await clocks(ctx)).items()}
    assert leased == {("ann", 1): None, ("bob", 1): None}
    again = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w2", lease_ms=LEASE_MS)
    assert sorted(c.user_id for c in again) == ["ann", "bob"]
    # and the connection is usable again, outside any transaction
    assert (await ctx.store.sqlite_transaction(lambda db: db.in_transaction)) is True


async def test_a_transaction_runs_on_the_event_loops_own_thread(ctx: Context) -> None:
    """No hop to another thread, whose every ``sqlite3`` call gave the GIL up and waited to
    win it back from the busy event loop (transactions at three times their CPU:
    docs/performance-log.md)."""
    ran_on = await ctx.store.sqlite_transaction(lambda _db: threading.get_ident())
    assert ran_on == threading.get_ident()


async def test_transactions_queue_behind_write_transactions(ctx: Context) -> None:
    """The same lock as ``write()``: a transaction in one hop waits for an open ``write()``
    to finish rather than failing with "database is locked"."""
    now = await queued(ctx, {"ann": 1})
    opened, release = asyncio.Event(), asyncio.Event()

    async def holding_a_write() -> None:
        async with ctx.store.write() as tx:
            await flow.pause(tx, [("wh_1", now + 1, "test")])
            opened.set()
            await release.wait()

    holder = asyncio.create_task(holding_a_write())
    await opened.wait()
    claiming = asyncio.create_task(
        batches.claim(ctx.store, limit=100, now_ms=now + 2, lease="w1", lease_ms=LEASE_MS)
    )
    await asyncio.sleep(0.05)
    assert not claiming.done()  # waiting for the lock, not failing
    release.set()
    await holder
    assert [c.user_id for c in await claiming] == ["ann"]
