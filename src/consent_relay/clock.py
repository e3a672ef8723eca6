"""The clock that queue times (``due_ms``, leases) are read from.

Milliseconds since the epoch, advanced by the monotonic clock: a jump of the machine's wall
clock neither fires retries early nor stalls them. With PostgreSQL the offset is taken from
the database server's clock (``sync``), so every worker on every machine agrees on "now";
with SQLite the database is this machine, and the wall clock is read once, at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from consent_relay.storage import system
from consent_relay.storage.store import Store


class Clock:
    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._offset_ms = wall() * 1000 - monotonic() * 1000

    def __call__(self) -> int:
        return int(self._monotonic() * 1000 + self._offset_ms)

    def set_now(self, now_ms: int) -> None:
        """Re-anchor: ``now_ms`` is the time right now (from the database server)."""
        self._offset_ms = now_ms - self._monotonic() * 1000

    async def sync(self, store: Store) -> None:
        """Take the database server's time as "now" (PostgreSQL only; SQLite keeps ours)."""
        if store.is_sqlite:
            return
        before = self._monotonic()
        async with store.read() as tx:
            server_ms = await system.server_now_ms(tx)
        half_trip_ms = (self._monotonic() - before) * 500
        self.set_now(int(server_ms + half_trip_ms))
