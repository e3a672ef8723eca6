"""The accountability ledger's rows: appended in the transaction that records delivered
results, read by the API, the export and ``ledger verify``.

Appending is on the delivery hot path. Each organization's entries form a hash chain from
its head (``ledger_heads``), which a record holds locked while it chains from it: concurrent
workers chain their entries one after the other, never from the same head.

- PostgreSQL: in SQL (``pg_ctes``), inside the worker's one record statement
  (``queue_pg.RECORD_LEDGERED``) or in a statement of its own (``append_pg``): the heads are
  locked, the entries numbered and hashed (``ledger_chain``, migration 0016), written, and
  the heads moved, in one round trip. The worker sends each entry's canonical text but for
  its organization and number (``pg_fields``): the hashed bytes are the ones
  ``domain.ledger`` hashes, which ``ledger verify`` checks.
- SQLite: in Python (``domain.ledger``) between reading the heads and writing the entries,
  under the exclusive write transaction, in the record's one hop to its thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select

from consent_relay.domain import ledger
from consent_relay.domain.ledger import GENESIS, Entry, EntryFields
from consent_relay.storage import codec, dialect, driver
from consent_relay.storage.tables import ledger_entries, ledger_heads
from consent_relay.storage.tx import Tx

if TYPE_CHECKING:
    import sqlite3

    import asyncpg

    from consent_relay.storage.queue import Result

# The webhooks' organizations and their heads, on SQLite (PostgreSQL's are ``pg_ctes``').
# SQLite's write transaction is exclusive: the heads need no lock of their own.
_SQLITE_HEADS_SQL = f"""
    SELECT w.id AS webhook_id, w.organization_id, h.last_seq, h.last_hash
    FROM webhooks w LEFT JOIN ledger_heads h ON h.organization_id = w.organization_id
    WHERE w.id IN ({dialect.strings("sqlite", "webhooks")})
"""

# An entry's columns: ``domain.ledger.Row``'s order.
_ENTRY_NAMES = (
    "organization_id",
    "seq",
    "message_id",
    "delivery_id",
    "type",
    "user_id",
    "webhook_id",
    "delivered_at",
    "status_code",
    "payload_sha256",
    "prev_hash",
    "entry_hash",
)
_NAMES = ", ".join(_ENTRY_NAMES)


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


def pg_ctes(source: str, now: str) -> str:
    """The common table expressions that append the ledger's entries on PostgreSQL, for a
    statement's ``WITH`` (``queue_pg.RECORD_LEDGERED``, ``append_pg``). ``source`` is a
    relation of the entries to write, with the columns ``PG_ENTRY_COLUMNS`` names (each
    delivery's ``pk``, the fields ``pg_fields`` gives and its webhook ``w``, user ``u`` and
    message ``m``); ``now`` is the parameter holding the time they were delivered.

    - ``lv``: each entry with its webhook's organization (a webhook deleted meanwhile has
      nobody to account to: its entries are left out);
    - ``locked``: those organizations' heads, locked in organization order (one lock order
      for every writer; under READ COMMITTED a head moved by a record that committed after
      this statement began is read as it is now);
    - ``heads`` and ``numbered``: each entry's number, after its organization's head, in
      the order of the deliveries (an organization with no head yet starts at 1, from
      ``GENESIS``; two records racing to start the same chain cannot both commit: the
      second's entries collide with the first's keys, its statement fails, and
      ``batches.bisect`` records its halves again, from the head that now exists);
    - ``chained``: each organization's hashes in order (``ledger_chain``, over the canonical
      text ``domain.ledger.hash_values`` hashes: the organization and the number put in
      front of the rest, which the worker sent as text);
    - ``entries`` and ``ledger_moved``: the entries written and the heads moved on.
    """
    return f"""
        lv AS (
            SELECT s.pk, s.w, s.u, s.m, s.d, s.t, s.sc, s.ph, s.r, wh.organization_id AS org
            FROM {source} AS s JOIN webhooks wh ON wh.id = s.w
        ), locked AS (
            SELECT organization_id, last_seq, last_hash FROM ledger_heads
            WHERE organization_id IN (SELECT org FROM lv)
            ORDER BY organization_id
            FOR UPDATE
        ), heads AS (
            SELECT o.org, to_json(o.org)::text AS org_json,
                   COALESCE(h.last_seq, 0) AS last_seq,
                   COALESCE(h.last_hash, '{GENESIS}') AS last_hash
            FROM (SELECT DISTINCT org FROM lv) AS o
            LEFT JOIN locked h ON h.organization_id = o.org
        ), numbered AS (
            SELECT lv.*, heads.org_json,
                   heads.last_seq + row_number() OVER (PARTITION BY lv.org ORDER BY lv.pk) AS seq
            FROM lv JOIN heads ON heads.org = lv.org
        ), chained AS (
            SELECT heads.org, heads.last_seq, heads.last_hash,
                   ledger_chain(heads.last_hash, array_agg(
                       '[' || n.org_json || ',' || n.seq || ',' || n.r ORDER BY n.seq)) AS hashes
            FROM heads JOIN numbered n ON n.org = heads.org
            GROUP BY heads.org, heads.last_seq, heads.last_hash
        ), entries AS (
            INSERT INTO ledger_entries ({_NAMES})
            SELECT n.org, n.seq, n.m, n.d, n.t, n.u, n.w, {now}, n.sc, n.ph,
                   CASE WHEN n.seq = c.last_seq + 1 THEN c.last_hash
                        ELSE c.hashes[n.seq - c.last_seq - 1] END,
                   c.hashes[n.seq - c.last_seq]
            FROM numbered n JOIN chained c ON c.org = n.org
            RETURNING seq
        ), ledger_moved AS (
            INSERT INTO ledger_heads (organization_id, last_seq, last_hash)
            SELECT org, last_seq + cardinality(hashes), hashes[cardinality(hashes)]
            FROM chained ORDER BY org
            ON CONFLICT (organization_id) DO UPDATE
            SET last_seq = excluded.last_seq, last_hash = excluded.last_hash
        )
    """


# The columns of ``pg_ctes``' source: a delivery's pk, webhook, user and message, then
# ``pg_fields``'.
PG_ENTRY_COLUMNS = "pk bigint, w text, u text, m text, d text, t text, sc int, ph text, r text"


def pg_fields(r: Result, now: str) -> dict[str, Any]:
    """What the ledger's entry of a delivered result needs beside its delivery's pk,
    webhook, user and message (which the record's rows hold already): the delivery's id
    (``d``), the message's type (``t``), the status code (``sc``) and the payload's hash
    (``ph``), and ``r``, the canonical text ``domain.ledger.hash_values`` hashes from the
    message on (``values``' order): PostgreSQL puts the organization and the number in
    front (``pg_ctes``) and hashes it as sent."""
    rest = _after_number(r, now)
    return {
        "d": rest[1],
        "t": rest[2],
        "sc": r.status_code,
        "ph": r.payload_sha256,
        "r": orjson.dumps(rest)[1:].decode(),
    }


def _after_number(
    r: Result, now: str
) -> tuple[str, str, str, str, str, str, int | None, str | None]:
    """A delivered result's entry fields after its organization and number, in
    ``domain.ledger.values``' order: message, delivery, type, user, webhook, delivery time,
    status code, payload hash (both databases' entries, ``_chain`` and ``pg_fields``)."""
    c = r.claimed
    kind = str((c.message or {}).get("type", ""))
    return (c.message_id, c.id, kind, c.user_id, c.webhook_id, now, r.status_code, r.payload_sha256)


_PG_APPEND_SQL = f"""
    WITH {pg_ctes(f"(SELECT * FROM json_to_recordset($1::json) AS v({PG_ENTRY_COLUMNS}))", "$2")}
    SELECT count(*) FROM entries
"""


async def append_pg(raw: asyncpg.Connection[Any], results: Sequence[Result], now: str) -> int:
    """``append`` on PostgreSQL's raw connection, inside the transaction open on it
    (``append``'s own through ``driver.postgres``): one statement (``pg_ctes``)."""
    rows = [
        {"pk": r.claimed.pk, "w": r.claimed.webhook_id, "u": r.claimed.user_id,
         "m": r.claimed.message_id, **pg_fields(r, now)}
        for r in results
        if r.status == "delivered"
    ]  # fmt: skip
    if not rows:
        return 0
    return int(await raw.fetchval(_PG_APPEND_SQL, codec.dumps(rows), now))


def append_sqlite(db: sqlite3.Connection, results: Sequence[Result], now: str) -> int:
    """``append`` as plain sqlite3 calls, on aiosqlite's thread (``driver.on_sqlite``)."""
    delivered = [r for r in results if r.status == "delivered"]
    if not delivered:
        return 0
    webhook_ids = sorted({r.claimed.webhook_id for r in delivered})
    rows = db.execute(_SQLITE_HEADS_SQL, {"webhooks": codec.dumps(webhook_ids)}).fetchall()
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
    ``_SQLITE_HEADS_SQL``: webhook, organization, last seq, last hash), as rows in the columns'
    order (``_ENTRY_NAMES``), and the heads after them (organization, last seq, last hash)."""
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
        chained.append((org, heads[org][0] + len(chained) + 1, *_after_number(r, now)))
    entries: list[ledger.Row] = []
    new_heads: list[tuple[str, int, str]] = []
    for org, values in sorted(by_org.items()):
        rows = ledger.chain_values(heads[org][1], values)
        entries.extend(rows)
        last = rows[-1]
        new_heads.append((org, last[1], last[-1]))
    return entries, new_heads


# SQLite's, one row each, parameters by position (``_chain``'s rows).
_SQLITE_INSERT_ENTRY = (
    f"INSERT INTO ledger_entries ({_NAMES}) VALUES ({', '.join('?' for _ in _ENTRY_NAMES)})"
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
