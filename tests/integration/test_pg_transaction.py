"""``Store.pg_transaction``, the worker's claim and record on PostgreSQL: the raw driver on a
small pool of their own; the claim as its one statement (``begin=False``), the record in a
transaction, all or nothing. (What goes through it, and what still through ``write()``:
test_worker_transactions.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, queue
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
