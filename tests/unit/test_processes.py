"""How many processes to run (table), the refusals the CLI prints, and the supervisor with
stand-in children (tiny ``python -c`` programs): ready, stopped, dead."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consent_relay import processes
from consent_relay.cli import app

CPUS = os.cpu_count() or 1


@pytest.mark.parametrize(
    ("requested", "sqlite", "default", "expected"),
    [
        (None, False, None, CPUS),  # PostgreSQL: one per core
        (None, False, 1, 1),  # ... unless the command's default says otherwise (api)
        (3, False, None, 3),
        (3, False, 1, 3),
        (None, True, None, 1),  # SQLite: one
        (1, True, None, 1),
    ],
)
def test_process_count(
    requested: int | None, sqlite: bool, default: int | None, expected: int
) -> None:
    assert (
        processes.process_count(requested, sqlite=sqlite, what="worker", default=default)
        == expected
    )


@pytest.mark.parametrize(
    ("requested", "sqlite", "message"),
    [
        (2, True, "SQLite runs one API process: it has one writer at a time"),
        (0, False, "--processes must be at least 1 (got 0)"),
        (-1, True, "--processes must be at least 1"),
    ],
)
def test_process_count_refused(requested: int, sqlite: bool, message: str) -> None:
    with pytest.raises(
        processes.ProcessCountRefused, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        processes.process_count(requested, sqlite=sqlite, what="API", default=1)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["api", "--processes", "2"], "SQLite runs one API process"),
        (["worker", "--processes", "3"], "SQLite runs one worker process"),
        (["serve", "--worker-processes", "2"], "SQLite runs one worker process"),
        (["worker", "--processes", "0"], "Invalid value"),  # typer's range check
        (["api", "--processes", "many"], "Invalid value"),
    ],
)
def test_cli_refuses_process_counts(command: list[str], expected: str, tmp_path: Path) -> None:
    env = {
        "CONSENT_RELAY_DATA_DIR": str(tmp_path),
        "CONSENT_RELAY_DATABASE_URL": f"sqlite:///{tmp_path}/one.db",
    }
    result = CliRunner().invoke(app, command, env=env)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())


# -- the supervisor, with stand-in children ---------------------------------------------------

CHILD = """
import os, signal, sys
fd, behaviour = int(sys.argv[1]), sys.argv[2]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
if behaviour == "crash":
    sys.exit(3)
os.write(fd, b"ready\\n")
if behaviour == "exit-after-ready":
    sys.exit(0)
signal.sigwait({signal.SIGTERM})
sys.exit(0)
"""


def stand_ins(*behaviours: str) -> processes.Command:
    def command(index: int, ready_fd: int) -> list[str]:
        return [sys.executable, "-c", CHILD, str(ready_fd), behaviours[index]]

    return command


def test_supervisor_waits_for_every_child_and_stops_them_cleanly() -> None:
    supervisor = processes.Supervisor(stand_ins("serve", "serve"), 2, grace=10)
    supervisor.start()
    try:
        assert supervisor.wait_ready()
        assert all(child.ready for child in supervisor.children)
        supervisor.request_stop()  # as the SIGTERM handler does
        supervisor.wait()
    finally:
        code = supervisor.stop()
    assert code == 0
    assert supervisor.failed == ""
    assert [child.popen.returncode for child in supervisor.children] == [0, 0]


@pytest.mark.parametrize("behaviour", ["crash", "exit-after-ready"])
def test_supervisor_fails_when_a_child_exits_unasked(behaviour: str) -> None:
    """Any exit nobody asked for is a failure, even status 0: the parent stops the others
    and exits 1."""
    supervisor = processes.Supervisor(stand_ins("serve", behaviour), 2, grace=10)
    supervisor.start()
    try:
        supervisor.wait_ready()
        supervisor.wait()
    finally:
        code = supervisor.stop()
    assert code == 1
    victim = supervisor.children[1].popen.pid
    assert supervisor.failed.startswith(f"worker process {victim} exited unexpectedly")
    # The other one was stopped (SIGTERM: handled, or before its handler was set).
    assert supervisor.children[0].popen.returncode in (0, -15)


def test_worker_command_passes_options_and_a_metrics_port_per_process() -> None:
    command = processes.worker_command(concurrency=50, metrics_port=9100, processes=2)
    first, second = command(0, 7), command(1, 8)
    assert first[first.index("--processes") + 1] == "2"  # each told it is one of two
    assert second[second.index("--processes") + 1] == "2"
    assert first[1:3] == ["-m", "consent_relay.processes"]
    assert first[first.index("--ready-fd") + 1] == "7"
    assert first[first.index("--parent") + 1] == str(os.getpid())
    assert first[first.index("--concurrency") + 1] == "50"
    assert first[first.index("--metrics-port") + 1] == "9100"
    assert second[second.index("--metrics-port") + 1] == "9101"
    bare = processes.worker_command(concurrency=None, metrics_port=None)(0, 7)
    assert "--concurrency" not in bare
    assert "--metrics-port" not in bare
    assert bare[bare.index("--processes") + 1] == "1"


@pytest.mark.parametrize(("told", "expected"), [([], 1), (["--processes", "3"], 3)])
def test_a_child_runs_its_worker_as_one_of_the_processes_it_was_told(
    monkeypatch: pytest.MonkeyPatch, told: list[str], expected: int
) -> None:
    from consent_relay import runner

    seen: dict[str, Any] = {}

    async def run_process(_settings: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        kwargs["on_ready"]()

    monkeypatch.setattr(runner, "run_process", run_process)
    monkeypatch.setattr(processes, "stop_with_parent", lambda _parent: None)
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    read_end, write_end = os.pipe()
    try:
        code = processes.child_main(
            ["--ready-fd", str(write_end), "--parent", str(os.getpid()), *told]
        )
        assert os.read(read_end, 100) == processes.READY
    finally:
        os.close(read_end)
    assert code == 0
    assert seen["processes"] == expected


@pytest.mark.parametrize(("processes_", "recorders"), [(1, 2), (2, 1), (3, 1), (16, 1)])
def test_a_postgres_worker_records_two_batches_at_once_only_alone(
    processes_: int, recorders: int
) -> None:
    from consent_relay.delivery import worker

    assert worker.RECORDERS_PG == 2
    assert worker.pg_recorders(processes_) == recorders
