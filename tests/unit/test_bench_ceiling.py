"""The delivery scenario's ceiling (bench/scenarios.py): the mean of the bare runs just
before and just after each drain, so that a ratio does not move with one bare run."""

from __future__ import annotations

import pytest
from bench.scenarios import bracketed


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (10_330.0, 8_282.0, 9_306.0),  # two bare runs a drain apart, seen on one machine
        (8_000.0, 8_000.0, 8_000.0),
        (9_000.0, 0.0, 9_000.0),  # the run after failed: the one before alone
        (0.0, 7_500.0, 7_500.0),
        (0.0, 0.0, 0.0),
    ],
)
def test_a_drains_ceiling_is_the_mean_of_the_bare_runs_around_it(
    before: float, after: float, expected: float
) -> None:
    assert bracketed(before, after) == pytest.approx(expected)
