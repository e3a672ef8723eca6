"""The worker's SQLite connection leaves its write-ahead log's checkpoints to a thread of
their own (``storage.checkpoint``): its commits on the event loop's thread no longer copy the
log back and wait for the disk every thousand pages; the thread does it every few commits,
and the connection's own automatic checkpoint stays as the bound should the thread fall
behind."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from consent_relay.storage import checkpoint, inspect_driver, privacy
from consent_relay.storage.store import Store

GROUP = checkpoint.EVERY  # commits between two of the thread's checkpoints


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: PostgreSQL checkpoints on its own."""
    return f"sqlite:///{tmp_path / 'test.db'}"


def _log_bytes(store: Store) -> int:
    """The size of the database's write-ahead log file (it grows, and is written again from
    its start once a checkpoint has copied all of it)."""
    assert store.sqlite_file is not None
    wal = Path(f"{store.sqlite_file}-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _empty_log(store: Store) -> None:
    """Copy the log back and truncate it (the erasure's checkpoint), so that what follows
    starts from an empty file."""
    assert await privacy.checkpoint_sqlite(str(store.sqlite_file))
    assert _log_bytes(store) == 0


async def _write(store: Store, prefix: str, commits: int) -> None:
    """``commits`` transactions of the worker's connection, each writing a few pages."""
    for i in range(commits):
        await store.sqlite_transaction(inspect_driver.filler(f"{prefix}{i}", rows=4, size=3000))


async def _checkpointed(store: Store, runs: int) -> None:
    """Wait (on the thread's own signal) until it has run ``runs`` checkpoints."""
    assert store.checkpointer is not None
    assert await asyncio.to_thread(store.checkpointer.wait_for, runs, 30.0)


async def test_the_connection_checkpoints_only_past_the_bound(store: Store) -> None:
    pages = await store.sqlite_transaction(inspect_driver.autocheckpoint_pages)
    assert pages == checkpoint.BOUND_PAGES > 1000  # SQLite's default is 1,000


async def test_a_thread_checkpoints_every_few_commits(store: Store) -> None:
    await _write(store, "a", GROUP * 3)
    await _checkpointed(store, 3)
    checkpointer = store.checkpointer
    assert checkpointer is not None
    assert checkpointer.runs == 3  # one a group of commits, none more
    assert checkpointer.last is not None
    busy, in_log, copied = checkpointer.last
    assert busy == 0
    assert in_log > 0
    assert copied == in_log  # all of it: nobody was reading
    assert checkpointer.running
    assert checkpointer.thread_id != threading.get_ident()  # not the event loop's thread


async def test_the_log_stays_short_though_the_connection_never_checkpoints(store: Store) -> None:
    await _write(store, "first", 1)  # the connection and its thread opened
    await _empty_log(store)
    assert store.checkpointer is not None
    runs = store.checkpointer.runs
    await _write(store, "g0-", GROUP - 1)  # completes the first group of commits
    one_group = _log_bytes(store)
    await _checkpointed(store, runs + 1)
    for group in range(1, 6):
        await _write(store, f"g{group}-", GROUP)
        await _checkpointed(store, runs + 1 + group)
    # Six groups written, far under the connection's bound: without the thread's checkpoints
    # the log would hold all six; each group starts it afresh instead.
    page = await store.sqlite_transaction(inspect_driver.page_size)
    assert one_group > GROUP * page  # a group writes pages enough to tell
    assert _log_bytes(store) <= 2 * one_group


async def test_the_bound_holds_the_log_when_the_thread_is_gone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "BOUND_PAGES", 40)
    await _write(store, "first", 1)  # the connection opened with this bound
    assert store.checkpointer is not None
    await asyncio.to_thread(store.checkpointer.stop)
    assert not store.checkpointer.running
    await _empty_log(store)
    await _write(store, "g", GROUP * 6)  # hundreds of pages
    page = await store.sqlite_transaction(inspect_driver.page_size)
    frames = _log_bytes(store) // (page + 24)
    # The connection's own checkpoint at 40 pages, the log written again from its start:
    # never much more than the bound and one transaction's pages.
    assert 0 < frames <= 40 + 20


async def test_closing_the_store_ends_the_thread(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'closing.db'}")
    await store.migrate()
    await store.sqlite_transaction(lambda _db: None)
    checkpointer = store.checkpointer
    assert checkpointer is not None
    assert checkpointer.running
    await store.close()
    assert not checkpointer.running
