"""On PostgreSQL the queue clock takes the database server's time."""

from __future__ import annotations

import time

from consent_relay.clock import Clock
from consent_relay.storage.store import Store


async def test_sync_agrees_with_the_database(store: Store) -> None:
    fake_wall = time.time() + 7200  # this machine's clock is two hours off
    clock = Clock(wall=lambda: fake_wall)
    await clock.sync(store)
    if store.is_sqlite:
        assert abs(clock() - fake_wall * 1000) < 5_000  # SQLite: this machine's clock
    else:
        assert abs(clock() - time.time() * 1000) < 5_000  # PostgreSQL: the server's
