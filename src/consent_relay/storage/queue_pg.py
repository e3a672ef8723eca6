"""The worker's hot statements on PostgreSQL, sent to asyncpg directly (``storage.driver``),
inside the transaction the caller opened through SQLAlchemy.

SQLAlchemy's cost a statement (cache key, parameters compiled into JSON text, result rows,
the greenlet hop) was a visible share of the worker's CPU per delivery; here a batch's rows
travel as typed arrays (``unnest``), and a batch's record is at most two round trips:

- one statement updates the deliveries whose lease still holds and inserts their attempts
  (the attempts joined to the rows the update returned: only those whose lease held);
- one statement, for the heads that finished, moves their queues on (the next head becomes
  due) and marks the dead letters their delivered messages supersede.

The statements are the same as ``queue``'s SQLAlchemy ones (SQLite keeps those); the
contract tests run both.
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
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::int[],
                             $6::int[], $7::text[])
            AS v(pk, lease, status, due_ms, attempt_count, held, outcome)
    ), kept AS (
        UPDATE deliveries SET status = v.status, due_ms = v.due_ms, lease_owner = NULL,
            attempt_count = v.attempt_count, held_attempts = held_attempts + v.held,
            last_outcome = v.outcome, updated_at = $8
        FROM v
        WHERE deliveries.pk = v.pk AND deliveries.lease_owner = v.lease
        RETURNING deliveries.pk
    ), attempted AS (
        INSERT INTO attempts (id, delivery_id, attempt_number, started_at, duration_ms,
                              outcome, status_code, response_body, request_headers, error,
                              response_bytes)
        SELECT a.id, a.delivery_id, a.attempt_number, a.started_at, a.duration_ms, a.outcome,
               a.status_code, a.response_body, a.request_headers, a.error, a.response_bytes
        FROM unnest($9::bigint[], $10::text[], $11::text[], $12::int[], $13::text[],
                    $14::int[], $15::text[], $16::int[], $17::text[], $18::text[], $19::text[],
                    $20::int[])
            AS a(pk, id, delivery_id, attempt_number, started_at, duration_ms, outcome,
                 status_code, response_body, request_headers, error, response_bytes)
        WHERE a.pk IN (SELECT pk FROM kept)
        ON CONFLICT (delivery_id, attempt_number) DO NOTHING
    )
    SELECT pk FROM kept
"""


async def record(
    conn: asyncpg.Connection[Any], results: Sequence[Result], now: str, with_attempts: bool
) -> set[int]:
    """Update the deliveries of ``results`` whose lease still holds and insert their attempts
    (unless told not to); the pks of those whose lease held."""
    pks: list[int] = []
    leases: list[str] = []
    statuses: list[str] = []
    dues: list[int | None] = []
    counts: list[int] = []
    held: list[int] = []
    outcomes: list[str] = []
    for r in results:
        c = r.claimed
        pks.append(c.pk)
        leases.append(c.lease)
        statuses.append(r.status)
        dues.append(r.due_ms)
        counts.append(c.attempt_count + 1)
        held.append(1 if r.held else 0)
        outcomes.append(r.outcome)
    attempts: list[list[Any]] = [[] for _ in range(12)]
    if with_attempts:
        columns = attempts
        for r in results:
            c = r.claimed
            headers = r.request_headers
            for column, value in zip(
                columns,
                (
                    c.pk,
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
                ),
                strict=True,
            ):
                column.append(value)
    rows = await conn.fetch(
        _RECORD, pks, leases, statuses, dues, counts, held, outcomes, now, *attempts
    )
    return {row[0] for row in rows}


_FINISH = """
    WITH f AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS f(w, u, seq)
    ), moved AS (
        UPDATE delivery_queues SET pending = pending - 1
        FROM f
        WHERE delivery_queues.webhook_id = f.w AND delivery_queues.user_id = f.u
    ), promoted AS (
        UPDATE deliveries SET due_ms = $4
        WHERE pk = ANY(ARRAY(
            SELECT nxt.pk FROM f
            CROSS JOIN LATERAL (
                SELECT d.pk FROM deliveries d
                WHERE d.webhook_id = f.w AND d.user_id = f.u AND d.seq = f.seq + 1
                LIMIT 1) AS nxt))
          AND status = 'pending' AND due_ms IS NULL
    ), superseded AS (
        UPDATE deliveries SET status = 'superseded', updated_at = $5
        FROM unnest($6::text[], $7::text[], $8::bigint[], $9::text[], $10::text[])
            AS v(w, u, seq, s, m)
        WHERE deliveries.webhook_id = v.w AND deliveries.user_id = v.u
          AND deliveries.seq < v.seq AND deliveries.status = 'dead'
          AND deliveries.replayed_by IS NULL AND deliveries.subject = v.s
          AND deliveries.message_id < v.m
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
    (``queue.advance``); dead letters ``delivered`` messages supersede become so
    (``flow.supersede``). One statement."""
    ordered = sorted(finished)  # one lock order for every writer (as queue.advance)
    await conn.execute(
        _FINISH,
        [w for w, _, _ in ordered],
        [u for _, u, _ in ordered],
        [seq for _, _, seq in ordered],
        now_ms,
        now,
        [d[0] for d in delivered],
        [d[1] for d in delivered],
        [d[2] for d in delivered],
        [d[3] for d in delivered],
        [d[4] for d in delivered],
    )
