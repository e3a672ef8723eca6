"""The results waiting for the worker's recorder: a list and an event.

Every attempt's result goes through here, so it is kept to what the recorder needs: ``add``
(a sender, once a delivery), ``take`` (the recorder, once a batch), ``close`` (shutdown, once).
An ``asyncio.Queue`` did the same with a handful of Python calls a result each way (``full``,
``_put``, the unfinished-tasks count and its event, ``_wakeup_next``; then ``empty``, ``_get``
and ``_wakeup_next`` again), for bookkeeping nothing here uses: 1 % of the worker's
instructions a delivery (``bench.delivery_instructions``: 434.7 -> 430.3 thousand).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Waiting(Generic[T]):
    """Items in the order they were added, taken in batches; ``closed`` once no more come."""

    __slots__ = ("_items", "_ready", "closed")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._ready = asyncio.Event()  # set while items wait, or once closed
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        if self.closed:
            raise RuntimeError("no item can be added once closed")
        self._items.append(item)
        if not self._ready.is_set():
            self._ready.set()

    def close(self) -> None:
        """No more items: ``wait`` returns from now on, and ``take`` hands over the rest."""
        self.closed = True
        self._ready.set()

    async def wait(self) -> None:
        """Until an item waits or this is closed."""
        await self._ready.wait()

    def take(self, most: int) -> list[T]:
        """The first ``most`` items waiting (none left: an empty list)."""
        items = self._items
        if len(items) <= most:
            self._items = []
            batch = items
        else:
            batch, self._items = items[:most], items[most:]
        if not self._items and not self.closed:
            self._ready.clear()
        return batch
