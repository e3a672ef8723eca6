"""Request deadlines with one timer for every request in flight, instead of one each.

aiohttp's per-request ``total`` timeout builds a ``ClientTimeout``, a ``TimeoutHandle``, a
timer context and a ``call_at`` handle for every request, and cancels the handle at its end
(11-20 CPU-us a request in ``bench.client_costs``). Here a request registers its deadline (a
small object); one timer, scheduled for the earliest deadline, cancels the tasks still in
flight past theirs and is scheduled again for the next one. Requests that finished are
dropped when their deadline comes round, so most requests cost the timer nothing at all.

Almost every deadline is the worker's request timeout from now, so each comes after the one
before: those wait in a FIFO (``deque``: a push and a pop, no comparisons); only a deadline
earlier than the last one registered (an OAuth attempt's remainder) goes to a heap. A heap
for all of them cost a tuple a request and, with ten seconds of requests in it (about
100,000), some 35 tuple comparisons to pop each one. With the FIFO, a request's deadline
cost 0.55 us instead of 1.2 (100,000 waiting, a simulated clock, swept every 50 requests).
The loop's ``Deadlines`` is kept at hand, not looked up in a ``WeakKeyDictionary`` (a weak
reference and a hash) each time: with both, a deadline started and finished in a task costs
8.9 thousand instructions instead of 13.9 (``valgrind``, no deadline coming round;
docs/performance-log.md).

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
import collections
import heapq
import itertools
import math
import weakref
from typing import Any

GRANULARITY = 0.005  # seconds: the timer runs at most this often


class Guard:
    """One request's deadline (``when``, on the loop's clock): ``task`` while it runs, None
    once finished."""

    __slots__ = ("expired", "task", "when")

    def __init__(self, task: asyncio.Task[Any], when: float) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.when = when
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
        self.loop = loop
        self._in_order: collections.deque[Guard] = collections.deque()  # each >= the one before
        self._heap: list[tuple[float, int, Guard]] = []  # the others
        self._order = itertools.count()  # ties never compare two guards
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, seconds: float) -> Guard:
        """The current task's deadline, ``seconds`` from now."""
        task = asyncio.current_task(self.loop)
        if task is None:
            raise RuntimeError("a deadline needs a task")
        when = self.loop.time() + seconds
        guard = Guard(task, when)
        in_order = self._in_order
        if not in_order or in_order[-1].when <= when:
            in_order.append(guard)
        else:
            heapq.heappush(self._heap, (when, next(self._order), guard))
        if when < self._timer_at:  # the first, or earlier than the rest (a shorter one)
            self._schedule(when)
        return guard

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._sweep)
        self._timer_at = when

    def _sweep(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self.loop.time()
        in_order, heap = self._in_order, self._heap
        while in_order and in_order[0].when <= now:
            _expire(in_order.popleft())
        while heap and heap[0][0] <= now:
            _expire(heapq.heappop(heap)[2])
        following = min(
            in_order[0].when if in_order else math.inf, heap[0][0] if heap else math.inf
        )
        if following < math.inf:
            self._schedule(max(following, now + GRANULARITY))

    def __len__(self) -> int:
        """Deadlines not yet come round (finished requests' included)."""
        return len(self._in_order) + len(self._heap)


def _expire(guard: Guard) -> None:
    if guard.task is not None:  # still in flight: its deadline has passed
        guard.expired = True
        guard.task.cancel()


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)
# The last loop's, at hand: a process runs one loop (the lookup above cost a weak reference
# and a hash a request). It keeps that loop alive until another loop's first deadline.
_last: Deadlines | None = None


def start(seconds: float) -> Guard:
    """The current task's deadline, ``seconds`` from now, on the running loop's deadlines."""
    global _last
    loop = asyncio.get_running_loop()
    deadlines = _last
    if deadlines is None or deadlines.loop is not loop:
        deadlines = _BY_LOOP.get(loop)
        if deadlines is None:
            deadlines = _BY_LOOP[loop] = Deadlines(loop)
        _last = deadlines
    return deadlines.start(seconds)
