"""The worker's record on SQLite as plain ``sqlite3`` calls, run in one hop to aiosqlite's
thread (``driver.on_sqlite``), inside the transaction the caller opened.

Through SQLAlchemy, a recorded batch was seven statements or so (the deliveries, their
attempts, superseded dead letters, the queues moved on, the next heads promoted, then the
ledger's three), each a few hops to aiosqlite's thread and back with the GIL handed over
each way, and SQLAlchemy's own cost a statement. Here the same statements (the texts
``queue`` used, and ``flow.supersede_sql``) run back to back in one hop; ``batches.record``
adds the ledger's (``ledger.append_sqlite``) to the same hop.

The statements are PostgreSQL's ``queue_pg`` ones in SQLite's dialect; the contract tests run
both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from consent_relay.storage import codec, dialect, flow, queue_pg

if TYPE_CHECKING:
    import sqlite3

    from consent_relay.storage.queue import Result

_RESULTS = dialect.rows_source(
    "sqlite",
    [
        ("pk", "bigint"),
        ("lease", "text"),
        ("status", "text"),
        ("due_ms", "bigint"),
        ("attempt_count", "int"),
        ("held", "int"),
        ("outcome", "text"),
    ],
)
_RECORD = f"""
    UPDATE deliveries SET status = v.status, due_ms = v.due_ms, lease_owner = NULL,
        attempt_count = v.attempt_count, held_attempts = held_attempts + v.held,
        last_outcome = v.outcome, updated_at = :now
    FROM {_RESULTS}
    WHERE deliveries.pk = v.pk AND deliveries.lease_owner = v.lease
    RETURNING deliveries.pk
"""

_ATTEMPT_COLUMNS = (
    ("id", "text"),
    ("delivery_id", "text"),
    ("attempt_number", "int"),
    ("started_at", "text"),
    ("duration_ms", "int"),
    ("outcome", "text"),
    ("status_code", "int"),
    ("response_body", "text"),
    ("request_headers", "text"),
    ("error", "text"),
    ("response_bytes", "int"),
)
_INSERT_ATTEMPTS = dialect.insert_rows(
    "sqlite",
    "attempts",
    _ATTEMPT_COLUMNS,
    "ON CONFLICT (delivery_id, attempt_number) DO NOTHING",
)

_SUPERSEDE = flow.supersede_sql("sqlite")

_HEADS = dialect.rows_source("sqlite", [("w", "text"), ("u", "text"), ("seq", "bigint")])
_LEAVE = f"""
    UPDATE delivery_queues SET pending = pending - 1
    FROM {_HEADS}
    WHERE delivery_queues.webhook_id = v.w AND delivery_queues.user_id = v.u
"""
# Sequence numbers are contiguous within a queue (appends hand them out in blocks, and rows
# are never deleted from a queue's middle), so the next head is exactly seq + 1.
_PROMOTE = f"""
    UPDATE deliveries SET due_ms = :now
    FROM {_HEADS}
    WHERE deliveries.webhook_id = v.w AND deliveries.user_id = v.u
      AND deliveries.seq = v.seq + 1
      AND deliveries.status = 'pending' AND deliveries.due_ms IS NULL
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
    rows = codec.dumps([queue_pg.result_row(r) for r in results])
    held = {row[0] for row in db.execute(_RECORD, {"rows": rows, "now": now}).fetchall()}
    kept = [r for r in results if r.claimed.pk in held]
    if not kept:
        return []
    if with_attempts:
        attempts = codec.dumps([queue_pg.attempt_row(r) for r in kept])
        db.execute(_INSERT_ATTEMPTS, {"rows": attempts})
    delivered = [
        {"w": c.webhook_id, "u": c.user_id, "seq": c.seq, "s": c.subject, "m": c.message_id}
        for c in (r.claimed for r in kept if r.status == "delivered")
        if c.subject is not None
    ]
    if delivered:
        db.execute(_SUPERSEDE, {"rows": codec.dumps(delivered), "now": now})
    finished = sorted(  # one lock order for every writer (as on PostgreSQL)
        (r.claimed.webhook_id, r.claimed.user_id, r.claimed.seq)
        for r in kept
        if r.status != "pending"
    )
    if finished:
        heads = codec.dumps([{"w": w, "u": u, "seq": seq} for w, u, seq in finished])
        db.execute(_LEAVE, {"rows": heads})
        db.execute(_PROMOTE, {"rows": heads, "now": now_ms})
    return kept
