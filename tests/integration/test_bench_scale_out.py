"""The bench's scale-out scenario (bench/scenarios.py) end to end, small: the engine's drain
with one and with two worker processes and the floors' beside it, each delivery arriving,
and the PostgreSQL server's CPU a delivery reported for the drain alone, beside the
backends' (which count the fill too: read alone, they overstated the server's share)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import db, scenarios
from bench.receiver import ReceiverProcess

from consent_relay import crypto

pytestmark = pytest.mark.postgres


async def test_scale_out_reports_the_drains_server_cpu(tmp_path: Path) -> None:
    lines: list[str] = []
    cfg = scenarios.Config(workdir=tmp_path, key=crypto.new_key(), say=lines.append)
    cfg.deliveries = 200
    cfg.concurrency = 16
    results: dict[str, Any] = {}
    async with db.postgres_template(), ReceiverProcess(tmp_path / "receiver.log") as receiver:
        await scenarios.scale_out(cfg, receiver, results)
    for processes in (1, 2):
        assert results[f"postgres_{processes}_proc_server_cpu_us"] > 0, lines
        assert results[f"postgres_{processes}_proc_db_cpu_us"] > 0, lines
    assert results["postgres_1_worker_per_s"] > 0
    assert results["postgres_2_workers_per_s"] > 0
    assert results["minimal_scale_out_ratio"] is not None
    drains = [line for line in lines if line.startswith("  scale-out ") and "process(es)" in line]
    assert len(drains) == 2, lines
    assert all("database server" in line for line in drains), drains
