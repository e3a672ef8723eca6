"""The delivery queue: append deliveries, claim due heads with a lease, record outcomes,
advance the queues.

Each (webhook, user) pair is a queue, a row of ``delivery_queues``: its last sequence number,
how many of its deliveries are pending, and its head's clock and lease (``due_ms``,
``lease_owner``). The head is the pending delivery of seq ``last_seq - pending + 1``; only a
queue (so only its head) is ever due, so at most one delivery per queue is in flight, which
keeps per-user order. The clock is the narrow queue row's, not the wide delivery row's
(migration 0009): a claim writes the queue row only, a record the delivery row once.

- **append**: a multi-row upsert on ``delivery_queues`` (one per 2,000 queues) hands every
  queue its block of sequence numbers (and locks those rows); a queue that was empty gets
  its clock: its first new delivery, the head, is due at once.
- **claim**: one short statement picks due queues, a served webhook at a time (``due``;
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), stamps a lease token, moves ``due_ms`` to the
  lease's end and returns the heads. A worker that dies simply lets ``due_ms`` come round
  again: expired leases need no reaper.
- **record**: the queues of a batch *whose lease still holds* let it go (a retried head due
  again at its retry time; a finished head leaving, the next in line due at once), and only
  their deliveries get their outcome and attempts, unique per (delivery, attempt number).
  On PostgreSQL its statement goes to asyncpg directly (``queue_pg``), on SQLite to sqlite3
  in one call (``queue_sqlite``).
  The worker goes through ``batches.record``, which keeps one bad row from failing the rest.
On PostgreSQL a batch travels as one JSON parameter (``json_to_recordset``); on SQLite the
keys a statement looks up do (``json_each``), and the record's rows are bound a row at a
time (``executemany``: ``queue_sqlite`` says why). The dialect differences are all in this
module and ``engine.py``: that unpacking, ``SKIP LOCKED``, ``pg_notify`` and the heads'
lookup.

Appending is in ``queue_append.py`` (``enqueue``, ``append`` and ``notify_workers`` are
re-exported here); claiming and recording are below.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from consent_relay.storage import (
    codec,
    dialect,
    driver,
    due,
    flow,
    queue_pg,
    queue_sqlite,
    ratelimit,
)
from consent_relay.storage.queue_append import append as append
from consent_relay.storage.queue_append import enqueue as enqueue
from consent_relay.storage.queue_append import notify_workers as notify_workers
from consent_relay.storage.tx import Tx

if TYPE_CHECKING:
    import sqlite3

    import asyncpg

Message = dict[str, Any]  # a message as sent: type, regulation, parameters (stored JSON)


# Claimed and Result are made for every delivery: plain slotted dataclasses, not frozen ones
# (a frozen dataclass's __init__ sets each field through object.__setattr__: 6 and 8 us of
# an attempt against 1, measured). Treat them as values all the same: nothing changes them.
@dataclass(slots=True)
class Claimed:
    pk: int
    id: str
    webhook_id: str
    message_id: str
    user_id: str
    seq: int
    attempt_count: int
    lease: str
    # What is sent: the message's type, regulation and parameters (stored JSON text); None
    # when the message is gone (the delivery is then given back, not sent).
    message: Message | None = None
    held_attempts: int = 0  # attempts a receiver asked us to hold: no retry used up
    subject: str | None = None  # what its message is about (flow.subject_of)


@dataclass(slots=True)
class Result:
    """What one attempt came to, ready to record."""

    claimed: Claimed
    status: str  # pending (retry later) | delivered | dead
    due_ms: int | None  # next attempt, when pending
    outcome: str
    attempt_id: str
    started_at: str
    duration_ms: int
    status_code: int | None
    response_body: str | None
    request_headers: dict[str, str] | None
    error: str | None
    response_bytes: int | None = None  # the response body's size as sent
    payload_sha256: str | None = None  # SHA-256 (hex) of the exact body sent, for the ledger
    held: bool = False  # the receiver asked us to hold it (Retry-After, 410): no retry used
    pause_until_ms: int | None = None  # pause the whole webhook until then (Retry-After)
    disable_reason: str | None = None  # disable the webhook (410 Gone), saying why


@dataclass(slots=True)
class Chain:
    """What a record may lease on to the worker that sends (chained leases): the next
    delivery of a queue whose head the record finishes, leased in the record's own
    transaction (the queue row written once, not made due and then claimed), with its
    message. At most ``limit`` of them, never one of an ``excluded``, disabled, paused or
    rate-limited webhook, nor of a webhook this batch pauses or disables."""

    lease: str
    until_ms: int
    limit: int
    excluded: Sequence[str] = ()


def chain_flags(results: Sequence[Result], chain: Chain | None) -> list[bool]:
    """Which results may lease their queue's next delivery on (``Chain``): finished ones,
    the first ``chain.limit`` of those whose webhook the batch neither pauses nor disables
    and the worker does not exclude. (The database then checks the webhook and that a next
    delivery is there.)"""
    if chain is None or chain.limit <= 0:
        return [False] * len(results)
    held = set(chain.excluded)
    held.update(
        r.claimed.webhook_id for r in results if r.pause_until_ms is not None or r.disable_reason
    )
    left = chain.limit
    flags = []
    for r in results:
        go = left > 0 and r.status != "pending" and r.claimed.webhook_id not in held
        left -= go
        flags.append(go)
    return flags


def claimed_from(row: Sequence[Any], lease: str) -> Claimed:
    """A head read with ``HEAD_COLUMNS`` then its message's type, regulation and parameters
    (None when the message is gone), leased with ``lease``."""
    pk, id_, webhook_id, message_id, user_id, seq, attempts, held, subject = row[:9]
    message = (
        None if row[9] is None else {"type": row[9], "regulation": row[10], "parameters": row[11]}
    )
    return Claimed(
        pk, id_, webhook_id, message_id, user_id, seq, attempts, lease, message, held, subject
    )


rows_source = dialect.rows_source  # the queue's batches travel as one JSON parameter
_strings = dialect.strings


# -- claiming and recording ------------------------------------------------------------------


# What the claim returns of each head, in this order (``Claimed``'s first nine fields).
HEAD_COLUMNS = "pk, id, webhook_id, message_id, user_id, seq, attempt_count, held_attempts, subject"


# The due queues a PostgreSQL claim takes, oldest due first (parameters ``now``, ``limit``,
# ``excluded``): twice ``limit`` candidates, the oldest due of the served webhooks' (``due``),
# read a webhook at a time without a lock; then, in their order, the first ``limit`` of
# them still due that no other claim holds (``SKIP LOCKED``: passed over, not waited for;
# one that a claim leased since this statement began fails ``due_ms <= :now`` on its new
# version). The candidates beyond ``limit`` let a claim that runs beside another still fill
# up, as a walk of one due index did.
# Each candidate is locked through the row version the walk read (its ``ctid``, a TID scan;
# that version is visible to this statement, so no vacuum can have reused it), in a
# ``LATERAL`` subquery: a nested loop in the candidates' order, each locked only when the
# outer ``LIMIT`` asks for one more. Joined again on the queue's key (webhook, user), with
# the lock and the order outside, the planner hashed the candidates and read the whole table
# once a claim until it was large enough for the key's index. At 10,000 due queues a claim
# of 100 costs a third less this way (4.2 ms against 2.9; 6.8 against 4.4 in a slower phase
# of the machine), and its cost no longer grows with the table. (A plain join on ``ctid``,
# the lock outside, was hashed at times too.) The lease is written through the version
# locked (``version`` again), not looked up by the key a third time (a claim of 100 2.45 ->
# 2.30 ms, six rounds of forty alternated): where the lock had to follow the row to a
# version committed after this statement's snapshot, that version is not visible to the
# update, and the queue drops out of this claim, locked but not leased, as below.
_DUE_QUEUES_PG = f"""
    SELECT q.version, q.webhook_id, q.user_id, q.head
    FROM (
        SELECT c.version, c.due_ms
        FROM ({due.served_webhooks("postgresql")}) AS e CROSS JOIN LATERAL (
            SELECT c.ctid AS version, c.due_ms FROM delivery_queues c
            WHERE c.webhook_id = e.id AND c.due_ms IS NOT NULL AND c.due_ms <= :now
            ORDER BY c.due_ms
            LIMIT 2 * :limit) AS c
        ORDER BY c.due_ms
        LIMIT 2 * :limit) AS c
    CROSS JOIN LATERAL (
        SELECT q.ctid AS version, q.webhook_id, q.user_id, q.last_seq - q.pending + 1 AS head
        FROM delivery_queues q
        WHERE q.ctid = c.version AND q.due_ms IS NOT NULL AND q.due_ms <= :now
        FOR UPDATE SKIP LOCKED) AS q
    LIMIT :limit
"""


_HEADS = ", ".join("h." + name for name in HEAD_COLUMNS.split(", "))


# The head delivery of each picked queue (``p``: version, webhook_id, user_id, head), found
# through ``ix_deliveries_queue`` a queue at a time, whatever the statistics say: the lookup
# is the first delivery at or after (webhook_id, user_id, head) in that index's order, a row
# comparison only an index on those three columns can answer (any other index, or the table,
# would have to read and sort the webhook's history), and the equality is checked outside.
# Written as three equalities, the worker's prepared claim settled at times on a generic
# plan through ``ix_deliveries_webhook`` (smaller, so cheaper while the tables held a few
# hundred rows and no statistics) and kept walking the webhook's history for the rest of its
# connection's life: the latency scenario's p99 went to seconds in about one run in six
# (docs/performance-log.md). A queue whose head this statement's snapshot cannot see (a
# record that moved it on committed after the snapshot) drops out here: it is locked but not
# leased, and the next claim takes it. (The status is checked outside the lookup too.)
_HEADS_PG = f"""
    SELECT p.version, {_HEADS}
    FROM p CROSS JOIN LATERAL (
        SELECT {HEAD_COLUMNS}, d.status FROM deliveries d
        WHERE (d.webhook_id, d.user_id, d.seq) >= (p.webhook_id, p.user_id, p.head)
        ORDER BY d.webhook_id, d.user_id, d.seq
        LIMIT 1) AS h
    WHERE h.webhook_id = p.webhook_id AND h.user_id = p.user_id AND h.seq = p.head
      AND h.status = 'pending'
"""


@functools.cache
def claim_sql(dialect: str, with_messages: bool = True) -> str:
    """The claim statement (parameters ``now``, ``limit``, ``lease``, ``until``, ``excluded``).
    On PostgreSQL it leases the due queues and returns their heads (``HEAD_COLUMNS``), with
    each head's message unless told not to; on SQLite it leases the queues ``due.pick_sqlite``
    picked (parameter ``rowids``, a JSON array), and ``queue_sqlite.claim``, which runs both,
    reads their heads.

    A lease is the queue row's: ``lease_owner`` and ``due_ms`` moved to the lease's end. A
    worker that dies simply lets ``due_ms`` come round again: expired leases need no reaper.
    The head's own (wide) row is not written."""
    if dialect == "sqlite":  # the queues ``due.pick_sqlite`` picked (``:rowids``)
        return """
            UPDATE delivery_queues SET lease_owner = :lease, due_ms = :until
            WHERE rowid IN (SELECT value FROM json_each(:rowids))
        """
    sql = f"""
        WITH p AS ({_DUE_QUEUES_PG}
        ), h AS ({_HEADS_PG}
        ), leased AS (
            UPDATE delivery_queues q SET lease_owner = :lease, due_ms = :until
            FROM h WHERE q.ctid = h.version
            RETURNING {_HEADS}
        )
    """
    if with_messages:
        return (
            sql
            + """
            SELECT c.*, m.type, m.regulation, m.parameters
            FROM leased c LEFT JOIN messages m ON m.id = c.message_id
        """
        )
    return sql + " SELECT * FROM leased"


async def claim(
    tx: Tx,
    *,
    limit: int,
    now_ms: int,
    lease: str,
    lease_ms: int,
    excluded: Sequence[str] = (),
    with_messages: bool = True,
) -> list[Claimed]:
    """Lease up to ``limit`` due heads of enabled webhooks, oldest due first (then those of
    rate-limited webhooks, as their tokens allow: ``ratelimit.take``), each with its
    message (on PostgreSQL in the same statement: one round trip a batch). Without
    ``with_messages``, no message is read (``batches.claim``'s way round an unreadable one)."""
    sql = claim_sql(tx.dialect, with_messages)
    params = _claim_params(
        limit=limit, now_ms=now_ms, lease=lease, lease_ms=lease_ms, excluded=excluded
    )
    raw = await driver.postgres(tx)
    found: dict[str, Message] = {}
    if raw is not None:
        rows: list[Any] = await queue_pg.fetch(raw, sql, params)
    else:  # the claim and its messages in one hop to aiosqlite's thread (queue_sqlite)
        rows, found = await driver.on_sqlite(
            tx, lambda db: queue_sqlite.claim(db, sql, params, with_messages)
        )
    limited: list[Any] = []
    if len(rows) < limit:  # rate-limited webhooks: as many as their tokens allow
        limited = await ratelimit.take(
            tx,
            limit=limit - len(rows),
            now_ms=now_ms,
            lease=lease,
            until_ms=now_ms + lease_ms,
            excluded=excluded,
        )
    if with_messages and raw is not None:
        found = _messages_of(rows)
    if limited and with_messages:
        found.update(await messages_by_id(tx, [r.message_id for r in limited]))
    return _claimed([*rows, *limited], found, lease)


def _claim_params(
    *, limit: int, now_ms: int, lease: str, lease_ms: int, excluded: Sequence[str]
) -> dict[str, Any]:
    """``claim_sql``'s named parameters."""
    return {
        "now": now_ms,
        "limit": limit,
        "lease": lease,
        "until": now_ms + lease_ms,
        "excluded": codec.dumps(list(excluded)),
    }


def _messages_of(rows: Iterable[Any]) -> dict[str, Message]:
    """The messages a PostgreSQL claim returned with its heads, by id (asyncpg's records:
    by name, not attribute)."""
    return {
        r["message_id"]: {
            "type": r["type"], "regulation": r["regulation"], "parameters": r["parameters"]
        }
        for r in rows
        if r["type"] is not None
    }  # fmt: skip


def _claimed(rows: Iterable[Any], found: dict[str, Message], lease: str) -> list[Claimed]:
    """The rows' first nine columns, in claim_sql's RETURNING order (asyncpg's records,
    SQLAlchemy's rows and sqlite3's tuples all index by position), as leased deliveries."""
    heads = [tuple(r)[:9] for r in rows]
    return [
        Claimed(pk, id_, webhook_id, message_id, user_id, seq, attempts, lease,
                found.get(message_id), held, subject)
        for pk, id_, webhook_id, message_id, user_id, seq, attempts, held, subject in heads
    ]  # fmt: skip


def claim_sqlite(
    db: sqlite3.Connection,
    *,
    limit: int,
    now_ms: int,
    lease: str,
    lease_ms: int,
    excluded: Sequence[str] = (),
) -> tuple[list[Claimed], bool]:
    """``claim`` on SQLite as plain ``sqlite3`` calls, for ``Store.sqlite_transaction``
    (its whole transaction in one call): the due heads of webhooks that are not rate-limited,
    with their messages, and whether rate-limited webhooks have due heads too (asked only
    when the claim came back short), which ``claim_rate_limited`` then takes in a
    transaction of its own."""
    sql = claim_sql("sqlite", True)
    params = _claim_params(
        limit=limit, now_ms=now_ms, lease=lease, lease_ms=lease_ms, excluded=excluded
    )
    rows, found = queue_sqlite.claim(db, sql, params, True)
    more = len(rows) < limit and ratelimit.any_due_sqlite(db, now_ms, excluded)
    return _claimed(rows, found, lease), more


async def claim_pg(
    raw: asyncpg.Connection[Any],
    *,
    limit: int,
    now_ms: int,
    lease: str,
    lease_ms: int,
    excluded: Sequence[str] = (),
) -> tuple[list[Claimed], bool]:
    """``claim`` on PostgreSQL's raw connection, ``claim_sqlite``'s twin: its one statement
    (a transaction of its own where no transaction is open: ``Store.pg_transaction`` with
    ``begin=False``), and whether rate-limited webhooks have due heads too (asked only when
    the claim came back short) for ``claim_rate_limited``."""
    sql = claim_sql("postgresql", True)
    params = _claim_params(
        limit=limit, now_ms=now_ms, lease=lease, lease_ms=lease_ms, excluded=excluded
    )
    rows = await queue_pg.fetch(raw, sql, params)
    found = _messages_of(rows)
    more = len(rows) < limit and await ratelimit.any_due_pg(raw, now_ms, excluded)
    return _claimed(rows, found, lease), more


async def claim_rate_limited(
    tx: Tx, *, limit: int, now_ms: int, lease: str, lease_ms: int, excluded: Sequence[str]
) -> list[Claimed]:
    """Due heads of rate-limited webhooks, as their tokens allow (``ratelimit.take``), with
    their messages: the rest of a claim made by ``claim_sqlite``."""
    limited = await ratelimit.take(
        tx,
        limit=limit,
        now_ms=now_ms,
        lease=lease,
        until_ms=now_ms + lease_ms,
        excluded=excluded,
    )
    if not limited:
        return []
    found = await messages_by_id(tx, [r.message_id for r in limited])
    return _claimed(limited, found, lease)


async def record(
    tx: Tx,
    results: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    with_attempts: bool = True,
    chain: Chain | None = None,
    chained: list[Claimed] | None = None,
) -> list[Result]:
    """Record a batch; returns the results whose lease still held (the others are dropped:
    another worker owns those deliveries now). One row the database refuses fails the whole
    statement: ``batches.record`` isolates it (and, as a last resort, records a delivery's
    state ``with_attempts=False``). With ``chain``, the next deliveries it leased on are
    added to ``chained`` (valid once the transaction commits)."""
    if not results:
        return []
    raw = await driver.postgres(tx)
    if raw is not None:
        kept, leased_on = await record_pg(
            raw, results, now_ms=now_ms, now=now, with_attempts=with_attempts, chain=chain
        )
    else:
        kept, leased_on = await driver.on_sqlite(  # one hop to aiosqlite's thread
            tx,
            lambda db: record_sqlite(
                db, results, now_ms=now_ms, now=now, with_attempts=with_attempts, chain=chain
            ),
        )
    if chained is not None:
        chained.extend(leased_on)
    await flow_changes(tx, kept, now)
    return kept


async def record_pg(
    raw: asyncpg.Connection[Any],
    results: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    with_attempts: bool,
    chain: Chain | None,
    with_ledger: bool = False,
) -> tuple[list[Result], list[Claimed]]:
    """``queue_pg.record`` with what ``chain`` allows, on PostgreSQL's raw connection (inside
    ``record``'s transaction, or as a statement of its own: ``Store.pg_transaction``), with
    ``with_ledger`` the ledger's entries of those delivered too (``ledger.pg_ctes``):
    the results recorded and the next deliveries leased on."""
    flags = chain_flags(results, chain)
    lease = None if chain is None else chain.lease
    until_ms = None if chain is None else chain.until_ms
    held, heads = await queue_pg.record(
        raw, results, now, now_ms, with_attempts, flags, lease, until_ms, with_ledger
    )
    kept = [r for r in results if r.claimed.pk in held]
    return kept, [] if lease is None else [claimed_from(row, lease) for row in heads]


def record_sqlite(
    db: sqlite3.Connection,
    results: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    with_attempts: bool,
    chain: Chain | None,
) -> tuple[list[Result], list[Claimed]]:
    """``queue_sqlite.record`` with what ``chain`` allows, on aiosqlite's thread (``record``,
    and ``batches`` with the ledger in the same hop): the results recorded and the next
    deliveries leased on."""
    kept, heads = queue_sqlite.record(
        db,
        results,
        now_ms=now_ms,
        now=now,
        with_attempts=with_attempts,
        flags=chain_flags(results, chain),
        lease=None if chain is None else chain.lease,
        until_ms=None if chain is None else chain.until_ms,
    )
    return kept, [] if chain is None else [claimed_from(row, chain.lease) for row in heads]


async def flow_changes(tx: Tx, kept: Sequence[Result], now: str) -> None:
    """What the results ask of their webhooks, in the record transaction: pauses
    (Retry-After) and disabling (410 Gone). Nothing for a batch of plain outcomes."""
    pauses = [
        (r.claimed.webhook_id, r.pause_until_ms, r.outcome)
        for r in kept
        if r.pause_until_ms is not None
    ]
    await flow.pause(tx, pauses)
    disabled = [(r.claimed.webhook_id, r.disable_reason) for r in kept if r.disable_reason]
    await flow.disable(tx, disabled, now)


async def next_due_ms(tx: Tx, after_ms: int) -> int | None:
    """When the next delivery falls due (after ``after_ms``), to sleep until then."""
    row = (
        await tx.conn.execute(
            text(due.NEXT_DUE),
            {"after": after_ms},
        )
    ).first()
    return None if row is None or row.due is None else int(row.due)


async def release(tx: Tx, claimed: Sequence[Claimed], now_ms: int) -> None:
    """Give leases back unsent (graceful shutdown): due again at once, attempt not counted."""
    if not claimed:
        return
    rows = codec.dumps(
        [{"w": c.webhook_id, "u": c.user_id, "lease": c.lease} for c in sorted(
            claimed, key=lambda c: (c.webhook_id, c.user_id))]
    )  # fmt: skip
    source = rows_source(tx.dialect, [("w", "text"), ("u", "text"), ("lease", "text")])
    await tx.conn.execute(
        text(
            f"""
            UPDATE delivery_queues SET due_ms = :now, lease_owner = NULL
            FROM {source}
            WHERE delivery_queues.webhook_id = v.w AND delivery_queues.user_id = v.u
              AND delivery_queues.lease_owner = v.lease
            """
        ),
        {"rows": rows, "now": now_ms},
    )


async def messages_by_id(tx: Tx, message_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The messages a batch needs: type, regulation and parameters (as stored JSON text)."""
    if not message_ids:
        return {}
    result = await tx.conn.execute(
        text(
            "SELECT id, type, regulation, parameters FROM messages "
            f"WHERE id IN ({_strings(tx.dialect, 'ids')})"
        ),
        {"ids": codec.dumps(list(dict.fromkeys(message_ids)))},
    )
    return {
        r.id: {"type": r.type, "regulation": r.regulation, "parameters": r.parameters}
        for r in result
    }
