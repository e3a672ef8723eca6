"""The complete floor: the minimal loop (bench/minimal.py) plus everything the engine must do.

Where the minimal loop only claims, POSTs a fixed body and marks rows done, this one does, per
delivery, the work no persistent webhook engine with this product's guarantees can skip, in
the simplest way there is, and nothing else:

- per-user order: ``count`` deliveries in queues of four per user (as the bench's fill), only
  each queue's head due; a finished head makes the next one due, in the same transaction;
- the claim reads each delivery's message (its parameters, ~1 KB of JSON) with it;
- the body is rendered from those parameters and signed (Standard Webhooks: ``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature``, HMAC-SHA256 with ``hmac``/``hashlib``);
- each attempt is timed and recorded as a row; each delivered message leaves a ledger row
  with the SHA-256 of the body sent, hash-chained as the product's ledger is (one chain per
  organization, the bench's one: each entry numbered after the chain's head and holding the
  SHA-256 of the previous entry's hash and its own fields; the head row locked while a record
  chains from it, the entries hashed in Python, ``chain``);
- SQLite commits with ``synchronous=FULL`` (the engine's setting), PostgreSQL as configured.

No Consent Relay code: a table of messages, one of deliveries, one of attempts, one of ledger
entries and its head. What it reaches next to the bare client in the same run is what the
engine's guarantees cost at the least on this machine; the engine's distance to it is its own
Python.
Run as ``python -m bench.procs complete ...`` (a child of ``bench``), like the minimal loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bench import minimal

BATCH = 100
LEASE_MS = 60_000
PER_USER = 4  # deliveries a queue, as the bench's fill (messages over messages/4 users)
KEY = b"complete-floor-signing-key-32-by"
ORGANIZATION = "org_complete"  # the ledger's one chain (the bench's one organization)
WEBHOOK = "wh_complete"
GENESIS = "0" * 64  # the first entry's prev_hash

Claimed = tuple[int, str, int, str]  # pk, user_id, seq, message parameters (JSON text)
Done = tuple[int, str, int, int, str, int, int, str]
# pk, user_id, seq, attempt number, started_at, duration_ms, status code, body SHA-256
LedgerRow = tuple[int, str, int, str, int, str, str, str]
# seq, user_id, delivery pk, payload SHA-256, status code, at, prev_hash, entry_hash


def entry_fields(seq: int, pk: int, user_id: str, at: str, status: int, sha: str) -> bytes:
    """What an entry's hash covers, as the product's ledger entry: organization, number,
    message, delivery, type, user, webhook, time, status code, body hash (a JSON array)."""
    return orjson.dumps(
        (ORGANIZATION, seq, f"msg_{pk}", pk, "event.created", user_id, WEBHOOK, at, status, sha)
    )


def chain(head: tuple[int, str], results: Sequence[Done], at: str) -> list[LedgerRow]:
    """The ledger rows of ``results``, numbered and hashed after ``head`` (last seq, hash)."""
    seq, prev = head
    rows: list[LedgerRow] = []
    for pk, user_id, _s, _n, _started, _ms, status, sha in results:
        seq += 1
        fields = entry_fields(seq, pk, user_id, at, status, sha)
        digest = hashlib.sha256(prev.encode() + b"\n" + fields).hexdigest()
        rows.append((seq, user_id, pk, sha, status, at, prev, digest))
        prev = digest
    return rows


@dataclass(frozen=True)
class Store:
    claim: Callable[[str, int, int], Awaitable[list[Claimed]]]
    done: Callable[[str, Sequence[Done], int], Awaitable[None]]
    close: Callable[[], Awaitable[None]]
    counts: Callable[[], Awaitable[tuple[int, int, int]]]  # delivered, attempts, ledger rows
    ledger: Callable[[], Awaitable[list[LedgerRow]]]  # the chain, in sequence order


_COUNTS = """
    SELECT (SELECT count(*) FROM complete_queue WHERE status = 'delivered'),
           (SELECT count(*) FROM complete_attempts), (SELECT count(*) FROM complete_ledger)
"""


_TABLES = [
    "CREATE TABLE complete_messages (id {pk}, parameters {text} NOT NULL)",
    "CREATE TABLE complete_queue ({pk_col}, user_id {text} NOT NULL, seq bigint NOT NULL,"
    " message_id bigint NOT NULL, status {text} NOT NULL DEFAULT 'pending',"
    " attempt_count integer NOT NULL DEFAULT 0, due_ms bigint, lease {text})",
    "CREATE INDEX complete_due ON complete_queue (due_ms) WHERE due_ms IS NOT NULL",
    "CREATE INDEX complete_order ON complete_queue (user_id, seq)",
    "CREATE TABLE complete_attempts ({pk_col}, delivery_pk bigint NOT NULL,"
    " attempt_number integer NOT NULL, started_at {text} NOT NULL, duration_ms integer NOT NULL,"
    " status_code integer, UNIQUE (delivery_pk, attempt_number))",
    "CREATE TABLE complete_ledger (seq bigint PRIMARY KEY, user_id {text} NOT NULL,"
    " delivery_pk bigint NOT NULL, payload_sha256 {text} NOT NULL, status_code integer,"
    " at {text} NOT NULL, prev_hash {text} NOT NULL, entry_hash {text} NOT NULL)",
    "CREATE INDEX complete_ledger_user ON complete_ledger (user_id, seq)",
    "CREATE TABLE complete_ledger_head (id integer PRIMARY KEY, last_seq bigint NOT NULL,"
    " last_hash {text} NOT NULL)",
    f"INSERT INTO complete_ledger_head VALUES (1, 0, '{GENESIS}')",
]
_LEDGER_ROWS = (
    "SELECT seq, user_id, delivery_pk, payload_sha256, status_code, at, prev_hash, entry_hash"
    " FROM complete_ledger ORDER BY seq"
)

# As the engine's (migration 0010): B-tree comparisons by memcmp, not the locale's strcoll.
_PG_TEXT = 'text COLLATE "C"'

_PG_CLAIM = """
    WITH c AS (
        UPDATE complete_queue SET lease = $1, due_ms = $2
        WHERE pk IN (SELECT pk FROM complete_queue WHERE due_ms IS NOT NULL AND due_ms <= $3
                     ORDER BY due_ms LIMIT $4 FOR UPDATE SKIP LOCKED)
        RETURNING pk, user_id, seq, message_id
    )
    SELECT c.pk, c.user_id, c.seq, m.parameters
    FROM c JOIN complete_messages m ON m.id = c.message_id
"""
_PG_DONE = """
    UPDATE complete_queue SET status = 'delivered', due_ms = NULL, lease = NULL,
        attempt_count = attempt_count + 1
    WHERE pk = ANY($1::bigint[]) AND lease = $2
"""
_PG_ATTEMPTS = """
    INSERT INTO complete_attempts (delivery_pk, attempt_number, started_at, duration_ms,
                                   status_code)
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::int[])
"""
_PG_HEAD = "SELECT last_seq, last_hash FROM complete_ledger_head WHERE id = 1 FOR UPDATE"
_PG_LEDGER = """
    WITH e AS (
        INSERT INTO complete_ledger (seq, user_id, delivery_pk, payload_sha256, status_code, at,
                                     prev_hash, entry_hash)
        SELECT s, u, p, h, c, $5, ph, eh
        FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $6::int[], $7::text[],
                    $8::text[]) AS v(s, u, p, h, c, ph, eh)
    )
    UPDATE complete_ledger_head SET last_seq = $9, last_hash = $10 WHERE id = 1
"""
_PG_NEXT = """
    UPDATE complete_queue q SET due_ms = $3
    FROM unnest($1::text[], $2::bigint[]) AS f(u, s)
    WHERE q.user_id = f.u AND q.seq = f.s + 1 AND q.status = 'pending' AND q.due_ms IS NULL
"""
_SQLITE_CLAIM = """
    UPDATE complete_queue SET lease = ?, due_ms = ?
    WHERE pk IN (SELECT pk FROM complete_queue INDEXED BY complete_due
                 WHERE due_ms IS NOT NULL AND due_ms <= ? ORDER BY due_ms LIMIT ?)
    RETURNING pk, user_id, seq, message_id
"""


def _rows(count: int) -> list[tuple[int, str, int, int, int | None]]:
    """(message id, user, seq, message id, due) for ``count`` deliveries, four a user."""
    return [
        (
            n + 1,
            f"user-{n // PER_USER:07d}",
            n % PER_USER + 1,
            n + 1,
            0 if n % PER_USER == 0 else None,
        )
        for n in range(count)
    ]


def _parameters(number: int, user_id: str) -> str:
    pad = "x" * 700
    entity = {"id": f"evt-{number:09d}", "user": {"id": user_id}, "metadata": {"pad": pad}}
    return orjson.dumps({"entity": entity}).decode()


async def open_store(db_url: str, count: int, *, fill: bool = True) -> Store:
    if db_url.startswith("sqlite"):
        return _sqlite_store(db_url.split("///", 1)[1], count, fill)
    import asyncpg

    pool: Any = await asyncpg.create_pool(db_url, min_size=2, max_size=2)
    if fill:
        for statement in _TABLES:
            await pool.execute(
                statement.format(
                    pk="bigint PRIMARY KEY", pk_col="pk bigserial PRIMARY KEY", text=_PG_TEXT
                )
            )
        rows = _rows(count)
        await pool.copy_records_to_table(
            "complete_messages", records=[(m, _parameters(m, u)) for m, u, _s, _i, _d in rows]
        )
        await pool.copy_records_to_table(
            "complete_queue",
            records=[(u, s, i, d) for _m, u, s, i, d in rows],
            columns=["user_id", "seq", "message_id", "due_ms"],
        )
        await pool.execute("VACUUM ANALYZE complete_queue")
        await pool.execute("VACUUM ANALYZE complete_messages")

    async def claim(lease: str, now_ms: int, limit: int) -> list[Claimed]:
        rows = await pool.fetch(_PG_CLAIM, lease, now_ms + LEASE_MS, now_ms, limit)
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def done(lease: str, results: Sequence[Done], now_ms: int) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_PG_DONE, [r[0] for r in results], lease)
            await conn.execute(
                _PG_ATTEMPTS,
                [r[0] for r in results],
                [r[3] for r in results],
                [r[4] for r in results],
                [r[5] for r in results],
                [r[6] for r in results],
            )
            await conn.execute(_PG_NEXT, [r[1] for r in results], [r[2] for r in results], now_ms)
            # The chain last: its head stays locked from here to the commit.
            head = await conn.fetchrow(_PG_HEAD)
            rows = chain((int(head[0]), head[1]), results, at)
            await conn.execute(
                _PG_LEDGER,
                *([row[i] for row in rows] for i in (0, 1, 2, 3)),
                at,
                *([row[i] for row in rows] for i in (4, 6, 7)),
                rows[-1][0],
                rows[-1][7],
            )

    async def close() -> None:
        await pool.close()

    async def counts() -> tuple[int, int, int]:
        row = await pool.fetchrow(_COUNTS)
        return int(row[0]), int(row[1]), int(row[2])

    async def ledger() -> list[LedgerRow]:
        return [_ledger_row(r) for r in await pool.fetch(_LEDGER_ROWS)]

    return Store(claim, done, close, counts, ledger)


def _sqlite_store(path: str, count: int, fill: bool) -> Store:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    if fill:
        for statement in _TABLES:
            conn.execute(
                statement.format(
                    pk="INTEGER PRIMARY KEY", pk_col="pk INTEGER PRIMARY KEY", text="text"
                )
            )
        rows = _rows(count)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO complete_messages (id, parameters) VALUES (?, ?)",
            [(m, _parameters(m, u)) for m, u, _s, _i, _d in rows],
        )
        conn.executemany(
            "INSERT INTO complete_queue (user_id, seq, message_id, due_ms) VALUES (?, ?, ?, ?)",
            [(u, s, i, d) for _m, u, s, i, d in rows],
        )
        conn.execute("COMMIT")

    async def claim(lease: str, now_ms: int, limit: int) -> list[Claimed]:
        conn.execute("BEGIN IMMEDIATE")
        claimed = conn.execute(_SQLITE_CLAIM, (lease, now_ms + LEASE_MS, now_ms, limit)).fetchall()
        found = []
        for pk, user_id, seq, message_id in claimed:
            row = conn.execute(
                "SELECT parameters FROM complete_messages WHERE id = ?", (message_id,)
            ).fetchone()
            found.append((pk, user_id, seq, row[0]))
        conn.execute("COMMIT")
        return found

    async def done(lease: str, results: Sequence[Done], now_ms: int) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE complete_queue SET status = 'delivered', due_ms = NULL, lease = NULL,"
            " attempt_count = attempt_count + 1 WHERE pk = ? AND lease = ?",
            [(r[0], lease) for r in results],
        )
        conn.executemany(
            "INSERT INTO complete_attempts (delivery_pk, attempt_number, started_at,"
            " duration_ms, status_code) VALUES (?, ?, ?, ?, ?)",
            [(r[0], r[3], r[4], r[5], r[6]) for r in results],
        )
        conn.executemany(
            "UPDATE complete_queue SET due_ms = ? WHERE user_id = ? AND seq = ?"
            " AND status = 'pending' AND due_ms IS NULL",
            [(now_ms, r[1], r[2] + 1) for r in results],
        )
        # The write transaction is exclusive: the head needs no lock of its own.
        last_seq, last_hash = conn.execute(
            "SELECT last_seq, last_hash FROM complete_ledger_head WHERE id = 1"
        ).fetchone()
        rows = chain((int(last_seq), last_hash), results, at)
        conn.executemany(
            "INSERT INTO complete_ledger (seq, user_id, delivery_pk, payload_sha256,"
            " status_code, at, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "UPDATE complete_ledger_head SET last_seq = ?, last_hash = ? WHERE id = 1",
            (rows[-1][0], rows[-1][7]),
        )
        conn.execute("COMMIT")

    async def close() -> None:
        conn.close()

    async def counts() -> tuple[int, int, int]:
        row = conn.execute(_COUNTS).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    async def ledger() -> list[LedgerRow]:
        return [_ledger_row(r) for r in conn.execute(_LEDGER_ROWS).fetchall()]

    return Store(claim, done, close, counts, ledger)


def _ledger_row(r: Any) -> LedgerRow:
    return (int(r[0]), r[1], int(r[2]), r[3], int(r[4]), r[5], r[6], r[7])


def signed_request(pk: int, parameters: str) -> tuple[bytes, dict[str, str]]:
    """The body rendered from the message's parameters and its Standard Webhooks headers."""
    body = orjson.dumps({"type": "event.created", "data": orjson.loads(parameters)})
    message_id = f"msg_{pk}"
    timestamp = str(int(time.time()))
    digest = hmac.new(KEY, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    return body, headers


async def drain(
    store: Store, post: minimal.Post, url: str, _body: bytes, senders: int
) -> tuple[int, int]:
    """As ``minimal.drain``, with the complete work per delivery (module docstring)."""
    todo: asyncio.Queue[Claimed] = asyncio.Queue()
    results: asyncio.Queue[Done] = asyncio.Queue()
    limit = 4 * senders  # leases held at most, as the real worker bounds them
    held = ok = errors = 0
    room = asyncio.Event()
    drained = False
    lease = "complete"

    async def claimer() -> None:
        nonlocal held, drained
        idle = 0
        while True:
            free = limit - held
            if free < min(BATCH, limit // 4):
                room.clear()
                await room.wait()
                continue
            pks = await store.claim(lease, int(time.time() * 1000), min(free, BATCH))
            if not pks:
                if held == 0:
                    idle += 1
                    if idle > 3:  # nothing due and nothing in flight: the queues are empty
                        drained = True
                        room.set()
                        return
                room.clear()
                await room.wait() if held else await asyncio.sleep(0.01)
                continue
            idle = 0
            held += len(pks)
            for item in pks:
                todo.put_nowait(item)

    async def sender() -> None:
        nonlocal ok, errors
        while True:
            pk, user_id, seq, parameters = await todo.get()
            body, headers = signed_request(pk, parameters)
            started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            began = time.perf_counter()
            status = 0
            try:
                status = await post(url, body, headers)
                ok += 200 <= status < 300
            except minimal.FAILED:
                errors += 1
            duration_ms = int((time.perf_counter() - began) * 1000)
            sha = hashlib.sha256(body).hexdigest()
            results.put_nowait((pk, user_id, seq, 1, started_at, duration_ms, status, sha))

    async def recorder() -> None:
        nonlocal held
        while not (drained and held == 0):
            batch = await minimal.next_batch(results)
            if batch:
                await store.done(lease, batch, int(time.time() * 1000))
                held -= len(batch)
                room.set()

    await minimal.run_loops(claimer, sender, recorder, senders)
    return ok, errors
