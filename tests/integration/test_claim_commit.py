"""A claim's commit does not wait for the disk; a record's does.

A claim writes leases only (the queue row's owner and clock). Lost in a crash of the machine
or the database server, a lease is one that ran out: its head is due again and is claimed
again, as after a worker's crash. The write-ahead log is written in order and each durable
commit syncs it up to its own record, so a claim can be lost only with everything committed
after it, its record included. So the worker's claim commits without waiting for the disk
(SQLite ``synchronous=NORMAL`` for that transaction, PostgreSQL's asynchronous commit on a
pool of its own) and every other transaction as before: the records, with their attempts and
ledger entries, only once they are on disk.

Both databases (a SQLite file and PostgreSQL: the worker's own path, ``Store
.sqlite_transaction`` and ``Store.pg_transaction``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, inspect, inspect_driver
from tests.queues import LEASE_MS, NOW, clocks, queued, result_of


@pytest.mark.parametrize(
    "durable",
    [
        [True],
        [False],
        [False, True],
        [True, False, True],
        [False, False, True, True, False],
    ],
)
async def test_a_transaction_waits_for_the_disk_unless_told_not_to(
    ctx: Context, durable: list[bool]
) -> None:
    """Each transaction as asked, whatever came before it: one that need not wait leaves
    nothing behind for the next (SQLite's connection is back at FULL, PostgreSQL's durable
    pool never changed)."""
    seen = [await inspect_driver.commit_waits(ctx.store, durable=d) for d in durable]
    assert seen == durable


async def test_the_claim_does_not_wait_for_the_disk_and_the_record_does(ctx: Context) -> None:
    now = await queued(ctx, {"ann": 2, "bob": 1})
    with inspect_driver.commit_waits_of_transactions(ctx.store) as waits:
        heads = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        assert waits == [False]
        recorded = await batches.record(
            ctx.store, [result_of(c) for c in heads], now_ms=now, now=NOW
        )
    assert waits == [False, True]
    assert sorted(r.claimed.user_id for r in recorded.kept) == ["ann", "bob"]
    async with ctx.store.read() as tx:  # the record's whole work, on disk with it
        assert await inspect.count(tx, "ledger_entries") == 2
        assert await inspect.count(tx, "attempts") == 2


async def test_leases_a_claim_committed_are_seen_by_the_next_claim_at_once(
    ctx: Context,
) -> None:
    """A commit that does not wait for the disk is visible to every other transaction as
    soon as it returns: a second worker's claim passes over the first one's queues."""
    now = await queued(ctx, {"ann": 1, "bob": 1, "cy": 1})
    first = await batches.claim(ctx.store, limit=2, now_ms=now, lease="w1", lease_ms=LEASE_MS)
    second = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w2", lease_ms=LEASE_MS)
    assert len(first) == 2
    assert [c.user_id for c in second] == sorted({"ann", "bob", "cy"} - {c.user_id for c in first})
    leased = {key: owner for key, (_due, owner, _s) in (await clocks(ctx)).items()}
    assert sorted(leased.values()) == ["w1", "w1", "w2"]


async def test_a_failed_transaction_that_need_not_wait_leaves_the_next_one_durable(
    ctx: Context,
) -> None:
    now = await queued(ctx, {"ann": 1})

    def fail_sqlite(_db: Any) -> None:
        raise ValueError("the work failed")

    async def fail_pg(_raw: Any) -> None:
        raise ValueError("the work failed")

    failing = (
        ctx.store.sqlite_transaction(fail_sqlite, durable=False)
        if ctx.store.is_sqlite
        else ctx.store.pg_transaction(fail_pg, begin=False, durable=False)
    )
    with pytest.raises(ValueError, match="the work failed"):
        await failing
    assert await inspect_driver.commit_waits(ctx.store, durable=True) is True
    with inspect_driver.commit_waits_of_transactions(ctx.store) as waits:
        heads = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        await batches.record(ctx.store, [result_of(c) for c in heads], now_ms=now, now=NOW)
    assert waits == [False, True]


@pytest.mark.parametrize(
    ("level", "durable", "expected"),
    [
        (2, False, (1, 2)),  # FULL, the service's: NORMAL for the transaction, FULL after
        (3, False, (1, 3)),  # EXTRA, if ever set: given back as it was
        (2, True, (2, 2)),
        (3, True, (3, 3)),
    ],
)
def test_sqlite_gives_the_connection_its_own_level_back(
    tmp_path: Path, level: int, durable: bool, expected: tuple[int, int]
) -> None:
    path = str(tmp_path / "levels.db")
    assert inspect_driver.synchronous_around_a_transaction(path, level, durable=durable) == expected
