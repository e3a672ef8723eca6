"""The worker's SQLite work alone: claim, record and ledger, with nothing else in the process.

A developer's aid for levers below the noise of the same-run figures (a few CPU-µs a
delivery). A database is filled once (``bench.db.fill``: one webhook, queues of four, as
``bench.delivery_micro``); each run copies it and replays what the worker does to it with
plain ``sqlite3`` on one thread, batch after batch: ``queue_sqlite.claim`` (the claim and its
heads) and its commit, then ``queue.record_sqlite`` and ``ledger.append_sqlite`` (every head
delivered, an attempt each) and their commit, the product's own statements and pragmas. No
event loop, no aiosqlite hop, no HTTP: what it reports is the statements' CPU (user and
system: the WAL's writes and fsyncs included) a delivery, and the commits' share of it.

Runs of one setting vary by 10-20 % on a shared machine; compare minimums and medians of
several runs of each setting, alternated (``--runs``). Settings to compare: ``--batch``
(deliveries a transaction), ``--page-size`` (the file rebuilt with it), ``--pragma`` (any
extra ``PRAGMA``, repeatable). ``--split`` also says where the time goes: CPU-µs a delivery
by statement (``LABELS``: what each is for), and the Python between them.

``python -m bench.sqlite_statements [--deliveries N] [--runs R] [--batch B]
[--page-size P] [--pragma NAME=VALUE ...] [--split]``
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench import db
from consent_relay import crypto
from consent_relay.storage import due, engine, ledger, queue, queue_sqlite
from consent_relay.storage.queue import Claimed, Result

NOW = "2026-12-03T00:00:00.000Z"
NOW_MS = 4_000_000_000_000  # every head is due
SENT_HEADERS = {  # what an attempt records of the request, about its real size
    "content-type": "application/json",
    "user-agent": "consent-relay/bench",
    "webhook-id": "msg_" + "x" * 26,
    "webhook-timestamp": "1764720000",
    "webhook-signature": "v1," + "x" * 44,
}


@dataclass
class Run:
    us: float  # CPU-µs a delivery, all of it
    claim_commit_us: float
    record_commit_us: float
    deliveries: int
    transactions: int  # claim and record ones, together
    split: dict[str, float] = field(default_factory=dict)  # statement -> CPU-µs a delivery


# The worker's statements, by what they are for (``--split``).
LABELS = {
    due.SQLITE_SERVED: "claim: the webhooks served",
    due.SQLITE_DUE_OF_WEBHOOK: "claim: a webhook's due queues",
    queue.claim_sql("sqlite", True): "claim: the queues leased",
    queue_sqlite.LEASED_HEADS_WITH_MESSAGES: "claim: their heads and messages",
    queue_sqlite.HEADS_WITH_MESSAGES: "record: the next heads leased on, with messages",
    queue_sqlite._MOVED_ON: "record: which leases moved on",
    queue_sqlite._MOVE: "record: the queues moved on",
    queue_sqlite._RECORD: "record: the deliveries' outcomes",
    queue_sqlite._INSERT_ATTEMPTS: "record: the attempts",
    queue_sqlite._WITH_DEAD_LETTERS: "record: webhooks with dead letters",
    queue_sqlite._SUPERSEDE: "record: dead letters superseded",
    ledger._SQLITE_HEADS_SQL: "ledger: the chains' heads",
    ledger._SQLITE_INSERT_ENTRY: "ledger: the entries",
    ledger._SQLITE_UPSERT_HEAD: "ledger: the heads moved on",
}


class Rows(list[Any]):
    """A query's rows, fetched already: iterated, or fetched again (``fetchall``)."""

    def fetchall(self) -> list[Any]:
        return list(self)


class Timed:
    """A connection that adds each statement's CPU (its execution and, for a query, the
    rows fetched) to ``spent``, by its label (``LABELS``; else its first words)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.spent: defaultdict[str, float] = defaultdict(float)

    @staticmethod
    def name(sql: str) -> str:
        known = LABELS.get(sql)
        return known if known is not None else " ".join(sql.split()[:3])

    def execute(self, sql: str, parameters: Any = ()) -> Rows:
        began = time.process_time()
        rows = Rows(self.conn.execute(sql, parameters).fetchall())
        self.spent[self.name(sql)] += time.process_time() - began
        return rows

    def executemany(self, sql: str, rows: Iterable[Any]) -> None:
        rows = list(rows)  # built in Python: not the statement's
        began = time.process_time()
        self.conn.executemany(sql, rows)
        self.spent[self.name(sql)] += time.process_time() - began


async def filled(path: Path, deliveries: int) -> None:
    """A database of ``deliveries`` deliveries at ``path``, made by the product."""
    workdir = Path(tempfile.mkdtemp())
    settings = db.settings_for(f"sqlite:///{path}", workdir, crypto.new_key())
    async with db.open_context(settings) as ctx:
        hooks = await db.create_org_and_webhooks(ctx, "bench", ["http://127.0.0.1:9/dlv"])
        await db.fill(ctx, "bench", hooks, deliveries, max(1, deliveries // 4))


def with_page_size(source: Path, target: Path, page_size: int) -> None:
    """A copy of ``source`` rebuilt with pages of ``page_size`` bytes."""
    shutil.copy(source, target)
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute(f"PRAGMA page_size={int(page_size)}")
        conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def shape(path: Path) -> dict[str, int]:
    """What a database file holds, for checking a replay left its source alone: its page
    size, its pending deliveries, its ledger entries."""
    conn = sqlite3.connect(path)
    try:
        return {
            "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
            "pending": conn.execute(
                "SELECT count(*) FROM deliveries WHERE status = 'pending'"
            ).fetchone()[0],
            "ledger_entries": conn.execute("SELECT count(*) FROM ledger_entries").fetchone()[0],
        }
    finally:
        conn.close()


def delivered(claimed: Claimed) -> Result:
    """The result of a 204 to ``claimed``, as the worker builds it."""
    return Result(
        claimed=claimed,
        status="delivered",
        due_ms=None,
        outcome="ok",
        attempt_id=f"att_{claimed.id}",
        started_at=NOW,
        duration_ms=3,
        status_code=204,
        response_body="",
        request_headers=SENT_HEADERS,
        error=None,
        response_bytes=0,
        payload_sha256=hashlib.sha256(claimed.id.encode()).hexdigest(),
    )


def replay(source: Path, *, batch: int, pragmas: tuple[str, ...], split: bool = False) -> Run:
    """Drain a copy of ``source`` as the worker would, timing it."""
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as folder:
        path = Path(folder) / "run.db"
        shutil.copy(source, path)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            for pragma in engine.SQLITE_PRAGMAS + pragmas:
                conn.execute(f"PRAGMA {pragma}")
            return _drain(conn, batch, split)
        finally:
            conn.close()


def _drain(conn: sqlite3.Connection, batch: int, split: bool) -> Run:
    timed = Timed(conn)
    db: Any = timed if split else conn  # what the product's functions are handed
    claim_sql = queue.claim_sql("sqlite", True)
    params = {
        "now": NOW_MS,
        "limit": batch,
        "lease": "L",
        "until": NOW_MS + 60_000,
        "excluded": "[]",
    }
    done = transactions = 0
    claim_commit = record_commit = 0.0
    began = time.process_time()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        rows, messages = queue_sqlite.claim(db, claim_sql, params, True)
        at = time.process_time()
        conn.execute("COMMIT")
        claim_commit += time.process_time() - at
        if not rows:
            break
        claimed = [
            Claimed(pk, id_, hook, message, user, seq, attempts, "L", messages.get(message),
                    held, subject)
            for pk, id_, hook, message, user, seq, attempts, held, subject in rows
        ]  # fmt: skip
        results = [delivered(c) for c in claimed]
        conn.execute("BEGIN IMMEDIATE")
        kept, _ = queue.record_sqlite(
            db, results, now_ms=NOW_MS, now=NOW, with_attempts=True, chain=None
        )
        ledger.append_sqlite(db, kept, NOW)
        at = time.process_time()
        conn.execute("COMMIT")
        record_commit += time.process_time() - at
        done += len(kept)
        transactions += 2
    cpu = time.process_time() - began
    n = max(done, 1)
    spent = {name: cpu_s / n * 1e6 for name, cpu_s in timed.spent.items()}
    if split:
        spent["COMMIT (claim)"] = claim_commit / n * 1e6
        spent["COMMIT (record)"] = record_commit / n * 1e6
        spent["the rest: Python, BEGIN"] = cpu / n * 1e6 - sum(spent.values())
    return Run(
        cpu / n * 1e6, claim_commit / n * 1e6, record_commit / n * 1e6, done, transactions, spent
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100, help="deliveries a transaction")
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--pragma", action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument("--split", action="store_true", help="CPU by statement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-statements-") as folder:
        source = Path(folder) / "filled.db"
        uvloop.run(filled(source, args.deliveries))
        if args.page_size:
            rebuilt = Path(folder) / "rebuilt.db"
            with_page_size(source, rebuilt, args.page_size)
            source = rebuilt
        runs = [
            replay(source, batch=args.batch, pragmas=tuple(args.pragma), split=args.split)
            for _ in range(args.runs)
        ]
    figures = sorted(r.us for r in runs)
    print(
        f"sqlite statements: {statistics.median(figures):.1f} CPU-us/delivery median, "
        f"{figures[0]:.1f} min (runs {[round(f, 1) for f in (r.us for r in runs)]}); commits "
        f"{statistics.median(r.claim_commit_us for r in runs):.1f} claim + "
        f"{statistics.median(r.record_commit_us for r in runs):.1f} record; "
        f"{runs[0].deliveries} deliveries in {runs[0].transactions} transactions"
    )
    if args.split:  # medians over the runs, largest first
        names = {name for r in runs for name in r.split}
        medians = {name: statistics.median(r.split.get(name, 0.0) for r in runs) for name in names}
        for name, us in sorted(medians.items(), key=lambda item: -item[1]):
            print(f"  {us:6.1f}  {name}")


if __name__ == "__main__":
    main()
