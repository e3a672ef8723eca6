"""What waits between the worker's steps: the results for its recorder (``Waiting``, a list
and an event) and the jobs for its senders (``Jobs``).

Every attempt's result goes through here, so it is kept to what the recorder needs: ``add``
(a sender, once a delivery), ``take`` (the recorder, once a batch), ``close`` (shutdown, once).
An ``asyncio.Queue`` did the same with a handful of Python calls a result each way (``full``,
``_put``, the unfinished-tasks count and its event, ``_wakeup_next``; then ``empty``, ``_get``
and ``_wakeup_next`` again), for bookkeeping nothing here uses: 1 % of the worker's
instructions a delivery (``bench.delivery_instructions``: 434.7 -> 430.3 thousand).
"""

from __future__ import annotations

import asyncio
import collections
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


class Jobs(Generic[T]):
    """Jobs for a pool of consumers (the worker's senders), first in, first out: ``put``
    never blocks; ``get`` waits while there is none.

    An ``asyncio.Queue`` cost a sender, for each job, ``empty``, ``_get``, ``_wakeup_next``
    and the queue's unfinished-tasks count, and, each time it had to wait, ``_get_loop``:
    on Python 3.11 a ``getpid`` system call (``asyncio.get_running_loop`` checks the
    process id). Here a job goes straight to a waiting consumer's future when one waits
    (the loop is looked up once), and to a ``deque`` otherwise."""

    __slots__ = ("_items", "_loop", "_waiters")

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[T]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """Jobs not yet handed to a consumer."""
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        if self._waiters:
            self._hand_over()

    async def get(self) -> T:
        if self._items:
            return self._items.popleft()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed its job, then cancelled before it could take it: the job goes
                # back to the front, for the next consumer (nothing put is ever lost).
                self._items.appendleft(waiter.result())
                self._hand_over()
            raise

    def _hand_over(self) -> None:
        """While jobs and consumers both wait: the first job to the first consumer (one
        cancelled while it waited is passed over)."""
        waiters = self._waiters
        while waiters and self._items:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._items.popleft())
