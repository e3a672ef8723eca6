"""bench.pipeline: the worker child's threads' CPU and its SQLite transactions' wall time
against their CPU, by phase (BEGIN, work, COMMIT)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bench import pipeline

from consent_relay.storage import driver
from consent_relay.storage.store import Store


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("4242 (python) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0", ("python", 281)),
        # a name with spaces and parentheses: the last ")" ends it
        ("7 (Thread-3 (_conn)) R 1 2 3 4 5 6 7 8 9 10 7 0 0 0", ("Thread-3 (_conn)", 7)),
        ("9 () S 1 2 3 4 5 6 7 8 9 10 0 0 0 0", ("", 0)),
    ],
)
def test_a_threads_stat_line_reads(line: str, expected: tuple[str, int]) -> None:
    assert pipeline.parse_stat(line) == expected


def test_cpu_since_counts_new_threads_from_zero_busiest_first() -> None:
    before = {"MainThread": 1.0, "old": 0.5}
    after = {"MainThread": 3.0, "old": 0.5, "new": 2.5}
    assert list(pipeline.cpu_since(before, after).items()) == [
        ("new", 2.5),
        ("MainThread", 2.0),
        ("old", 0.0),
    ]


def test_thread_cpu_names_this_process_threads() -> None:
    before = pipeline.thread_cpu()
    done = threading.Event()

    def burn() -> None:
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        done.wait()

    burner = threading.Thread(target=burn, name="burner")
    burner.start()
    try:
        deadline = time.monotonic() + 10
        while pipeline.thread_cpu().get("burner", 0.0) < 0.04 and time.monotonic() < deadline:
            time.sleep(0.01)
        spent = pipeline.cpu_since(before, pipeline.thread_cpu())
    finally:
        done.set()
        burner.join()
    assert spent["burner"] >= 0.04
    assert "MainThread" in spent


async def test_transactions_are_timed_by_phase_and_the_hook_undone(tmp_path: Path) -> None:
    """Through the store's own path (``Store.sqlite_transaction``: the worker's claims and
    records), so the hook would report none if the store bound ``in_transaction`` at
    import."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await store.migrate()
    times = pipeline.TransactionTimes()
    original = driver.in_transaction
    undo = times.install()

    def waits(_db: object) -> int:
        time.sleep(0.03)  # wall, not CPU: what a wait for the GIL looks like
        return 7

    def fails(_db: object) -> None:
        raise ValueError("no")

    try:
        assert await store.sqlite_transaction(waits) == 7
        with pytest.raises(ValueError, match="no"):
            await store.sqlite_transaction(fails)  # rolled back: its phases count all the same
        # as the worker's claim is run (its commit not waiting for the disk): timed too
        assert await store.sqlite_transaction(waits, durable=False) == 7
    finally:
        undo()
        await store.close()
    assert driver.in_transaction is original
    report = times.report()
    assert report["count"] == 3
    assert report["work"]["wall_s"] >= 0.03
    assert report["work"]["cpu_s"] < report["work"]["wall_s"] - 0.02
    assert report["begin"]["wall_s"] > 0
    assert report["commit"]["wall_s"] > 0


def test_a_transaction_that_never_began_counts_as_begin() -> None:
    times = pipeline.TransactionTimes()
    times.add([(10.0, 1.0), (10.5, 1.001)])
    assert times.count == 1
    assert times.phases["begin"].wall == pytest.approx(0.5)
    assert times.phases["work"].wall == 0.0
    assert times.phases["commit"].wall == 0.0


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({}, ""),
        ({"threads": {"MainThread": 7.0, "idle": 0.001}}, "threads MainThread 7.00 CPU-s"),
        (
            {
                "threads": {"MainThread": 7.0, "Thread-3": 2.5},
                "sqlite_transactions": {
                    "count": 461,
                    "begin": {"wall_s": 2.34, "cpu_s": 0.06},
                    "work": {"wall_s": 4.19, "cpu_s": 2.19},
                    "commit": {"wall_s": 0.92, "cpu_s": 0.38},
                },
            },
            "threads MainThread 7.00, Thread-3 2.50 CPU-s; SQLite transactions 461: 7.45 s of"
            " wall for 2.63 s of their thread's CPU (BEGIN 2.34 / 0.06, work 4.19 / 2.19,"
            " COMMIT 0.92 / 0.38)",
        ),
        ({"sqlite_transactions": {"count": 0}}, ""),  # PostgreSQL: no such transactions
        (
            {
                "steps": {
                    "concurrency": 200,
                    "claims": {
                        "calls": 4,
                        "rows": 390,
                        "wall_s": 0.0384,
                        "busy_share": 0.84,
                        "average_running": 1.0,
                    },
                    "records": {
                        "calls": 2,
                        "rows": 242,
                        "wall_s": 0.0334,
                        "busy_share": 0.5,
                        "average_running": 1.14,
                    },
                    "in_flight_average": 70.4,
                }
            },
            "4 claims of 98 heads, 9.6 ms each, under way 84% of the drain (1.0 at a time); "
            "2 records of 121 results, 16.7 ms each, under way 50% of the drain (1.1 at a "
            "time); requests in flight 70 of 200",
        ),
    ],
)
def test_a_report_reads_as_one_line(report: dict[str, Any], expected: str) -> None:
    assert pipeline.describe(report) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_running_counts_the_time_any_was_under_way_and_their_average_number() -> None:
    clock = Clock()
    running = pipeline.Running(clock)
    clock.now = 1.0
    running.start()  # one from 1 to 4
    clock.now = 2.0
    running.start()  # a second from 2 to 3
    clock.now = 3.0
    running.end()
    clock.now = 4.0
    running.end()
    clock.now = 10.0
    running.settle()
    assert running.busy_s == pytest.approx(3.0)
    assert running.area == pytest.approx(4.0)  # 3 s of one, 1 s of a second


class FakeWorker:
    """What ``Steps`` reads of a worker."""

    def __init__(self, in_flight: int) -> None:
        self.concurrency = 200
        self.leases_held = in_flight + 10
        self.requests_in_flight = in_flight


async def test_steps_time_claims_and_records_sample_in_flight_and_undo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from consent_relay.delivery import worker
    from consent_relay.storage import batches

    async def claim(*_args: Any, **_kwargs: Any) -> list[int]:
        await asyncio.sleep(0.01)
        return [1, 2, 3]

    async def record(_store: Any, _results: Any, *_args: Any, **_kwargs: Any) -> None:
        await asyncio.sleep(0.01)

    def init(self: Any, *_args: Any, **_kwargs: Any) -> None:
        self.concurrency = 50
        self._claimed, self._in_flight = {}, set()  # what its properties read: none held

    monkeypatch.setattr(batches, "claim", claim)
    monkeypatch.setattr(batches, "record", record)
    monkeypatch.setattr(worker.Worker, "__init__", init)
    steps = pipeline.Steps(every=0.001)
    undo = steps.install()
    wrapped: Any = batches  # the module's functions, wrapped, called as the worker does
    assert await wrapped.claim(None, limit=3) == [1, 2, 3]
    await asyncio.gather(wrapped.claim(None, limit=3), wrapped.record(None, [7, 8]))
    watched = worker.Worker()  # type: ignore[call-arg]
    steps.workers.append(FakeWorker(in_flight=70))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    report = steps.report()
    undo()
    put_back: tuple[Any, ...] = (batches.claim, batches.record, worker.Worker.__init__)
    assert put_back == (claim, record, init)
    assert watched in steps.workers  # a worker made after install is watched
    assert report["concurrency"] == 50
    assert report["claims"]["calls"] == 2
    assert report["claims"]["rows"] == 6
    assert report["records"]["calls"] == 1
    assert report["records"]["rows"] == 2
    assert report["claims"]["wall_s"] >= 0.02
    assert 0 < report["claims"]["busy_share"] < 1
    assert report["in_flight_average"] is not None
    assert report["in_flight_average"] > 0
