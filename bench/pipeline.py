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

Measured with it (docs/performance-log.md), while the worker's transactions ran on aiosqlite's
thread: the claims and records of a drain ran back to back there, each three to four times
its CPU, ``BEGIN`` alone about 5 ms of wall for a few µs of CPU, and the event loop's thread
was busy 72 % of the drain (PostgreSQL's 89 %): the pipeline's pace was the GIL's hand-over,
not SQLite's work. They now run on the event loop's thread (``Store.sqlite_transaction``),
where their wall is their CPU but for the disk's (``COMMIT``), and the loop's line counts
SQLite's work with its own.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from consent_relay.storage import driver

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

        def timed(db: Any, work: Callable[[Any], T]) -> T:
            marks = [_now()]

            def marked(conn: Any) -> T:
                marks.append(_now())
                try:
                    return work(conn)
                finally:
                    marks.append(_now())

            try:
                return original(db, marked)
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
    return "; ".join(parts)
