"""The worker's hot statements on PostgreSQL, sent to asyncpg directly (``storage.driver``):
on a connection of ``Store.pg_transaction``'s pool, or inside the transaction the caller
opened through SQLAlchemy.

SQLAlchemy's cost a statement (cache key, parameters compiled into JSON text, result rows,
the greenlet hop) was a visible share of the worker's CPU per delivery; here a batch's rows
travel as one JSON parameter (``json_to_recordset``, as everywhere: asyncpg's typed arrays
were measured dearer, an ``isinstance`` an element; ``json``, not ``jsonb``: see
``dialect``), and a batch's record is one round trip (``RECORD``): the queues whose lease
still holds let it go and move on, their deliveries get their outcome and attempts, and the
dead letters their delivered messages supersede become so; the worker's also writes the
ledger's entries of the delivered ones (``RECORD_LEDGERED``), and is then its own
transaction.

SQLite's record does the same with plain ``sqlite3`` calls (``queue_sqlite``); the contract
tests run both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consent_relay.storage import codec, ledger

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
    """The attempt a result records, as a row of the JSON array ``record`` here takes: its
    delivery's ``pk``, then ``attempt_values`` by name (``tests/unit/test_attempt_rows.py``
    holds the two to the same columns). Built directly: the dict of ``zip(ATTEMPT_NAMES,
    attempt_values(r))`` copied into one with the pk cost 1.8 µs a row against 0.8
    (``timeit``, 100 rows and their JSON)."""
    c = r.claimed
    headers = r.request_headers
    return {
        "pk": c.pk,
        "id": r.attempt_id,
        "delivery_id": c.id,
        "attempt_number": c.attempt_count + 1,
        "started_at": r.started_at,
        "duration_ms": r.duration_ms,
        "outcome": r.outcome,
        "status_code": r.status_code,
        "response_body": r.response_body,
        "request_headers": None if headers is None else codec.dumps(headers),
        "error": r.error,
        "response_bytes": r.response_bytes,
    }


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


# A batch's record, one statement (public: ``inspect.supersede_plan`` reads its plan):
# - ``c``: each result with ``go``: it may lease its queue's next delivery on to this worker
#   (chained leases, ``queue.Chain``): asked for (``chain``, from ``queue.chain_flags``), the
#   webhook enabled, not paused, not rate-limited, and the next delivery there in this
#   statement's snapshot (one appended by a transaction that committed after it is made due
#   instead, as without chaining);
# - ``moved``: each queue whose lease this worker still holds lets it go. A head still
#   pending (a retry) is due again at its retry time; a head that finished leaves its queue
#   (``pending`` - 1) and the next in line, if any, is due at once, or leased on (``go``):
#   lease ``$5`` until ``$6``. (The right-hand side reads the row as it was: ``pending`` is
#   the count before this update. Under READ COMMITTED an append that held the queue row is
#   waited for and its count is the one updated, so a delivery appended meanwhile is never
#   left without a clock.) The queues are updated in the batch's (sorted) order: one lock
#   order for every writer.
# - ``kept``: the deliveries of those queues get their outcome: the wide delivery row is
#   written once a delivery, here (a claim writes the queue row only); no index names a
#   column a delivered one changes, so on a page with room it is a HOT update (migration
#   0014: ``dead_at`` is set, and indexed, for the dead ones only);
# - ``attempted``: their attempts, unique per (delivery, attempt number): one already
#   stored is kept (``NOT EXISTS``, a probe of ``uq_attempts_number``; ``ON CONFLICT DO
#   NOTHING`` did the same with a speculative insertion, one more WAL record an attempt; the
#   queue row's lock, taken by ``moved`` first, leaves no race between the two);
# - ``superseded``: the dead letters their delivered messages supersede
#   (``flow.SUPERSEDE_ROW``), each queue's looked up in the dead-letters index (``OFFSET 0``
#   keeps the lookup per row: a join, planned with no statistics, read every dead letter of
#   the webhook for each delivered message; 4 s a batch against 50,000 of them).
# It returns a row a result recorded: its pk, then the next delivery leased on, if any
# (``queue.HEAD_COLUMNS`` and the message's type, regulation and parameters), else nulls.
RECORD = """
    WITH v AS (
        SELECT * FROM json_to_recordset($1::json)
            AS v(pk bigint, w text, u text, seq bigint, lease text, status text,
                 due_ms bigint, fin int, attempt_count int, held int, outcome text,
                 s text, m text, chain int, d text, t text, sc int, ph text, r text)
    ), ok AS (
        SELECT id FROM webhooks
        WHERE id IN (SELECT w FROM v WHERE chain = 1) AND enabled AND rate_limit IS NULL
          AND id NOT IN (SELECT webhook_id FROM webhook_flow WHERE paused_until_ms > $4)
    ), c AS (
        SELECT v.*, (v.chain = 1 AND v.w IN (SELECT id FROM ok) AND EXISTS (
            SELECT 1 FROM deliveries d
            WHERE d.webhook_id = v.w AND d.user_id = v.u AND d.seq = v.seq + 1)) AS go
        FROM v
    ), moved AS (
        UPDATE delivery_queues q SET pending = q.pending - c.fin,
            lease_owner = CASE WHEN c.go AND q.pending > 1 THEN $5 END,
            due_ms = CASE WHEN c.fin = 0 THEN c.due_ms WHEN q.pending <= 1 THEN NULL
                          WHEN c.go THEN $6::bigint ELSE $4::bigint END
        FROM c
        WHERE q.webhook_id = c.w AND q.user_id = c.u AND q.lease_owner = c.lease
        RETURNING c.pk, c.w, c.u, c.seq + 1 AS next_seq, q.lease_owner IS NOT NULL AS chained
    ), kept AS (
        UPDATE deliveries SET status = v.status, attempt_count = v.attempt_count,
            held_attempts = held_attempts + v.held, last_outcome = v.outcome, updated_at = $2,
            dead_at = CASE WHEN v.status = 'dead' THEN $2 ELSE deliveries.dead_at END
        FROM v
        WHERE deliveries.pk = v.pk AND v.pk IN (SELECT pk FROM moved)
        RETURNING deliveries.pk
    ), attempted AS (
        INSERT INTO attempts (id, delivery_id, attempt_number, started_at, duration_ms,
                              outcome, status_code, response_body, request_headers, error,
                              response_bytes)
        SELECT a.id, a.delivery_id, a.attempt_number, a.started_at, a.duration_ms, a.outcome,
               a.status_code, a.response_body, a.request_headers, a.error, a.response_bytes
        FROM json_to_recordset($3::json)
            AS a(pk bigint, id text, delivery_id text, attempt_number int, started_at text,
                 duration_ms int, outcome text, status_code int, response_body text,
                 request_headers text, error text, response_bytes bigint)
        WHERE a.pk IN (SELECT pk FROM moved) AND NOT EXISTS (
            SELECT 1 FROM attempts t
            WHERE t.delivery_id = a.delivery_id AND t.attempt_number = a.attempt_number)
    ), superseded AS (
        UPDATE deliveries SET status = 'superseded', updated_at = $2
        WHERE pk = ANY(ARRAY(
            SELECT old.pk FROM v
            CROSS JOIN LATERAL (
                SELECT d.pk FROM deliveries d
                WHERE d.webhook_id = v.w AND d.user_id = v.u AND d.seq < v.seq
                  AND d.dead_at IS NOT NULL AND d.status = 'dead' AND d.replayed_by IS NULL
                  AND d.subject = v.s
                  AND d.message_id < v.m
                OFFSET 0) AS old
            WHERE v.status = 'delivered' AND v.s IS NOT NULL
              AND v.pk IN (SELECT pk FROM moved)))
    )
    SELECT moved.pk, h.pk, h.id, h.webhook_id, h.message_id, h.user_id, h.seq,
           h.attempt_count, h.held_attempts, h.subject, msg.type, msg.regulation,
           msg.parameters
    FROM moved
    LEFT JOIN LATERAL (
        SELECT d.pk, d.id, d.webhook_id, d.message_id, d.user_id, d.seq, d.attempt_count,
               d.held_attempts, d.subject
        FROM deliveries d
        WHERE moved.chained AND d.webhook_id = moved.w AND d.user_id = moved.u
          AND d.seq = moved.next_seq
        LIMIT 1) AS h ON true
    LEFT JOIN messages msg ON msg.id = h.message_id
"""

# ``RECORD`` with the ledger's entries of the delivered results it records (the rows with
# ``ledger.pg_fields``), chained and written in the same statement (``ledger.pg_ctes``):
# the worker's whole record in one round trip, its own transaction (no BEGIN, no COMMIT).
_LEDGERED = "(SELECT * FROM v WHERE v.r IS NOT NULL AND v.pk IN (SELECT pk FROM moved))"
RECORD_LEDGERED = RECORD.replace(
    "\n    SELECT moved.pk", f", {ledger.pg_ctes(_LEDGERED, '$2')}\n    SELECT moved.pk", 1
)


def result_row(r: Result, chain: bool) -> dict[str, Any]:
    """What a result changes on its delivery and its queue, as a row of the JSON array the
    record takes (``RECORD``)."""
    c = r.claimed
    return {
        "pk": c.pk,
        "w": c.webhook_id,
        "u": c.user_id,
        "seq": c.seq,
        "lease": c.lease,
        "status": r.status,
        "due_ms": r.due_ms,
        "fin": 0 if r.status == "pending" else 1,
        "attempt_count": c.attempt_count + 1,
        "held": 1 if r.held else 0,
        "outcome": r.outcome,
        "s": c.subject,
        "m": c.message_id,
        "chain": 1 if chain else 0,
    }


async def record(
    conn: asyncpg.Connection[Any],
    results: Sequence[Result],
    now: str,
    now_ms: int,
    with_attempts: bool,
    flags: Sequence[bool],
    lease: str | None,
    until_ms: int | None,
    with_ledger: bool = False,
) -> tuple[set[int], list[tuple[Any, ...]]]:
    """Record ``results`` whose queue's lease still holds (``RECORD``), their attempts too
    unless told not to, leasing on (lease ``lease`` until ``until_ms``) the next delivery of
    the queues whose ``flags`` say so, where it can, and with ``with_ledger`` the ledger's
    entries of the delivered ones recorded (``RECORD_LEDGERED``): the pks of the results
    whose lease held, and the rows of the next deliveries leased on
    (``queue.claimed_from``). (The rows travel as JSON, one parameter each: asyncpg's array
    encoder costs more, an ``isinstance`` an element.)"""
    pairs = sorted(
        zip(results, flags, strict=True),
        key=lambda p: (p[0].claimed.webhook_id, p[0].claimed.user_id),
    )
    rows = [result_row(r, go) for r, go in pairs]
    sql = RECORD
    if with_ledger:
        for row, (r, _go) in zip(rows, pairs, strict=True):
            if r.status == "delivered":
                row.update(ledger.pg_fields(r, now))
                sql = RECORD_LEDGERED
    attempts = [attempt_row(r) for r, _go in (pairs if with_attempts else ())]
    found = await conn.fetch(
        sql, codec.dumps(rows), now, codec.dumps(attempts), now_ms, lease, until_ms
    )
    return {row[0] for row in found}, [tuple(row)[1:] for row in found if row[1] is not None]
