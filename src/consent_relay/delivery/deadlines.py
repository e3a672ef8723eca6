"""Request deadlines with one timer for every request in flight, instead of one each.

aiohttp's per-request ``total`` timeout builds a ``ClientTimeout``, a ``TimeoutHandle``, a
timer context and a ``call_at`` handle for every request, and cancels the handle at its end
(11-20 CPU-us a request in ``bench.client_costs``). Here a request
registers its deadline in a heap (a tuple and a small object); one timer, scheduled for the
earliest deadline, cancels the tasks still in flight past theirs and is scheduled again for
the next one. Requests that finished are dropped from the heap when their deadline comes
round, so most requests cost the timer nothing at all.

Precision: a task is cancelled at its deadline, or at most ``GRANULARITY`` later when
another deadline just fell due (the timer does not run more often than that), which keeps
its cost per second bounded however many requests end.

Use::

    guard = deadlines.start(seconds)
    try:
        ...  # the awaits the deadline covers
    except asyncio.CancelledError:
        if not guard.expired_here():
            raise  # cancelled by someone else (e.g. shutdown): not a timeout
        ...  # the deadline passed
    finally:
        guard.finish()

``expired_here`` takes back the cancellation the deadline caused (``Task.uncancel``), as
``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import weakref
from typing import Any

GRANULARITY = 0.005  # seconds: the timer runs at most this often


class Guard:
    """One request's deadline: ``task`` while it runs, None once finished."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.expired = False

    def finish(self) -> None:
        self.task = None

    def expired_here(self) -> bool:
        """True when the deadline cancelled the task, and nothing else did (the deadline's
        cancellation is then taken back)."""
        task = self.task
        return self.expired and task is not None and task.uncancel() == 0


class Deadlines:
    """The deadlines of one event loop's requests."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Guard]] = []
        self._order = itertools.count()  # ties never compare two guards
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, seconds: float) -> Guard:
        """The current task's deadline, ``seconds`` from now."""
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("a deadline needs a task")
        guard = Guard(task)
        when = self._loop.time() + seconds
        heapq.heappush(self._heap, (when, next(self._order), guard))
        if when < self._timer_at:  # the first, or earlier than the rest (a shorter one)
            self._schedule(when)
        return guard

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._sweep)
        self._timer_at = when

    def _sweep(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            guard = heapq.heappop(heap)[2]
            if guard.task is not None:  # still in flight: its deadline has passed
                guard.expired = True
                guard.task.cancel()
        if heap:
            self._schedule(max(heap[0][0], now + GRANULARITY))

    def __len__(self) -> int:
        """Deadlines not yet come round (finished requests' included)."""
        return len(self._heap)


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)


def start(seconds: float) -> Guard:
    """The current task's deadline, ``seconds`` from now, on the running loop's deadlines."""
    loop = asyncio.get_running_loop()
    deadlines = _BY_LOOP.get(loop)
    if deadlines is None:
        deadlines = _BY_LOOP[loop] = Deadlines(loop)
    return deadlines.start(seconds)
