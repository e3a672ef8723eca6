"""How busy the whole machine was over a phase: every core's time from /proc/stat (Linux).

The scale-out scenario reads it at each drain's "go" and end: a second worker process can
only add what the first leaves idle, so each drain's busy share says how much room there was
(docs/benchmarks.md, "scale-out")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time so far, every core, in clock ticks: working and idle."""

    busy: int
    idle: int


def parse(first_line: str) -> CpuTimes:
    """/proc/stat's ``cpu`` line: user, nice, system, idle, iowait, irq, softirq, steal
    (guest time is inside user and nice already). Idle is idle and iowait; busy the rest but
    steal (time another guest of the host had: not this machine's work, nor room for it)."""
    user, nice, system, idle, iowait, irq, softirq = (int(f) for f in first_line.split()[1:8])
    return CpuTimes(busy=user + nice + system + irq + softirq, idle=idle + iowait)


def cpu_times() -> CpuTimes | None:
    """The machine's ``CpuTimes`` now; None where there is no /proc/stat."""
    try:
        with STAT.open() as stat:
            return parse(stat.readline())
    except (OSError, ValueError):
        return None


def busy_share(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """The share of the machine's time spent working between two readings (0 to 1); None
    when either is missing or no time passed."""
    if before is None or after is None:
        return None
    busy = after.busy - before.busy
    total = busy + after.idle - before.idle
    return busy / total if total > 0 else None
