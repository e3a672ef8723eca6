"""The bench's scale-out scenario (bench/scenarios.py) end to end, small: the engine's drain
with one and with two worker processes and the floors' beside it, each delivery arriving,
and the PostgreSQL server's CPU a delivery reported for the drain alone, beside the
backends' (which count the fill too: read alone, they overstated the server's share); the
deliveries a drain calibrated first, so that a fast machine's drains last long enough to
measure, and every drain of the scenario, the floors' included, of that many."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import db, scenarios
from bench.receiver import ReceiverProcess

from consent_relay import crypto

pytestmark = pytest.mark.postgres


async def test_scale_out_reports_the_drains_server_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    floor_counts: list[int] = []
    floors = scenarios._minimal_processes

    async def counted(*args: Any, count: int, **kwargs: Any) -> tuple[float, float | None]:
        floor_counts.append(count)
        return await floors(*args, count=count, **kwargs)

    monkeypatch.setattr(scenarios, "_minimal_processes", counted)
    lines: list[str] = []
    cfg = scenarios.Config(workdir=tmp_path, key=crypto.new_key(), say=lines.append)
    cfg.deliveries = 200
    cfg.concurrency = 16
    # The probe (the minimal loop draining 200) lasts far less than a minute: the count grows
    # to its cap.
    cfg.scale_out_seconds = 60.0
    cfg.scale_out_most = 400
    results: dict[str, Any] = {}
    async with db.postgres_template(), ReceiverProcess(tmp_path / "receiver.log") as receiver:
        await scenarios.scale_out(cfg, receiver, results)
    for processes in (1, 2):
        assert results[f"postgres_{processes}_proc_server_cpu_us"] > 0, lines
        assert results[f"postgres_{processes}_proc_db_cpu_us"] > 0, lines
    assert results["postgres_1_worker_per_s"] > 0
    assert results["postgres_2_workers_per_s"] > 0
    assert results["minimal_scale_out_ratio"] is not None
    # How busy the whole machine was through each drain, the engine's and the floors'.
    for key in (
        "postgres_1_proc_machine_busy",
        "postgres_2_proc_machine_busy",
        *(f"{floor}_{p}_machine_busy" for floor in ("minimal", "complete", "minimal_aiohttp")
          for p in ("1_process", "2_processes")),
    ):  # fmt: skip
        assert 0 < results[key] <= 1, (key, results[key])
    drains = [line for line in lines if line.startswith("  scale-out ") and "process(es)" in line]
    assert len(drains) == 2, lines
    assert all("database server" in line for line in drains), drains
    assert all("machine busy" in line for line in drains), drains
    floor_lines = [line for line in lines if line.startswith("  scale-out of ")]
    assert len(floor_lines) == 3, lines
    assert all("; machine busy " in line for line in floor_lines), floor_lines
    assert results["scale_out_deliveries"] == 400
    assert all("{'delivered': 400}" in line for line in drains), drains
    probe = "  scale-out probe: the minimal loop drained 200 "
    assert any(line.startswith(probe) for line in lines), lines
    # The probe drained 200; the floors, one and two processes each, 400.
    assert floor_counts == [200] + [400] * 6


async def test_a_given_scale_out_count_is_used_as_given(tmp_path: Path) -> None:
    lines: list[str] = []
    cfg = scenarios.Config(workdir=tmp_path, key=crypto.new_key(), say=lines.append)
    cfg.deliveries = 200
    cfg.concurrency = 16
    cfg.scale_out_deliveries = 300  # --scale-out-deliveries 300: no probe
    results: dict[str, Any] = {}
    async with db.postgres_template(), ReceiverProcess(tmp_path / "receiver.log") as receiver:
        await scenarios.scale_out(cfg, receiver, results)
    assert results["scale_out_deliveries"] == 300
    assert not any("probe" in line for line in lines), lines
    drains = [line for line in lines if line.startswith("  scale-out ") and "process(es)" in line]
    assert all("{'delivered': 300}" in line for line in drains), drains
