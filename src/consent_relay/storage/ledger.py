"""The accountability ledger's rows: appended in the transaction that records delivered
results, read by the API, the export and ``ledger verify``.

Appending is on the delivery hot path, so a recorded batch costs at most three set-based
statements whatever its size (two on PostgreSQL): lock (creating when missing) the heads of
the batch's organizations, with each webhook's organization; insert the entries; move the
heads. The chain itself is computed in Python (``domain.ledger``) between the two, under the
heads' row locks (PostgreSQL) or the exclusive write transaction (SQLite): concurrent workers
chain their entries one after the other, never from the same head.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from consent_relay.domain import ledger
from consent_relay.domain.ledger import GENESIS, Entry, EntryFields
from consent_relay.storage import codec, dialect, driver, queue_pg
from consent_relay.storage.tables import ledger_entries, ledger_heads
from consent_relay.storage.tx import Tx

if TYPE_CHECKING:
    import sqlite3

    import asyncpg

    from consent_relay.storage.queue import Result

_HEADS_SQL = {
    # The no-op DO UPDATE locks an existing head (and RETURNING hands back its values);
    # heads are taken in organization order, one lock order for every writer.
    "postgresql": f"""
        WITH orgs AS (
            SELECT id AS webhook_id, organization_id FROM webhooks
            WHERE id IN ({dialect.strings("postgresql", "webhooks")})
        ), heads AS (
            INSERT INTO ledger_heads (organization_id, last_seq, last_hash)
            SELECT DISTINCT organization_id, 0, '{GENESIS}' FROM orgs ORDER BY organization_id
            ON CONFLICT (organization_id) DO UPDATE SET last_seq = ledger_heads.last_seq
            RETURNING organization_id, last_seq, last_hash
        )
        SELECT orgs.webhook_id, orgs.organization_id, heads.last_seq, heads.last_hash
        FROM orgs JOIN heads ON heads.organization_id = orgs.organization_id
    """,
    "sqlite": f"""
        SELECT w.id AS webhook_id, w.organization_id, h.last_seq, h.last_hash
        FROM webhooks w LEFT JOIN ledger_heads h ON h.organization_id = w.organization_id
        WHERE w.id IN ({dialect.strings("sqlite", "webhooks")})
    """,
}

_ENTRY_COLUMNS = (
    ("organization_id", "text"),
    ("seq", "bigint"),
    ("message_id", "text"),
    ("delivery_id", "text"),
    ("type", "text"),
    ("user_id", "text"),
    ("webhook_id", "text"),
    ("delivered_at", "text"),
    ("status_code", "int"),
    ("payload_sha256", "text"),
    ("prev_hash", "text"),
    ("entry_hash", "text"),
)
_HEAD_COLUMNS = (("organization_id", "text"), ("last_seq", "bigint"), ("last_hash", "text"))
_ENTRY_NAMES = tuple(name for name, _ in _ENTRY_COLUMNS)
_HEAD_NAMES = tuple(name for name, _ in _HEAD_COLUMNS)
_NAMES = ", ".join(_ENTRY_NAMES)


# The heads' statement for the raw driver (storage.driver); the append is the same
# statement as SQLAlchemy's, its named parameters numbered (queue_pg.positional).
_PG_HEADS_SQL = _HEADS_SQL["postgresql"].replace(
    dialect.strings("postgresql", "webhooks"), "SELECT unnest($1::text[])"
)


def _insert_entries_sql(tx_dialect: str) -> str:
    return f"""
        INSERT INTO ledger_entries ({_NAMES})
        SELECT {_NAMES} FROM {dialect.rows_source(tx_dialect, _ENTRY_COLUMNS)}
    """


def _upsert_heads_sql(tx_dialect: str) -> str:
    source = dialect.rows_source(tx_dialect, _HEAD_COLUMNS, "heads")
    return f"""
        INSERT INTO ledger_heads (organization_id, last_seq, last_hash)
        SELECT organization_id, last_seq, last_hash FROM {source} WHERE true
        ON CONFLICT (organization_id) DO UPDATE
        SET last_seq = excluded.last_seq, last_hash = excluded.last_hash
    """


async def append(tx: Tx, results: Sequence[Result], now: str) -> int:
    """Chain an entry for every delivered result of a recorded batch (in ``tx``, the
    transaction that records them); returns how many entries were written. (On SQLite the
    worker's record does this in its one hop instead: ``append_sqlite``.)"""
    if not any(r.status == "delivered" for r in results):
        return 0
    raw = await driver.postgres(tx)
    if raw is None:
        return await driver.on_sqlite(tx, lambda db: append_sqlite(db, results, now))
    return await append_pg(raw, results, now)


async def append_pg(raw: asyncpg.Connection[Any], results: Sequence[Result], now: str) -> int:
    """``append`` on PostgreSQL's raw connection, inside the transaction open on it
    (``Store.pg_transaction``, or ``append``'s own through ``driver.postgres``)."""
    delivered = [r for r in results if r.status == "delivered"]
    if not delivered:
        return 0
    webhook_ids = sorted({r.claimed.webhook_id for r in delivered})
    rows = await raw.fetch(_PG_HEADS_SQL, webhook_ids)  # the raw driver (storage.driver)
    entries, new_heads = _chain(delivered, rows, now)
    if not entries:
        return 0
    params = {
        "rows": codec.dumps([dict(zip(_ENTRY_NAMES, row, strict=True)) for row in entries]),
        "heads": codec.dumps([dict(zip(_HEAD_NAMES, head, strict=True)) for head in new_heads]),
    }
    sql, names = queue_pg.positional(_PG_APPEND_SQL)
    await raw.execute(sql, *(params[name] for name in names))
    return len(entries)


def append_sqlite(db: sqlite3.Connection, results: Sequence[Result], now: str) -> int:
    """``append`` as plain sqlite3 calls, on aiosqlite's thread (``driver.on_sqlite``)."""
    delivered = [r for r in results if r.status == "delivered"]
    if not delivered:
        return 0
    webhook_ids = sorted({r.claimed.webhook_id for r in delivered})
    rows = db.execute(_HEADS_SQL["sqlite"], {"webhooks": codec.dumps(webhook_ids)}).fetchall()
    entries, new_heads = _chain(delivered, rows, now)
    if not entries:
        return 0
    # A statement a row, as queue_sqlite's record (which says why).
    db.executemany(_SQLITE_INSERT_ENTRY, entries)
    db.executemany(_SQLITE_UPSERT_HEAD, new_heads)
    return len(entries)


def _chain(
    delivered: Sequence[Result], heads_rows: Iterable[Sequence[Any]], now: str
) -> tuple[list[ledger.Row], list[tuple[str, int, str]]]:
    """The entries of ``delivered`` chained from their organizations' heads (rows of
    ``_HEADS_SQL``: webhook, organization, last seq, last hash), as rows in the columns'
    order (``_ENTRY_COLUMNS``), and the heads after them (``_HEAD_COLUMNS``'s order)."""
    org_of: dict[str, str] = {}
    heads: dict[str, tuple[int, str]] = {}
    for webhook_id, org, last_seq, last_hash in heads_rows:
        org_of[webhook_id] = org
        heads[org] = (0, GENESIS) if last_seq is None else (int(last_seq), last_hash)
    by_org: dict[str, list[ledger.Values]] = {}
    for r in delivered:
        c = r.claimed
        org = org_of.get(c.webhook_id)
        if org is None:
            continue  # the webhook was deleted meanwhile: nobody to account to
        chained = by_org.setdefault(org, [])
        message = c.message or {}
        chained.append(
            (
                org,
                heads[org][0] + len(chained) + 1,
                c.message_id,
                c.id,
                str(message.get("type", "")),
                c.user_id,
                c.webhook_id,
                now,
                r.status_code,
                r.payload_sha256,
            )
        )
    entries: list[ledger.Row] = []
    new_heads: list[tuple[str, int, str]] = []
    for org, values in sorted(by_org.items()):
        rows = ledger.chain_values(heads[org][1], values)
        entries.extend(rows)
        last = rows[-1]
        new_heads.append((org, last[1], last[-1]))
    return entries, new_heads


_PG_APPEND_SQL = (
    f"WITH e AS ({_insert_entries_sql('postgresql')}) {_upsert_heads_sql('postgresql')}"
)
# SQLite's, one row each, parameters by position (_ENTRY_COLUMNS's, _HEAD_COLUMNS's order).
_SQLITE_INSERT_ENTRY = (
    f"INSERT INTO ledger_entries ({_NAMES}) VALUES ({', '.join('?' for _ in _ENTRY_COLUMNS)})"
)
_SQLITE_UPSERT_HEAD = """
    INSERT INTO ledger_heads (organization_id, last_seq, last_hash) VALUES (?, ?, ?)
    ON CONFLICT (organization_id) DO UPDATE
    SET last_seq = excluded.last_seq, last_hash = excluded.last_hash
"""


def _entry(row: Any) -> Entry:
    return Entry(
        EntryFields(
            organization_id=row.organization_id,
            seq=int(row.seq),
            message_id=row.message_id,
            delivery_id=row.delivery_id,
            type=row.type,
            user_id=row.user_id,
            webhook_id=row.webhook_id,
            delivered_at=row.delivered_at,
            status_code=row.status_code,
            payload_sha256=row.payload_sha256,
        ),
        row.prev_hash,
        row.entry_hash,
    )


@dataclass(frozen=True)
class Query:
    """Which entries of one organization: every filter optional; ``after_seq`` pages."""

    organization_id: str
    user_id: str | None = None
    webhook_id: str | None = None
    since: str | None = None  # delivered_at >= since
    until: str | None = None  # delivered_at < until
    after_seq: int = 0


async def page(tx: Tx, query: Query, limit: int) -> list[Entry]:
    """Up to ``limit`` entries in sequence order (by the user or webhook index when given)."""
    c = ledger_entries.c
    stmt = select(ledger_entries).where(
        c.organization_id == query.organization_id, c.seq > query.after_seq
    )
    if query.user_id is not None:
        stmt = stmt.where(c.user_id == query.user_id)
    if query.webhook_id is not None:
        stmt = stmt.where(c.webhook_id == query.webhook_id)
    if query.since is not None:
        stmt = stmt.where(c.delivered_at >= query.since)
    if query.until is not None:
        stmt = stmt.where(c.delivered_at < query.until)
    rows = await tx.conn.execute(stmt.order_by(c.seq).limit(limit))
    return [_entry(row) for row in rows]


async def organizations(tx: Tx) -> list[str]:
    """Every organization with a ledger (a head, or entries left without one)."""
    heads = select(ledger_heads.c.organization_id)
    entries = select(ledger_entries.c.organization_id).distinct()
    rows = await tx.conn.execute(heads.union(entries))
    return sorted(row[0] for row in rows)


async def head(tx: Tx, organization_id: str) -> tuple[int, str] | None:
    row = (
        await tx.conn.execute(
            select(ledger_heads.c.last_seq, ledger_heads.c.last_hash).where(
                ledger_heads.c.organization_id == organization_id
            )
        )
    ).first()
    return None if row is None else (int(row.last_seq), row.last_hash)


async def walk(read: Any, query: Query, *, batch: int = 1000) -> AsyncIterator[Entry]:
    """Every entry matching ``query`` in sequence order, read ``batch`` at a time, each batch
    in a short transaction of its own (``read`` is ``Store.read``)."""
    after = query.after_seq
    while True:
        async with read() as tx:
            entries = await page(tx, _after(query, after), batch)
        for entry in entries:
            yield entry
        if len(entries) < batch:
            return
        after = entries[-1].fields.seq


def _after(query: Query, after_seq: int) -> Query:
    return Query(
        query.organization_id, query.user_id, query.webhook_id, query.since, query.until, after_seq
    )
