"""On PostgreSQL the record of a delivered attempt is a HOT update of its delivery: no index
names a column it changes (migration 0014: the dead letters' indexes are partial on
``dead_at``, set for dead letters only, and no index names ``status``), and the table keeps
room on its pages for the new row version. Each such update then writes no index entry: with
``status`` in two indexes, the worker's record wrote 12 WAL records a delivery, 7.6 after
(docs/performance-log.md)."""

from __future__ import annotations

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, inspect_driver
from tests.conftest import _session_database_url
from tests.queues import LEASE_MS, NOW, queued, result_of

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url() -> str:
    """PostgreSQL only: SQLite has no HOT updates (it rewrites the entries of the indexes
    whose columns change, which no index of ``status`` now adds to either)."""
    return _session_database_url()


@pytest.mark.parametrize("status", ["delivered", "pending"])
async def test_the_record_of_an_attempt_is_a_hot_update(ctx: Context, status: str) -> None:
    now = await queued(ctx, {"ann": 1, "bob": 2, "cy": 1, "dee": 1})
    claimed = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
    assert len(claimed) == 4
    results = [result_of(item, status) for item in claimed]
    updates, hot = await inspect_driver.record_updates(ctx.store, results, now_ms=now, now=NOW)
    assert (updates, hot) == (4, 4)


async def test_a_dead_letter_is_not_a_hot_update(ctx: Context) -> None:
    """A delivery that becomes a dead letter gets ``dead_at``, and an entry in the dead
    letters' indexes: that update is not HOT (and is rare)."""
    now = await queued(ctx, {"ann": 1, "bob": 1})
    claimed = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
    results = [result_of(claimed[0], "dead"), result_of(claimed[1], "delivered")]
    updates, hot = await inspect_driver.record_updates(ctx.store, results, now_ms=now, now=NOW)
    assert (updates, hot) == (2, 1)
