"""The worker's hot statements on PostgreSQL, sent to asyncpg directly (``storage.driver``),
inside the transaction the caller opened through SQLAlchemy.

SQLAlchemy's cost a statement (cache key, parameters compiled into JSON text, result rows,
the greenlet hop) was a visible share of the worker's CPU per delivery; here a batch's rows
travel as one JSON parameter (``jsonb_to_recordset``, as everywhere: asyncpg's typed arrays
were measured dearer, an ``isinstance`` an element), and a batch's record is at most three
round trips:

- one statement updates the deliveries whose lease still holds and inserts their attempts
  (the attempts joined to the rows the update returned: only those whose lease held);
- for the heads that finished, one statement moves their queues on, then one makes the next
  head of each due and marks the dead letters their delivered messages supersede (two, not
  one: see ``_LEAVE``).

SQLite's record does the same with plain ``sqlite3`` calls (``queue_sqlite``); the contract
tests run both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consent_relay.storage import codec

if TYPE_CHECKING:
    import asyncpg

    from consent_relay.storage.queue import Result


# An attempt's columns, in the order of ``attempt_values``.
ATTEMPT_NAMES = (
    "id",
    "delivery_id",
    "attempt_number",
    "started_at",
    "duration_ms",
    "outcome",
    "status_code",
    "response_body",
    "request_headers",
    "error",
    "response_bytes",
)


def attempt_values(r: Result) -> tuple[object, ...]:
    """The attempt a result records, its columns in ``ATTEMPT_NAMES`` order (SQLite's
    ``queue_sqlite.record`` binds them by position)."""
    c = r.claimed
    headers = r.request_headers
    return (
        r.attempt_id,
        c.id,
        c.attempt_count + 1,
        r.started_at,
        r.duration_ms,
        r.outcome,
        r.status_code,
        r.response_body,
        None if headers is None else codec.dumps(headers),
        r.error,
        r.response_bytes,
    )


def attempt_row(r: Result) -> dict[str, Any]:
    """The attempt a result records, as a row of the JSON array ``record`` here takes."""
    return dict(zip(ATTEMPT_NAMES, attempt_values(r), strict=True))


_NAMED = re.compile(r"(?<![:\w]):([a-z_]+)\b")


@functools.cache
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """A statement with ``:name`` parameters as asyncpg takes it (``$1``...), and the names
    in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


async def fetch(conn: asyncpg.Connection[Any], sql: str, params: dict[str, Any]) -> list[Any]:
    """``sql`` with named parameters, on the raw connection."""
    statement, names = positional(sql)
    return list(await conn.fetch(statement, *(params[name] for name in names)))


_RECORD = """
    WITH v AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb)
            AS v(pk bigint, lease text, status text, due_ms bigint, attempt_count int, held int,
                 outcome text)
    ), kept AS (
        UPDATE deliveries SET status = v.status, due_ms = v.due_ms, lease_owner = NULL,
            attempt_count = v.attempt_count, held_attempts = held_attempts + v.held,
            last_outcome = v.outcome, updated_at = $2
        FROM v
        WHERE deliveries.pk = v.pk AND deliveries.lease_owner = v.lease
        RETURNING deliveries.pk
    ), attempted AS (
        INSERT INTO attempts (id, delivery_id, attempt_number, started_at, duration_ms,
                              outcome, status_code, response_body, request_headers, error,
                              response_bytes)
        SELECT a.id, a.delivery_id, a.attempt_number, a.started_at, a.duration_ms, a.outcome,
               a.status_code, a.response_body, a.request_headers, a.error, a.response_bytes
        FROM jsonb_to_recordset($3::jsonb)
            AS a(pk bigint, id text, delivery_id text, attempt_number int, started_at text,
                 duration_ms int, outcome text, status_code int, response_body text,
                 request_headers text, error text, response_bytes int)
        WHERE a.pk IN (SELECT pk FROM kept)
        ON CONFLICT (delivery_id, attempt_number) DO NOTHING
    )
    SELECT pk FROM kept
"""


def result_row(r: Result) -> dict[str, Any]:
    """What a result changes on its delivery, as a row of the JSON array the record takes
    (both databases: ``queue.record`` and ``record`` here)."""
    return {
        "pk": r.claimed.pk,
        "lease": r.claimed.lease,
        "status": r.status,
        "due_ms": r.due_ms,
        "attempt_count": r.claimed.attempt_count + 1,
        "held": 1 if r.held else 0,
        "outcome": r.outcome,
    }


async def record(
    conn: asyncpg.Connection[Any], results: Sequence[Result], now: str, with_attempts: bool
) -> set[int]:
    """Update the deliveries of ``results`` whose lease still holds and insert their attempts
    (unless told not to); the pks of those whose lease held. (The rows travel as JSON, one
    parameter each: asyncpg's array encoder costs more, an ``isinstance`` an element.)"""
    rows = [result_row(r) for r in results]
    attempts = [{"pk": r.claimed.pk, **attempt_row(r)} for r in (results if with_attempts else ())]
    found = await conn.fetch(_RECORD, codec.dumps(rows), now, codec.dumps(attempts))
    return {row[0] for row in found}


# Two statements, in this order, never one: the queue update waits for any transaction that
# holds the queue row (an append adding the next delivery), and under READ COMMITTED only a
# statement that starts after that wait sees what the append committed. In one statement the
# promotion looked for ``seq + 1`` in the snapshot taken before the wait, missed a delivery
# appended meanwhile, and left its queue with no due head for ever
# (tests/integration/test_queue_race.py).
_LEAVE = """
    UPDATE delivery_queues SET pending = pending - 1
    FROM jsonb_to_recordset($1::jsonb) AS f(w text, u text, seq bigint)
    WHERE delivery_queues.webhook_id = f.w AND delivery_queues.user_id = f.u
"""

# The next head: a per-row LATERAL lookup feeding ``pk = ANY(ARRAY(...))`` keeps to the
# indexes whatever the statistics say; a plain join, planned on the statistics of a freshly
# filled table, scanned the whole table once per head (measured: 263 ms instead of 0.5 ms a
# batch). Sequence numbers are contiguous within a queue, so the next head is seq + 1.
# The superseded dead letters the same way, each queue's looked up in the dead-letters index
# (``OFFSET 0`` keeps the lookup per row: a join, planned with no statistics, read every dead
# letter of the webhook for each delivered message; 4 s a batch against 50,000 of them).
# Public: ``inspect.supersede_plan`` reads its plan.
FINISH = """
    WITH f AS (
        SELECT * FROM jsonb_to_recordset($1::jsonb) AS f(w text, u text, seq bigint)
    ), promoted AS (
        UPDATE deliveries SET due_ms = $2
        WHERE pk = ANY(ARRAY(
            SELECT nxt.pk FROM f
            CROSS JOIN LATERAL (
                SELECT d.pk FROM deliveries d
                WHERE d.webhook_id = f.w AND d.user_id = f.u AND d.seq = f.seq + 1
                LIMIT 1) AS nxt))
          AND status = 'pending' AND due_ms IS NULL
    ), superseded AS (
        UPDATE deliveries SET status = 'superseded', updated_at = $3
        WHERE pk = ANY(ARRAY(
            SELECT old.pk FROM jsonb_to_recordset($4::jsonb)
                AS v(w text, u text, seq bigint, s text, m text)
            CROSS JOIN LATERAL (
                SELECT d.pk FROM deliveries d
                WHERE d.webhook_id = v.w AND d.user_id = v.u AND d.seq < v.seq
                  AND d.status = 'dead' AND d.replayed_by IS NULL AND d.subject = v.s
                  AND d.message_id < v.m
                OFFSET 0) AS old))
    )
    SELECT 1
"""


async def finish(
    conn: asyncpg.Connection[Any],
    finished: Sequence[tuple[str, str, int]],
    delivered: Sequence[tuple[str, str, int, str | None, str]],
    now_ms: int,
    now: str,
) -> None:
    """Heads that were delivered or died leave their queues, the next in line becoming due
    (on SQLite ``queue_sqlite.record``); dead letters ``delivered`` messages supersede become so
    (``flow.SUPERSEDE_ROW``). Two statements (see ``_LEAVE``)."""
    ordered = sorted(finished)  # one lock order for every writer (as on SQLite)
    heads = codec.dumps([{"w": w, "u": u, "seq": seq} for w, u, seq in ordered])
    await conn.execute(_LEAVE, heads)  # first, and alone: see _LEAVE
    await conn.execute(
        FINISH,
        heads,
        now_ms,
        now,
        codec.dumps(
            [{"w": w, "u": u, "seq": seq, "s": s, "m": m} for w, u, seq, s, m in delivered]
        ),
    )
