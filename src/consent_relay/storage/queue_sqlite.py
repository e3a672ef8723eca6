"""The worker's claim and record on SQLite as plain ``sqlite3`` calls, run in one hop to aiosqlite's
thread (``driver.on_sqlite``), inside the transaction the caller opened.

Through SQLAlchemy, a recorded batch was seven statements or so (the deliveries, their
attempts, superseded dead letters, the queues moved on, the next heads promoted, then the
ledger's three), each a few hops to aiosqlite's thread and back with the GIL handed over
each way, and SQLAlchemy's own cost a statement. Here they run back to back in one hop;
``batches.record`` adds the ledger's (``ledger.append_sqlite``) to the same hop. Each is a
statement for one row run over the batch (``executemany``), where PostgreSQL's ``queue_pg``
sends one statement over a JSON array: same effect, and the contract tests run both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consent_relay.storage import codec, flow, queue_pg

if TYPE_CHECKING:
    import sqlite3

    from consent_relay.storage.queue import Message, Result

_MESSAGES = """
    SELECT id, type, regulation, parameters FROM messages
    WHERE id IN (SELECT value FROM json_each(?))
"""


def claim(
    db: sqlite3.Connection, sql: str, params: dict[str, Any], with_messages: bool
) -> tuple[list[Any], dict[str, Message]]:
    """``queue.claim``'s statement (``sql``, named ``params``) and, unless told not to, the
    messages of the heads it leased, by id. (Through SQLAlchemy these were two statements of
    a few hops each to this thread and back.)"""
    rows = db.execute(sql, params).fetchall()
    if not with_messages or not rows:
        return rows, {}
    wanted = codec.dumps(list({row[3] for row in rows}))  # message_id: claim_sql's 4th column
    found = {
        id_: {"type": type_, "regulation": regulation, "parameters": parameters}
        for id_, type_, regulation, parameters in db.execute(_MESSAGES, (wanted,))
    }
    return rows, found


# Each statement runs once a row (``executemany``, parameters bound by position): for a
# batch's rows, cheaper than one statement over a JSON array (``json_each`` and a
# ``json_extract`` a column, the rows serialised first): the record's SQLite work a delivery
# went from about 80 to about 55 CPU-us, measured with the statements alone.

# Which deliveries of the batch this worker still holds (the record is one exclusive write
# transaction: nothing changes them between this read and the update).
_HELD = """
    SELECT pk, lease_owner FROM deliveries WHERE pk IN (SELECT value FROM json_each(?))
"""
_RECORD = """
    UPDATE deliveries SET status = ?, due_ms = ?, lease_owner = NULL, attempt_count = ?,
        held_attempts = held_attempts + ?, last_outcome = ?, updated_at = ?
    WHERE pk = ? AND lease_owner = ?
"""
_INSERT_ATTEMPTS = (
    f"INSERT INTO attempts ({', '.join(queue_pg.ATTEMPT_NAMES)})"
    f" VALUES ({', '.join('?' for _ in queue_pg.ATTEMPT_NAMES)})"
    " ON CONFLICT (delivery_id, attempt_number) DO NOTHING"
)
_SUPERSEDE = flow.SUPERSEDE_ROW
_LEAVE = """
    UPDATE delivery_queues SET pending = pending - 1 WHERE webhook_id = ? AND user_id = ?
"""
# Sequence numbers are contiguous within a queue (appends hand them out in blocks, and rows
# are never deleted from a queue's middle), so the next head is exactly seq + 1.
_PROMOTE = """
    UPDATE deliveries SET due_ms = ?
    WHERE webhook_id = ? AND user_id = ? AND seq = ? AND status = 'pending' AND due_ms IS NULL
"""


def record(
    db: sqlite3.Connection,
    results: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    with_attempts: bool,
) -> list[Result]:
    """``queue.record`` but for pauses and disabling (which the caller does): the results
    whose lease still held are recorded, with their attempts (unless told not to), their
    finished heads leave their queues and the next become due, and dead letters their
    delivered messages supersede become so. Returns those results."""
    owners = dict(db.execute(_HELD, (codec.dumps([r.claimed.pk for r in results]),)).fetchall())
    kept = [r for r in results if owners.get(r.claimed.pk) == r.claimed.lease]
    if not kept:
        return []
    db.executemany(
        _RECORD,
        [
            (r.status, r.due_ms, r.claimed.attempt_count + 1, 1 if r.held else 0, r.outcome, now,
             r.claimed.pk, r.claimed.lease)
            for r in kept
        ],
    )  # fmt: skip
    if with_attempts:
        db.executemany(_INSERT_ATTEMPTS, [queue_pg.attempt_values(r) for r in kept])
    delivered = [
        (now, c.webhook_id, c.user_id, c.seq, c.subject, c.message_id)
        for c in (r.claimed for r in kept if r.status == "delivered")
        if c.subject is not None
    ]
    if delivered:
        db.executemany(_SUPERSEDE, delivered)
    finished = sorted(  # one lock order for every writer (as on PostgreSQL)
        (r.claimed.webhook_id, r.claimed.user_id, r.claimed.seq)
        for r in kept
        if r.status != "pending"
    )
    if finished:
        db.executemany(_LEAVE, [(w, u) for w, u, _seq in finished])
        db.executemany(_PROMOTE, [(now_ms, w, u, seq + 1) for w, u, seq in finished])
    return kept
