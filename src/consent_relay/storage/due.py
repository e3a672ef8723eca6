"""Which queues the main claim may take: the due heads of the webhooks it serves, oldest due
first, found a webhook at a time.

The main claim serves webhooks that are enabled, not paused, not rate-limited (those are
``ratelimit.take``'s) and not excluded by the worker (at their cap of requests in flight, or
broken). The webhooks with a queue on the clock are found by walking
``ix_delivery_queues_webhook_due`` (webhook, due time) from one webhook to the next, so idle
webhooks are never visited; each served one's due heads are read through the same index,
and the oldest of all of them are taken. So the claim reads only heads it may take, in the
order of their due times across webhooks, as one walk of a due index would.

It used to walk one index of every due head (``ix_delivery_queues_due``, dropped by
migration 0012) and skip the heads of webhooks it does not serve. A webhook that is
disabled, paused by its receiver (Retry-After) or held to a rate limit keeps its heads due,
so its backlog was walked past by every claim of every worker: 50,000 due heads of one
disabled webhook cut another webhook's deliveries from 6,849 to 2,169 a second on PostgreSQL
(each skipped head a heap fetch).

On PostgreSQL the whole claim is one statement (``queue.claim_sql``: a ``LATERAL`` read a
webhook for twice the limit in candidates, then the first ``limit`` of them locked ``SKIP
LOCKED``); on SQLite these statements run one after the other in the claim's one call
(``queue_sqlite.claim``, ``pick_sqlite``).
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Any

from consent_relay.storage import dialect

if TYPE_CHECKING:
    import sqlite3


# The webhooks that have a queue on the clock (due, or leased: ``due_ms`` set), one index
# descent each through ``ix_delivery_queues_webhook_due`` (from one webhook to the next, as
# a skip scan would): the idle ones, however many, are never visited.
_ON_THE_CLOCK = """
    WITH RECURSIVE clocked(id) AS (
        SELECT (SELECT min(webhook_id) FROM delivery_queues WHERE due_ms IS NOT NULL)
        UNION ALL
        SELECT (SELECT min(q.webhook_id) FROM delivery_queues q
                WHERE q.webhook_id > clocked.id AND q.due_ms IS NOT NULL)
        FROM clocked WHERE clocked.id IS NOT NULL
    )
"""


def served_webhooks(name: str) -> str:
    """The webhooks whose due heads the main claim takes (parameters ``now``, ``excluded``):
    of those with a queue on the clock, the enabled ones that are not paused, not
    rate-limited and not excluded. (Each looked up by its id: as a join, SQLite with
    statistics built a Bloom filter of every webhook, each claim.)"""
    return f"""{_ON_THE_CLOCK}
        SELECT clocked.id FROM clocked
        WHERE (SELECT w.enabled AND w.rate_limit IS NULL FROM webhooks w WHERE w.id = clocked.id)
          AND clocked.id NOT IN (
              SELECT webhook_id FROM webhook_flow WHERE paused_until_ms > :now)
          AND clocked.id NOT IN ({dialect.strings(name, "excluded")})
    """


# One webhook's oldest due heads (named parameters ``w``, ``now``, ``limit``): their due
# time and rowid, through the webhook's due index.
SQLITE_DUE_OF_WEBHOOK = """
    SELECT due_ms, rowid FROM delivery_queues INDEXED BY ix_delivery_queues_webhook_due
    WHERE webhook_id = :w AND due_ms IS NOT NULL AND due_ms <= :now
    ORDER BY due_ms LIMIT :limit
"""

SQLITE_SERVED = served_webhooks("sqlite")


def pick_sqlite(db: sqlite3.Connection, params: dict[str, Any]) -> list[int]:
    """The rowids of the queues a SQLite claim takes (``params``: ``now``, ``limit``,
    ``excluded``): at most ``limit`` due heads of the webhooks it serves, oldest due first.
    A cursor a webhook, merged as they are read: each steps only as far as the merge takes
    it, so a claim reads about ``limit`` rows plus one a webhook, however many webhooks
    have a backlog."""
    hooks = [row[0] for row in db.execute(SQLITE_SERVED, params)]
    limit, now = params["limit"], params["now"]
    cursors = [  # a cursor each (``execute`` makes a new one), let go when this returns
        db.execute(SQLITE_DUE_OF_WEBHOOK, {"w": hook, "now": now, "limit": limit}) for hook in hooks
    ]
    return [rowid for _due, rowid in itertools.islice(heapq.merge(*cursors), limit)]


# When the next queue falls due after ``:after`` (a retry's time, a lease's end): the first
# of each webhook on the clock, through its due index.
NEXT_DUE = f"""{_ON_THE_CLOCK}
    SELECT min((SELECT min(q.due_ms) FROM delivery_queues q
                WHERE q.webhook_id = clocked.id AND q.due_ms > :after)) AS due
    FROM clocked
"""
