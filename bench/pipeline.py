"""Where a worker's time goes between its threads, timed from inside the worker process.

The bench's worker child (``bench.procs worker``) reports, with its CPU, two things that
CPU alone does not say:

- **each thread's CPU** (``/proc/self/task``, by Python thread name): the event loop's
  thread, and any other that works (aiosqlite's connection threads, when the worker's SQLite
  transactions ran there);
- **its SQLite transactions' wall time against their thread's CPU**, by phase: ``BEGIN
  IMMEDIATE``, the work, ``COMMIT`` (``driver.in_transaction``, which runs every claim and
  record of the worker on SQLite, timed around). A transaction whose wall is several times
  its CPU is waiting: for the GIL (after each ``sqlite3`` call, the connection's thread must
  win it back from the event loop's, which holds it while it runs requests), for the write
  lock, or for the disk.

- **its steps' pace** (``Steps``): how many claims and records it made, of how many rows, how
  long each took from its call to its return (the database's work and the wait for the
  event loop to read the answer), how much of the drain a claim was under way and how many
  records at a time on average, and how many requests the senders had in flight (sampled on
  the event loop every 5 ms). A worker whose claims run most of the drain while its senders
  have few requests in flight is waiting on its claims, not on its receivers or its CPU.

Measured with it (docs/performance-log.md), while the worker's transactions ran on aiosqlite's
thread: the claims and records of a drain ran back to back there, each three to four times
its CPU, ``BEGIN`` alone about 5 ms of wall for a few µs of CPU, and the event loop's thread
was busy 72 % of the drain (PostgreSQL's 89 %): the pipeline's pace was the GIL's hand-over,
not SQLite's work. They now run on the event loop's thread (``Store.sqlite_transaction``),
where their wall is their CPU but for the disk's (``COMMIT``), and the loop's line counts
SQLite's work with its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from consent_relay.delivery import worker
from consent_relay.storage import batches, driver

T = TypeVar("T")
PHASES = ("begin", "work", "commit")


def parse_stat(text: str) -> tuple[str, int]:
    """A ``/proc/<pid>/task/<tid>/stat`` line: (the thread's command name, its user and
    system CPU in clock ticks). The name is between the first ``(`` and the last ``)``:
    it may hold spaces and parentheses itself."""
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15
    return comm, int(fields[11]) + int(fields[12])


def thread_cpu(task_dir: Path = Path("/proc/self/task")) -> dict[str, float]:
    """CPU seconds of each thread of this process so far, by Python thread name (the
    command name for a thread Python does not know); threads of one name added up."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    cpu: dict[str, float] = {}
    for task in task_dir.iterdir():
        try:
            comm, ticks = parse_stat((task / "stat").read_text())
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        name = names.get(int(task.name), comm)
        cpu[name] = cpu.get(name, 0.0) + ticks / tick
    return cpu


def cpu_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Each thread's CPU between two ``thread_cpu`` readings (a thread started in between
    counts from zero), busiest first."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


@dataclass
class Phase:
    wall: float = 0.0  # seconds
    cpu: float = 0.0  # seconds of the thread that ran it


@dataclass
class TransactionTimes:
    """The wall time and the running thread's CPU of each phase of ``driver.in_transaction``,
    added up over the transactions since ``install``."""

    count: int = 0
    phases: dict[str, Phase] = field(default_factory=lambda: {p: Phase() for p in PHASES})

    def add(self, marks: list[tuple[float, float]]) -> None:
        """One transaction's marks (wall, thread CPU): its start, the work's start and end,
        its end. A transaction that failed before its work (its ``BEGIN``) has its start
        and end only: all of it counts as ``begin``."""
        self.count += 1
        if len(marks) == 2:
            spans = {"begin": (marks[0], marks[1])}
        else:
            spans = dict(zip(PHASES, itertools.pairwise(marks), strict=True))
        for phase, ((wall0, cpu0), (wall1, cpu1)) in spans.items():
            self.phases[phase].wall += wall1 - wall0
            self.phases[phase].cpu += cpu1 - cpu0

    def install(self) -> Callable[[], None]:
        """Time every ``driver.in_transaction`` from now on; returns the undo."""
        original = driver.in_transaction

        def timed(db: Any, work: Callable[[Any], T], **options: Any) -> T:
            marks = [_now()]

            def marked(conn: Any) -> T:
                marks.append(_now())
                try:
                    return work(conn)
                finally:
                    marks.append(_now())

            try:
                return original(db, marked, **options)
            finally:
                marks.append(_now())
                self.add(marks)

        driver.in_transaction = timed

        def undo() -> None:
            driver.in_transaction = original

        return undo

    def report(self) -> dict[str, Any]:
        """For the child's JSON report (``describe`` reads it back)."""
        return {
            "count": self.count,
            **{p: {"wall_s": ph.wall, "cpu_s": ph.cpu} for p, ph in self.phases.items()},
        }


class Running:
    """How many of something are under way, over time: ``busy_s`` the time at least one was,
    ``area`` the integral of their number (``area / elapsed`` their average number)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.now = 0
        self.busy_s = 0.0
        self.area = 0.0
        self._since = clock()

    def _advance(self) -> None:
        at = self.clock()
        if self.now:
            self.busy_s += at - self._since
            self.area += self.now * (at - self._since)
        self._since = at

    def start(self) -> None:
        self._advance()
        self.now += 1

    def end(self) -> None:
        self._advance()
        self.now -= 1

    def settle(self) -> None:
        """Count the time up to now (before reading ``busy_s`` or ``area``)."""
        self._advance()


@dataclass
class Step:
    calls: int = 0
    rows: int = 0
    wall_s: float = 0.0


class Steps:
    """The worker's claims and records (``batches.claim`` and ``batches.record``, wrapped)
    and its senders' requests in flight (every ``Worker`` made after ``install``, sampled
    every ``every`` seconds on the event loop), from ``install`` to ``report``."""

    def __init__(
        self, every: float = 0.005, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.every = every
        self.clock = clock
        self.steps = {"claims": Step(), "records": Step()}
        self.running = {"claims": Running(clock), "records": Running(clock)}
        self.workers: list[worker.Worker] = []
        self.samples = 0
        self.in_flight = 0  # summed over the samples
        self.concurrency = 0
        self.began = clock()

    async def _timed(self, name: str, call: Any, rows: Callable[[Any], int]) -> Any:
        step, running = self.steps[name], self.running[name]
        running.start()
        began = self.clock()
        try:
            result = await call
        finally:
            running.end()
            step.wall_s += self.clock() - began
            step.calls += 1
        step.rows += rows(result)
        return result

    def install(self) -> Callable[[], None]:
        """Wrap the steps and watch the workers from now on (call on the worker's event
        loop); returns the undo."""
        claim, record, init = batches.claim, batches.record, worker.Worker.__init__
        self.began = self.clock()

        async def timed_claim(*args: Any, **kwargs: Any) -> Any:
            return await self._timed("claims", claim(*args, **kwargs), len)

        async def timed_record(store: Any, results: Any, *args: Any, **kwargs: Any) -> Any:
            return await self._timed(
                "records", record(store, results, *args, **kwargs), lambda _r: len(results)
            )

        def watched(w: worker.Worker, *args: Any, **kwargs: Any) -> None:
            init(w, *args, **kwargs)
            self.workers.append(w)
            self.concurrency += w.concurrency

        replaced: list[tuple[Any, str, Any, Any]] = [
            (batches, "claim", claim, timed_claim),
            (batches, "record", record, timed_record),
            (worker.Worker, "__init__", init, watched),
        ]
        for owner, name, _original, new in replaced:
            setattr(owner, name, new)  # for this drain only (``undo``)
        sampler = asyncio.get_running_loop().create_task(self._sample())

        def undo() -> None:
            for owner, name, original, _new in replaced:
                setattr(owner, name, original)
            sampler.cancel()

        return undo

    async def _sample(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.every)
                if any(w.leases_held for w in self.workers):  # while it works
                    self.samples += 1
                    self.in_flight += sum(w.requests_in_flight for w in self.workers)

    def report(self) -> dict[str, Any]:
        """For the child's JSON report (``describe`` reads it back)."""
        elapsed = max(self.clock() - self.began, 1e-9)
        out: dict[str, Any] = {"elapsed_s": elapsed, "concurrency": self.concurrency}
        for name, step in self.steps.items():
            running = self.running[name]
            running.settle()
            out[name] = {
                "calls": step.calls,
                "rows": step.rows,
                "wall_s": step.wall_s,
                "busy_share": running.busy_s / elapsed,
                "average_running": running.area / elapsed,
            }
        out["in_flight_average"] = self.in_flight / self.samples if self.samples else None
        return out


def describe_steps(steps: dict[str, Any]) -> str:
    """``Steps.report`` on one line."""
    parts = []
    for name, what in (("claims", "heads"), ("records", "results")):
        step = steps.get(name) or {}
        calls = step.get("calls") or 0
        if not calls:
            continue
        parts.append(
            f"{calls} {name} of {step['rows'] / calls:.0f} {what}, "
            f"{step['wall_s'] / calls * 1000:.1f} ms each, under way "
            f"{step['busy_share']:.0%} of the drain ({step['average_running']:.1f} at a time)"
        )
    in_flight = steps.get("in_flight_average")
    if in_flight is not None:
        parts.append(f"requests in flight {in_flight:.0f} of {steps.get('concurrency')}")
    return "; ".join(parts)


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def describe(report: dict[str, Any]) -> str:
    """One line of a worker child's report: its threads' CPU, and its SQLite transactions
    (when it ran any) with their wall against their CPU, by phase."""
    parts = []
    threads = report.get("threads") or {}
    if threads:
        parts.append(
            "threads "
            + ", ".join(f"{name} {cpu:.2f}" for name, cpu in threads.items() if cpu >= 0.01)
            + " CPU-s"
        )
    tx = report.get("sqlite_transactions") or {}
    if tx.get("count"):
        phases = [tx[p] for p in PHASES]
        wall = sum(p["wall_s"] for p in phases)
        cpu = sum(p["cpu_s"] for p in phases)
        each = ", ".join(
            f"{name} {p['wall_s']:.2f} / {p['cpu_s']:.2f}"
            for name, p in zip(("BEGIN", "work", "COMMIT"), phases, strict=True)
        )
        parts.append(
            f"SQLite transactions {tx['count']}: {wall:.2f} s of wall for {cpu:.2f} s of "
            f"their thread's CPU ({each})"
        )
    steps = describe_steps(report.get("steps") or {})
    if steps:
        parts.append(steps)
    return "; ".join(parts)
