"""bench.sqlite_statements replays the worker's SQLite work on a copy of a filled database:
every delivery claimed, recorded and entered in the ledger, the source left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import sqlite_statements


async def test_a_replay_delivers_every_delivery_on_a_copy(tmp_path: Path) -> None:
    source = tmp_path / "filled.db"
    await sqlite_statements.filled(source, 300)
    run = sqlite_statements.replay(source, batch=100, pragmas=())
    assert run.deliveries == 300
    # 75 queues of four: a claim takes one head a queue, so four claims and four records
    assert run.transactions == 8
    assert run.us > 0
    assert run.record_commit_us > 0
    # the source is untouched, ready for the next run
    assert sqlite_statements.shape(source) == {
        "page_size": 4096,
        "pending": 300,
        "ledger_entries": 0,
    }


async def test_page_size_rebuild_and_extra_pragmas(tmp_path: Path) -> None:
    source = tmp_path / "filled.db"
    await sqlite_statements.filled(source, 40)
    rebuilt = tmp_path / "rebuilt.db"
    sqlite_statements.with_page_size(source, rebuilt, 8192)
    assert sqlite_statements.shape(rebuilt)["page_size"] == 8192
    run = sqlite_statements.replay(rebuilt, batch=25, pragmas=("cache_size=-1000",))
    assert (run.deliveries, run.transactions) == (40, 8)  # 10 queues of four


async def test_split_names_every_statement_of_the_worker(tmp_path: Path) -> None:
    source = tmp_path / "filled.db"
    await sqlite_statements.filled(source, 40)
    run = sqlite_statements.replay(source, batch=100, pragmas=(), split=True)
    assert run.deliveries == 40
    # Each statement the replay ran is one the worker runs, named for what it is for.
    labels = set(sqlite_statements.LABELS.values())
    ran = set(run.split) - {"COMMIT (claim)", "COMMIT (record)", "the rest: Python, BEGIN"}
    assert ran <= labels, ran - labels
    assert {
        "claim: the queues leased",
        "claim: their heads and messages",
        "record: the queues moved on",
        "record: the deliveries' outcomes",
        "record: the attempts",
        "ledger: the entries",
    } <= ran
    assert sum(run.split.values()) == pytest.approx(run.us)
