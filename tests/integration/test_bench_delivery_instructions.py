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
    return _run_module(tools, *options)


def _run_module(tools: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.delivery_instructions --deliveries 40 *options`` with ``tools``
    first on the PATH."""
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


@pytest.mark.parametrize(
    ("annotated", "expected"),
    [
        (
            "  584,087,996 (50.54%)  ???:sqlite3_step [/usr/lib/x86_64-linux-gnu/libsqlite3.so]\n"
            "  576,787,492 (49.90%)  ???:sqlite3VdbeExec [/usr/lib/x86_64-linux-gnu/libsqlite3.so]",
            584_087_996,
        ),
        ("  1,000 (10.00%)  ???:sqlite3_step_other [x]\n", 0),  # another function
        ("  5 (0.00%)  ???:main [x]\n", 0),  # a thread that never stepped
    ],
)
def test_the_work_inside_sqlite3_step_is_read_from_the_annotation(
    annotated: str, expected: int
) -> None:
    assert delivery_instructions.in_sqlite_step(annotated) == expected


def test_a_thread_total_is_its_summary_and_a_split_subtracts_field_by_field() -> None:
    assert delivery_instructions.thread_total("version: 1\nsummary: 4813129844\n") == 4813129844
    with pytest.raises(RuntimeError):
        delivery_instructions.thread_total("version: 1\n")
    drain = delivery_instructions.ByThread(loop=1000, others=600, in_sqlite=250)
    start = delivery_instructions.ByThread(loop=100, others=100, in_sqlite=50)
    assert drain - start == delivery_instructions.ByThread(900, 500, 200)
    assert (drain - start).with_gil == 900 + 500 - 200


def _fake_callgrind(tools: Path) -> None:
    """valgrind and callgrind_annotate as callgrind would leave things: a file a thread, the
    main thread's ``-01``; a drain's second thread steps SQLite for 400,000 of its
    1,200,600 (the floor's, all on its main thread, 300,000 of its 1,000,600)."""
    valgrind = tools / "valgrind"
    valgrind.write_text(
        "#!/bin/sh\n"
        'out=""\n'
        'for a in "$@"; do case "$a" in --callgrind-out-file=*) out="${a#*=}" ;; esac; done\n'
        'while [ "${1#--}" != "$1" ]; do shift; done\n'
        '"$@" || exit 1\n'
        'case "$*" in\n'
        '  *--floor-drain*) printf "summary: 1000600\\nfn=sqlite3_step 300000\\n" > "$out-01" ;;\n'
        '  *--floor-start*) echo "summary: 600" > "$out-01" ;;\n'
        '  *--drain*) echo "summary: 2000600" > "$out-01"\n'
        '    printf "summary: 1200600\\nfn=sqlite3_step 400000\\n" > "$out-02" ;;\n'
        '  *) echo "summary: 600" > "$out-01"; echo "summary: 600" > "$out-02" ;;\n'
        "esac\n"
    )
    annotate = tools / "callgrind_annotate"
    annotate.write_text(
        "#!/bin/sh\n"
        'for f in "$@"; do :; done\n'
        "n=$(sed -n 's/^fn=sqlite3_step \\([0-9]*\\)$/\\1/p' \"$f\")\n"
        'echo "  $n (33.3%)  ???:sqlite3_step [/usr/lib/libsqlite3.so]"\n'
    )
    for tool in (valgrind, annotate):
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def test_threads_split_each_count_and_set_the_work_holding_the_gil_against_the_floors(
    tmp_path: Path,
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    _fake_callgrind(tools)
    done = _run_module(tools, "--threads", "--floor")
    assert done.returncode == 0, done.stderr
    # the engine: loop (2,000,600 - 600) / 40 = 50,000; others (1,200,600 - 600) / 40 =
    # 30,000; in sqlite3_step 400,000 / 40 = 10,000; holding the GIL 50 + 30 - 10 = 70
    assert (
        f"{ROOT}: event loop 50.0, other threads 30.0 (in sqlite3_step 10.0); "
        "with the GIL 70.0 thousand instructions a delivery" in done.stdout
    )
    # the floor: 25,000 on its loop, 7,500 of it in SQLite: 17.5 holding the GIL; 70 / 17.5
    assert (
        "complete floor: event loop 25.0, other threads 0.0 (in sqlite3_step 7.5); "
        "with the GIL 17.5 thousand instructions a delivery" in done.stdout
    )
    assert "4.00 x the floor's with the GIL" in done.stdout
