"""The machine's busy share over a phase (bench.machine), from /proc/stat's cpu line."""

from __future__ import annotations

import pytest
from bench.machine import CpuTimes, busy_share, cpu_times, parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # user nice system idle iowait irq softirq steal guest guest_nice
        ("cpu  100 5 20 300 10 1 2 7 0 0", CpuTimes(busy=128, idle=310)),
        ("cpu  0 0 0 0 0 0 0", CpuTimes(busy=0, idle=0)),  # older kernels: fewer fields
        ("cpu  4 0 0 6 0 0 0 99 50 0", CpuTimes(busy=4, idle=6)),  # steal and guest left out
    ],
)
def test_parse(line: str, expected: CpuTimes) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (CpuTimes(100, 100), CpuTimes(186, 114), 0.86),
        (CpuTimes(0, 0), CpuTimes(0, 50), 0.0),
        (CpuTimes(0, 0), CpuTimes(50, 0), 1.0),
        (CpuTimes(5, 5), CpuTimes(5, 5), None),  # no time passed
        (None, CpuTimes(5, 5), None),
        (CpuTimes(5, 5), None, None),
    ],
)
def test_busy_share(
    before: CpuTimes | None, after: CpuTimes | None, expected: float | None
) -> None:
    share = busy_share(before, after)
    assert share == expected if expected is None else share == pytest.approx(expected)


def test_this_machine_reads() -> None:
    times = cpu_times()
    assert times is not None
    assert times.busy > 0
    assert times.idle >= 0
