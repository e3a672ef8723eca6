"""Which bench children run under py-spy (bench.procs.sampled): the worker by default, or
the children BENCH_PYSPY_CHILDREN names, so the engine's profile can be set beside the bare
client's from the same run."""

from __future__ import annotations

import pytest
from bench.procs import sampled


@pytest.mark.parametrize(
    ("child", "names", "expected"),
    [
        ("worker", None, True),
        ("bare", None, False),
        ("worker", "", True),  # set but empty: the default
        ("bare", "worker,bare", True),
        ("worker", "worker,bare", True),
        ("minimal", "worker,bare", False),
        ("complete", " complete , bare", True),
        ("worker", "bare", False),
    ],
)
def test_the_children_sampled(child: str, names: str | None, expected: bool) -> None:
    env = {} if names is None else {"BENCH_PYSPY_CHILDREN": names}
    assert sampled(child, env) is expected
