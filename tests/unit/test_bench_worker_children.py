"""The bench's worker processes are started as ``consent-relay worker --processes N`` starts
its children: each told it is one of N (``processes.worker_command``), which decides how many
batches each records at once on PostgreSQL (``worker.pg_recorders``); and ``bench.procs
worker`` passes what it is told on to the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import procs
from bench.scenarios import Config, worker_children

from consent_relay import crypto, processes
from consent_relay.settings import Settings


@pytest.mark.parametrize("count", [1, 2, 3])
def test_each_worker_child_is_told_how_many_there_are(tmp_path: Path, count: int) -> None:
    cfg = Config(workdir=tmp_path, key=crypto.new_key())
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://bench@127.0.0.1/x", secret_key=cfg.key
    )
    children = worker_children(cfg, settings, count, within=10.0)
    assert len(children) == count
    supervised = processes.worker_command(None, None, count)(0, 3)
    told = supervised[supervised.index("--processes") + 1]
    for child in children:
        assert child.args[0] == "worker"
        assert child.args[child.args.index("--processes") + 1] == told == str(count)


@pytest.mark.parametrize(("argv", "expected"), [([], 1), (["--processes", "2"], 2)])
def test_the_bench_worker_runs_as_one_of_the_processes_it_was_told(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: int
) -> None:
    seen: list[tuple[float, int]] = []

    async def run_worker(max_seconds: float, processes_: int = 1) -> None:
        seen.append((max_seconds, processes_))

    monkeypatch.setattr(procs, "run_worker", run_worker)
    procs.main(["worker", "--max-seconds", "5", *argv])
    assert seen == [(5.0, expected)]
