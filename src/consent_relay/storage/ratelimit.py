"""Rate-limited webhooks' share of a claim: a token bucket per webhook in ``webhook_flow``,
taken in the claim transaction, so that every worker of every process together keeps to
``webhooks.rate_limit``.

The main claim statement (``queue.claim_sql``) leaves rate-limited webhooks out; this module
then, in the same transaction, locks the buckets of the rate-limited webhooks that have a due
head (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so a claim never waits for another's; SQLite
has one writer anyway), refills them (``flow.refill``), leases at most the whole tokens'
worth of each one's due heads, and writes the buckets back. Without rate-limited webhooks it
costs one statement that finds none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from consent_relay.storage import codec, dialect, flow
from consent_relay.storage.tx import Tx

if TYPE_CHECKING:
    import sqlite3

    import asyncpg


def _buckets_sql(name: str, locked: bool) -> str:
    lock = " FOR UPDATE OF f SKIP LOCKED" if name == "postgresql" and locked else ""
    return f"""
        SELECT w.id, w.rate_limit, f.tokens, f.refilled_ms
        FROM webhooks w JOIN webhook_flow f ON f.webhook_id = w.id
        WHERE w.rate_limit IS NOT NULL AND w.enabled
          AND (f.paused_until_ms IS NULL OR f.paused_until_ms <= :now)
          AND w.id NOT IN ({dialect.strings(name, "excluded")})
          AND EXISTS (
              SELECT 1 FROM delivery_queues q
              WHERE q.webhook_id = w.id AND q.due_ms IS NOT NULL AND q.due_ms <= :now)
        ORDER BY w.id
        {lock}
    """


def _take_sql(name: str) -> str:
    """Lease up to ``:n`` due queues of webhook ``:w``, oldest due first (the queue row's
    lease, as ``queue.claim_sql``); returns each one's key and head seq.

    The rows are leased by the versions the lock took (PostgreSQL's ``ctid``, SQLite's
    rowid): written as ``(webhook_id, user_id) IN (...)``, PostgreSQL's planner hashed the
    picked keys and read the whole queue table each take (10,000 queues: 3.0 ms a take of
    100, 0.9 by the versions). One whose lock had to follow it to a version newer than the
    statement's snapshot is not visible to the update: it is not leased, nor its token
    spent (``take`` counts the heads returned)."""
    if name == "postgresql":
        picked = "ctid = ANY(ARRAY(SELECT q.ctid FROM delivery_queues q"
        lock, close = " FOR UPDATE SKIP LOCKED", "))"
    else:
        picked = "rowid IN (SELECT q.rowid FROM delivery_queues q"
        lock, close = "", ")"
    return f"""
        UPDATE delivery_queues SET lease_owner = :lease, due_ms = :until
        WHERE {picked}
            WHERE q.webhook_id = :w AND q.due_ms IS NOT NULL AND q.due_ms <= :now
            ORDER BY q.due_ms
            LIMIT :n{lock}{close}
        RETURNING webhook_id AS w, user_id AS u, last_seq - pending + 1 AS seq
    """


def _heads_sql(name: str) -> str:
    """The head deliveries of the queues ``_take_sql`` leased, as the claim returns them
    (``queue.HEAD_COLUMNS``; a separate statement, so that PostgreSQL's snapshot sees every
    head the lease returned)."""
    source = dialect.rows_source(name, [("w", "text"), ("u", "text"), ("seq", "bigint")])
    return f"""
        SELECT d.pk, d.id, d.webhook_id, d.message_id, d.user_id, d.seq, d.attempt_count,
            d.held_attempts, d.subject
        FROM {source} JOIN deliveries d
          ON d.webhook_id = v.w AND d.user_id = v.u AND d.seq = v.seq
        WHERE d.status = 'pending'
    """


_BUCKETS_SQL = {
    (name, locked): _buckets_sql(name, locked)
    for name in ("postgresql", "sqlite")
    for locked in (True, False)
}
TAKE_SQL = {name: _take_sql(name) for name in ("postgresql", "sqlite")}
_HEADS_SQL = {name: _heads_sql(name) for name in ("postgresql", "sqlite")}


async def take(
    tx: Tx, *, limit: int, now_ms: int, lease: str, until_ms: int, excluded: Sequence[str]
) -> list[Any]:
    """Lease up to ``limit`` due heads of rate-limited webhooks, as their tokens allow; the
    rows as the claim statement returns them (without their messages)."""
    buckets = (
        await tx.conn.execute(
            text(_BUCKETS_SQL[tx.dialect, True]),
            {"now": now_ms, "excluded": codec.dumps(list(excluded))},
        )
    ).all()
    rows: list[Any] = []
    spent: list[dict[str, Any]] = []
    for bucket in buckets:
        rate = float(bucket.rate_limit)
        tokens = flow.refill(float(bucket.tokens), int(bucket.refilled_ms), now_ms, rate)
        room = min(math.floor(tokens), limit - len(rows))
        taken: list[Any] = []
        if room > 0:
            leased = [
                dict(row._mapping)
                for row in await tx.conn.execute(
                    text(TAKE_SQL[tx.dialect]),
                    {"w": bucket.id, "now": now_ms, "n": room, "lease": lease, "until": until_ms},
                )
            ]
            if leased:
                taken = list(
                    await tx.conn.execute(
                        text(_HEADS_SQL[tx.dialect]), {"rows": codec.dumps(leased)}
                    )
                )
            rows.extend(taken)
        tokens -= len(taken)
        spent.append({"w": bucket.id, "tokens": tokens})
        if len(rows) >= limit:
            break
    if spent:
        source = dialect.rows_source(tx.dialect, [("w", "text"), ("tokens", "float")])
        await tx.conn.execute(
            text(
                f"""
                UPDATE webhook_flow SET tokens = v.tokens, refilled_ms = :now
                FROM {source} WHERE webhook_flow.webhook_id = v.w
                """
            ),
            {"rows": codec.dumps(spent), "now": now_ms},
        )
    return rows


def any_due_sqlite(db: sqlite3.Connection, now_ms: int, excluded: Sequence[str]) -> bool:
    """Whether a rate-limited webhook (enabled, not paused, not ``excluded``) has a due head:
    ``take``'s first statement, asked on SQLite's own connection (``queue.claim_sqlite``)."""
    found = db.execute(
        f"SELECT EXISTS ({_BUCKETS_SQL['sqlite', False]})",
        {"now": now_ms, "excluded": codec.dumps(list(excluded))},
    ).fetchone()
    return bool(found[0])


# ``any_due_sqlite``'s question for asyncpg: numbered parameters, $1 now and $2 excluded.
_ANY_DUE_PG_SQL = "SELECT EXISTS ({})".format(
    _BUCKETS_SQL["postgresql", False].replace(":now", "$1").replace(":excluded", "$2")
)


async def any_due_pg(raw: asyncpg.Connection[Any], now_ms: int, excluded: Sequence[str]) -> bool:
    """``any_due_sqlite`` on PostgreSQL's raw connection (``queue.claim_pg``)."""
    found = await raw.fetchval(_ANY_DUE_PG_SQL, now_ms, codec.dumps(list(excluded)))
    return bool(found)


async def next_token_ms(tx: Tx, now_ms: int) -> int | None:
    """When the first rate-limited webhook with a due head has a whole token again (for the
    worker's sleep: nothing else wakes it then)."""
    buckets = (
        await tx.conn.execute(
            text(_BUCKETS_SQL[tx.dialect, False]), {"now": now_ms, "excluded": "[]"}
        )
    ).all()
    soonest: int | None = None
    for bucket in buckets:
        rate = float(bucket.rate_limit)
        tokens = flow.refill(float(bucket.tokens), int(bucket.refilled_ms), now_ms, rate)
        at = now_ms + math.ceil(max(0.0, 1.0 - tokens) / rate * 1000)
        soonest = at if soonest is None else min(soonest, at)
    return soonest
