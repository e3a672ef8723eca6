"""How many deliveries a scale-out drain holds (bench.scenarios.scale_out_count): the given
count, grown in multiples of it until a one-process drain lasts long enough, capped."""

from __future__ import annotations

import pytest
from bench.scenarios import scale_out_count


@pytest.mark.parametrize(
    ("count", "per_s", "seconds", "most", "expected"),
    [
        (20_000, 3_000.0, 3.0, 200_000, 20_000),  # a slow machine: 6.7 s already
        (20_000, 6_666.0, 3.0, 200_000, 20_000),  # 3.0 s: long enough
        (20_000, 7_000.0, 3.0, 200_000, 40_000),  # 2.9 s: the next multiple
        (20_000, 45_000.0, 3.0, 200_000, 140_000),  # 135,000 needed
        (20_000, 100_000.0, 3.0, 200_000, 200_000),  # capped
        (20_000, 100_000.0, 3.0, 10_000, 20_000),  # a cap under the count: the count
        (20_000, 45_000.0, 0.0, 200_000, 20_000),  # no calibration (--quick)
        (20_000, 0.0, 3.0, 200_000, 20_000),  # the probe delivered nothing
        (200, 5_000.0, 60.0, 400, 400),
    ],
)
def test_scale_out_count(
    count: int, per_s: float, seconds: float, most: int, expected: int
) -> None:
    assert scale_out_count(count, per_s, seconds, most) == expected
