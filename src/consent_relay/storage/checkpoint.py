"""SQLite's write-ahead log checkpointed on a thread of its own, off the event loop.

SQLite copies the log's pages back into the database file (a checkpoint) in the commit that
takes the log past ``wal_autocheckpoint`` pages, on the committing connection. For the
worker's connection (``Store.sqlite_transaction``) that is the event loop's thread: every
twenty transactions or so one ``COMMIT`` copied a thousand pages and waited for two syncs
of the disk while no request ran (the 29 slowest of 572 commits, 0.158 s of wall of a 5.45 s
drain; docs/performance-log.md, nineteenth and twenty-eighth sessions).

``Checkpointer`` runs them on a thread with its own connection instead: the event loop tells
it of each commit (``committed``, a counter), and every ``EVERY`` commits it wakes the
thread, which runs a ``PASSIVE`` checkpoint (it copies what no reader still needs, waits for
no lock, and lets the next writer start the log afresh once all is copied). Python's
``sqlite3`` lets the GIL go while SQLite works, so the copy and the syncs run beside the loop.
The worker's connection keeps an automatic checkpoint of its own at ``BOUND_PAGES``: should the
thread fall behind or stop, the log still cannot grow past that before the loop checkpoints
it as before. Nothing changes for durability: a checkpoint only copies committed pages, and a
crash in the middle of one leaves them in the log, where SQLite finds them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from consent_relay.storage import engine as engines

log = logging.getLogger("consent_relay.storage")

EVERY = 16  # commits between two checkpoints (a worker's record writes tens of pages)
# The worker's connection's own automatic checkpoint, the bound on the log should the thread
# fall behind: ten times SQLite's default of 1,000 pages (40 MB with 4 KiB pages).
BOUND_PAGES = 10_000


class Checkpointer:
    """Checkpoints of the SQLite database at ``path``, on a thread of their own, every
    ``every`` commits reported by ``committed`` (module docstring)."""

    def __init__(self, path: Path, every: int = EVERY) -> None:
        self._path = path
        self._every = every
        self._since = 0
        self._wanted = threading.Event()
        self._stopping = False
        self._done = threading.Condition()
        self.runs = 0  # checkpoints run
        # The last one's (busy, pages in the log, pages copied): SQLite's answer.
        self.last: tuple[int, int, int] | None = None
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A write transaction committed (called on the event loop's thread: a count, and
        every ``every`` commits a wake-up of the thread)."""
        self._since += 1
        if self._since >= self._every:
            self._since = 0
            self._wanted.set()

    def wait_for(self, runs: int, timeout: float) -> bool:
        """Wait until ``runs`` checkpoints have run in all (False if ``timeout`` seconds
        passed first)."""
        with self._done:
            return self._done.wait_for(lambda: self.runs >= runs, timeout)

    @property
    def thread_id(self) -> int | None:
        """The thread's identifier."""
        return self._thread.ident

    @property
    def running(self) -> bool:
        """Whether the thread is still there."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Let the thread end, after the checkpoint it may be running."""
        self._stopping = True
        self._wanted.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error:
            log.exception("checkpoints: cannot open %s (the bound holds the log)", self._path)
            return
        try:
            for pragma in engines.SQLITE_PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                try:
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    # The next wake-up tries again; meanwhile the bound holds the log.
                    log.exception("checkpoint of %s failed", self._path)
                    continue
                with self._done:
                    self.runs += 1
                    self.last = (int(row[0]), int(row[1]), int(row[2]))
                    self._done.notify_all()
        finally:
            conn.close()
