"""The queue clock follows the monotonic clock, not the wall clock."""

from __future__ import annotations

import pytest

from consent_relay.clock import Clock


class FakeTime:
    def __init__(self) -> None:
        self.monotonic = 100.0
        self.wall = 1_800_000_000.0


@pytest.mark.parametrize("jump", [3600.0, -3600.0, 86400.0 * 365])
def test_a_wall_clock_jump_does_not_move_queue_time(jump: float) -> None:
    fake = FakeTime()
    clock = Clock(monotonic=lambda: fake.monotonic, wall=lambda: fake.wall)
    start = clock()
    assert start == 1_800_000_000_000
    fake.wall += jump  # someone sets the machine's clock
    fake.monotonic += 5.0
    assert clock() - start == 5000


def test_set_now_reanchors_on_the_database_time() -> None:
    fake = FakeTime()
    clock = Clock(monotonic=lambda: fake.monotonic, wall=lambda: fake.wall)
    clock.set_now(42_000)
    assert clock() == 42_000
    fake.monotonic += 1.5
    assert clock() == 43_500
