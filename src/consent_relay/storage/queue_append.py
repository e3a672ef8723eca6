"""Appending to the delivery queue: messages, then their deliveries at the back of their
(webhook, user) queues, in three set-based statements whatever the batch's size (the
design: ``queue.py``, which re-exports ``enqueue``, ``append`` and ``notify_workers`` so
the queue keeps one face)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Integer, Table, text

from consent_relay import ids
from consent_relay.storage import codec, dialect, flow
from consent_relay.storage.dialect import rows_source
from consent_relay.storage.records import MessageRecord, NewDelivery
from consent_relay.storage.tables import deliveries, messages
from consent_relay.storage.tx import Tx


async def enqueue(
    tx: Tx,
    new_messages: Sequence[MessageRecord],
    new: Sequence[NewDelivery],
    now_ms: int,
    now: str,
) -> None:
    """Store messages and their deliveries, each in its (webhook, user) queue's order."""
    if new_messages:
        await tx.conn.execute(
            text(INSERT_SQL["messages"][tx.dialect]), {"rows": message_rows_json(new_messages)}
        )
    for item, new_id in zip(
        new,
        await append(
            tx,
            [
                (i.message.organization_id, i.webhook_id, i.message.id, i.message.user_id)
                for i in new
            ],
            now_ms,
            now,
            subjects=[flow.subject_of(i.message.type, i.message.parameters) for i in new],
        ),
        strict=True,
    ):
        item.id = new_id


MESSAGE_COLUMNS = (
    ("id", "text"),
    ("organization_id", "text"),
    ("type", "text"),
    ("regulation", "text"),
    ("user_id", "text"),
    ("parameters", "text"),
    ("created_at", "text"),
)


def message_values(m: MessageRecord) -> tuple[object, ...]:
    """A message's columns in ``MESSAGE_COLUMNS`` order (parameters as JSON text)."""
    return (
        m.id,
        m.organization_id,
        m.type,
        m.regulation,
        m.user_id,
        codec.dumps(m.parameters),
        m.created_at,
    )


def message_rows_json(records: Sequence[MessageRecord]) -> str:
    """Messages as the JSON array the set-based statements take (parameters as JSON text)."""
    names = [name for name, _ in MESSAGE_COLUMNS]
    return codec.dumps([dict(zip(names, message_values(m), strict=True)) for m in records])


async def append(
    tx: Tx,
    items: Sequence[tuple[str, str, str, str]],
    now_ms: int,
    now: str,
    *,
    subjects: Sequence[str | None] | None = None,
) -> list[str]:
    """New deliveries ``(organization, webhook, message, user)`` at the back of their
    (webhook, user) queues; returns their ids, in order.

    One upsert hands each queue its ``k`` sequence numbers and locks the queue rows; a
    queue's first new delivery is due at once only when the queue was empty (it is the new
    head), the others wait their turn. Three statements in all, whatever the number of
    deliveries and queues: every batch travels as one JSON parameter (a big append, such as
    a replay of thousands of dead letters, once went over PostgreSQL's 32,767 parameters).
    ``subjects`` (one per item) say what each message is about (``flow.subject_of``).
    """
    if not items:
        return []
    by_queue: dict[tuple[str, str], list[int]] = {}
    for position, (_org, webhook_id, _message, user_id) in enumerate(items):
        by_queue.setdefault((webhook_id, user_id), []).append(position)
    new_ids = [ids.DELIVERIES.new() for _ in items]
    queues = sorted(by_queue.items())  # one lock order for every writer
    counters = await _reserve(tx, queues, now_ms)
    rows: list[dict[str, Any]] = []
    for (webhook_id, user_id), positions in queues:
        count = len(positions)
        last_seq, _pending = counters[(webhook_id, user_id)]
        first_seq = last_seq - count + 1
        for offset, position in enumerate(positions):
            org_id, _webhook, message_id, _user = items[position]
            rows.append(
                {
                    "id": new_ids[position],
                    "organization_id": org_id,
                    "webhook_id": webhook_id,
                    "message_id": message_id,
                    "user_id": user_id,
                    "seq": first_seq + offset,
                    "status": "pending",
                    "attempt_count": 0,
                    "subject": None if subjects is None else subjects[position],
                    "created_at": now,
                    "updated_at": now,
                }
            )
    await tx.conn.execute(text(INSERT_SQL["deliveries"][tx.dialect]), {"rows": codec.dumps(rows)})
    await notify_workers(tx)
    return new_ids


async def _reserve(
    tx: Tx, queues: Sequence[tuple[tuple[str, str], list[int]]], now_ms: int
) -> dict[tuple[str, str], tuple[int, int]]:
    """Hand each queue its block of sequence numbers: (last_seq, pending) after it. A queue
    that was empty gets its clock too: its first new delivery, the head, is due at once."""
    rows = [{"w": w, "u": u, "n": len(p)} for (w, u), p in queues]
    result = await tx.conn.execute(
        text(RESERVE_SQL[tx.dialect]), {"rows": codec.dumps(rows), "now": now_ms}
    )
    return {(r.webhook_id, r.user_id): (r.last_seq, r.pending) for r in result}


def _reserve_sql(name: str) -> str:
    source = rows_source(name, [("w", "text"), ("u", "text"), ("n", "bigint")])
    return f"""
        INSERT INTO delivery_queues (webhook_id, user_id, last_seq, pending, due_ms)
        SELECT w, u, n, n, :now FROM {source}
        WHERE true
        ON CONFLICT (webhook_id, user_id) DO UPDATE
        SET last_seq = delivery_queues.last_seq + excluded.last_seq,
            pending = delivery_queues.pending + excluded.pending,
            due_ms = CASE WHEN delivery_queues.pending = 0 THEN excluded.due_ms
                          ELSE delivery_queues.due_ms END
        RETURNING webhook_id, user_id, last_seq, pending
    """


def _insert_sql(table: Table, name: str) -> str:
    """INSERT of every row of the JSON array ``:rows`` into ``table`` (all its columns but
    the surrogate key and those the rows leave out)."""
    columns = [
        (column.name, "bigint" if isinstance(column.type, BigInteger | Integer) else "text")
        for column in table.columns
        if column.name != "pk" and column.name in _APPENDED_COLUMNS[table.name]
    ]
    return dialect.insert_rows(name, table.name, columns)


_APPENDED_COLUMNS = {
    "messages": {"id", "organization_id", "type", "regulation", "user_id", "parameters",
                 "created_at"},
    "deliveries": {"id", "organization_id", "webhook_id", "message_id", "user_id", "seq",
                   "status", "attempt_count", "subject", "created_at",
                   "updated_at"},
}  # fmt: skip
RESERVE_SQL = {name: _reserve_sql(name) for name in ("postgresql", "sqlite")}
INSERT_SQL = {
    table.name: {name: _insert_sql(table, name) for name in ("postgresql", "sqlite")}
    for table in (messages, deliveries)
}


async def notify_workers(tx: Tx) -> None:
    """On PostgreSQL, wake workers of every process when this transaction commits."""
    if tx.dialect == "postgresql":
        await tx.conn.execute(text("SELECT pg_notify('consent_relay_deliveries', '')"))
