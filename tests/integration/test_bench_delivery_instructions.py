"""bench.delivery_instructions drains a copy of a filled SQLite database with the real worker
and counts the drain's instructions under valgrind, less a start-up run's."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from bench import delivery_instructions

from consent_relay.delivery import sender

ROOT = Path(__file__).resolve().parents[2]


def test_the_count_is_read_from_cachegrinds_summary() -> None:
    summary = "==61== \n==61== I   refs:      14,402,185,665\n"
    assert delivery_instructions.instructions(summary) == 14_402_185_665
    with pytest.raises(RuntimeError, match="no instruction count"):
        delivery_instructions.instructions("valgrind: command not found")


async def test_a_drain_sends_every_delivery_of_a_copy(tmp_path: Path) -> None:
    await delivery_instructions.fill(tmp_path, 60)
    real = sender.send
    assert await delivery_instructions.drain(tmp_path, 60) == 60
    assert sender.send is real  # the stub is gone again
    # the filled database is left as it was: the next run drains the same 60
    assert await delivery_instructions.drain(tmp_path, 60) == 60
    assert await delivery_instructions.drain(tmp_path, 60, start_only=True) == 0


async def test_the_floors_drain_sends_every_delivery_through_the_stubbed_post(
    tmp_path: Path,
) -> None:
    assert await delivery_instructions.floor_drain(tmp_path, 60) == 60
    # a fresh database each run: the next drains the same 60
    assert await delivery_instructions.floor_drain(tmp_path, 60) == 60
    assert await delivery_instructions.floor_drain(tmp_path, 60, start_only=True) == 0


def _run_with_fake_valgrind(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The module run with a stand-in for valgrind: it runs the command after its options,
    then reports as cachegrind does, a larger count for a drain than for a start-up (the
    floor's drain half the engine's)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "valgrind"
    fake.write_text(
        "#!/bin/sh\n"
        'while [ "${1#--}" != "$1" ]; do shift; done\n'
        '"$@" || exit 1\n'
        'case "$*" in *--floor-drain*) n=1,000,600 ;; *--drain*) n=2,000,600 ;; *) n=600 ;; esac\n'
        'echo "==1== I   refs:      $n" >&2\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{tools}{os.pathsep}{os.environ['PATH']}")
    command = [sys.executable, "-m", "bench.delivery_instructions", "--deliveries", "40"]
    return subprocess.run(
        [*command, *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_each_checkout_is_counted_drain_less_start_up(tmp_path: Path) -> None:
    done = _run_with_fake_valgrind(tmp_path)
    assert done.returncode == 0, done.stderr
    # (2,000,600 - 600) / 40 deliveries = 50,000 a delivery
    assert f"{ROOT}: 50.0 thousand instructions a delivery" in done.stdout
    assert "floor" not in done.stdout


def test_the_floor_is_counted_the_same_way_and_the_engine_set_against_it(
    tmp_path: Path,
) -> None:
    done = _run_with_fake_valgrind(tmp_path, "--floor")
    assert done.returncode == 0, done.stderr
    # (1,000,600 - 600) / 40 = 25,000 a delivery: the engine's 50,000 is twice that
    assert "complete floor: 25.0 thousand instructions a delivery" in done.stdout
    assert f"{ROOT}: 50.0 thousand instructions a delivery" in done.stdout
    assert "2.00 x the complete floor" in done.stdout
