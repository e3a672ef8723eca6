"""Row 3 of the bench's table: the engine's two-process gain against the minimal loop's own
in the same run, and no verdict where the minimal loop itself gained nothing from its
second process (a run seen on this machine: 1.01x), since any engine would then pass."""

from __future__ import annotations

import pytest
from bench.__main__ import scale_out_verdict
from rich.text import Text


@pytest.mark.parametrize(
    ("scale", "floor_scale", "expected"),
    [
        (1.08, 1.28, "no"),  # 0.84 of the floor's gain (a full run at 1a7ddc1)
        (1.22, 1.28, "yes"),  # 0.953
        (1.21, 1.28, "no"),  # 0.945
        (1.40, 1.40, "yes"),
        (1.28, 1.01, "no reference"),  # the minimal loop found no second core in the run
        (0.90, 1.05, "no reference"),
        (1.05, 1.10, "yes"),  # at the threshold the floor is a reference again
        (None, 1.30, "-"),
        (1.20, None, "-"),
        (0.0, 1.30, "-"),
    ],
)
def test_the_scale_out_verdict(
    scale: float | None, floor_scale: float | None, expected: str
) -> None:
    shown = Text.from_markup(scale_out_verdict(scale, floor_scale)).plain
    assert shown.split(" (")[0] == expected
