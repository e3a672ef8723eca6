"""The worker's claim and record on SQLite as plain ``sqlite3`` calls, run together: the whole
transaction with them on the event loop's thread (``Store.sqlite_transaction``, the worker's
way), or in one hop to aiosqlite's thread inside a transaction the caller opened
(``driver.on_sqlite``).

Through SQLAlchemy, a recorded batch was seven statements or so (the deliveries, their
attempts, superseded dead letters, the queues moved on, the next heads promoted, then the
ledger's three), each a few hops to aiosqlite's thread and back with the GIL handed over
each way, and SQLAlchemy's own cost a statement. Here they run back to back in one call;
``batches.record`` adds the ledger's (``ledger.append_sqlite``) to the same call. The
deliveries' state, their attempts, the queues moved on and the ledger's entries each go as a
statement a row (``executemany``), where PostgreSQL's ``queue_pg`` sends one statement over a
JSON array of them: same effect, and the contract tests run both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consent_relay.storage import codec, due, flow, queue_pg

if TYPE_CHECKING:
    import sqlite3

    from consent_relay.storage.queue import Message, Result

# The heads of queues (a JSON array of [webhook_id, user_id, seq]), each found through
# ``ix_deliveries_queue`` (CROSS JOIN keeps SQLite's join order: the array first), with their
# messages when asked: the next deliveries a record leases on (``record``; public:
# ``inspect.claim_plan`` reads the plan). ``_HEAD``: a head's columns (``queue.HEAD_COLUMNS``)
# and its message's where ``{message}`` says.
_HEAD = """
    SELECT d.pk, d.id, d.webhook_id, d.message_id, d.user_id, d.seq, d.attempt_count,
        d.held_attempts, d.subject{message}"""
_HEADS = (
    _HEAD
    + """
    FROM json_each(?) AS j CROSS JOIN deliveries d
    {join}
    WHERE d.webhook_id = json_extract(j.value, '$[0]')
      AND d.user_id = json_extract(j.value, '$[1]')
      AND d.seq = json_extract(j.value, '$[2]') AND d.status = 'pending'
"""
)
_MESSAGE = ", m.type, m.regulation, m.parameters"
_MESSAGE_JOIN = "LEFT JOIN messages m ON m.id = d.message_id"
HEADS_WITH_MESSAGES = _HEADS.format(message=_MESSAGE, join=_MESSAGE_JOIN)
# The heads of the queues a claim leased (the JSON array of their rowids it leased), read
# from the queue rows themselves (a queue's head is its ``last_seq - pending + 1``): the
# claim's UPDATE hands nothing back, where a row it returned cost the worker's thread the
# GIL (building the row, a hand-over, the array of keys made of it).
_LEASED_HEADS = (
    _HEAD
    + """
    FROM json_each(?) AS j CROSS JOIN delivery_queues q CROSS JOIN deliveries d
    {join}
    WHERE q.rowid = j.value AND d.webhook_id = q.webhook_id AND d.user_id = q.user_id
      AND d.seq = q.last_seq - q.pending + 1 AND d.status = 'pending'
"""
)
LEASED_HEADS_WITH_MESSAGES = _LEASED_HEADS.format(message=_MESSAGE, join=_MESSAGE_JOIN)
_LEASED_HEADS_ALONE = _LEASED_HEADS.format(message="", join="")


def claim(
    db: sqlite3.Connection, sql: str, params: dict[str, Any], with_messages: bool
) -> tuple[list[Any], dict[str, Message]]:
    """``queue.claim``'s statement (``sql``, named ``params``: it leases the queues), then the
    heads of the queues it leased (``queue.HEAD_COLUMNS``) and, unless told not to, their
    messages by id; one call for all of it. The queues are those
    ``due.pick_sqlite`` picks."""
    rowids = due.pick_sqlite(db, params)
    if not rowids:
        return [], {}
    picked = codec.dumps(rowids)
    db.execute(sql, {**params, "rowids": picked})
    if not with_messages:
        return db.execute(_LEASED_HEADS_ALONE, (picked,)).fetchall(), {}
    rows = db.execute(LEASED_HEADS_WITH_MESSAGES, (picked,)).fetchall()
    found = {
        row[3]: {"type": row[9], "regulation": row[10], "parameters": row[11]}
        for row in rows
        if row[9] is not None
    }
    return [row[:9] for row in rows], found


# A statement a row (``executemany``, parameters by position), not one statement over a JSON
# array of rows as on PostgreSQL. The record runs on the event loop's thread
# (``Store.sqlite_transaction``), so everything it does is the loop's, with the GIL held or
# not: what counts is the instructions in all, and SQLite's JSON parser costs more than
# binding the values. Counted (``python -m bench.delivery_instructions --deliveries 5000
# --threads``, thousands of instructions a delivery): 458.0 over JSON arrays, 443.5 a
# statement a row; timed, six alternated same-run pairs (``python -m bench --only
# bare,delivery --deliveries 40000``, SQLite): the worker's CPU a delivery against the same
# run's bare 1.88x -> 1.65x and the ratio 0.524 -> 0.570 (medians), better in five pairs of
# six. (While the record ran on aiosqlite's thread, the JSON arrays paid: a row's step handed
# the GIL to a busy loop and waited to get it back.)

# Which results of the batch (their place in it) lost their queue's lease: the others' this
# worker still holds (the record is one exclusive write transaction: nothing changes them
# between this read and the updates). A queue's lease holding means its head is still the
# delivery claimed: only a record moves a head on, and it clears the lease. Only the lost
# come back, normally none: a row handed back costs the worker's thread the GIL (building
# it, and a hand-over a row), where the comparison runs in SQLite without it (reading every
# queue's lease back cost 9.5 thousand instructions a delivery holding the GIL:
# ``bench.delivery_instructions --threads``).
_MOVED_ON = """
    SELECT j.key FROM json_each(?) AS j
    WHERE NOT EXISTS (
        SELECT 1 FROM delivery_queues q
        WHERE q.webhook_id = json_extract(j.value, '$[0]')
          AND q.user_id = json_extract(j.value, '$[1]')
          AND q.lease_owner = json_extract(j.value, '$[2]'))
"""


# A delivery's new state: status, attempt count, held (1 or 0), outcome, now, pk.
_RECORD = """
    UPDATE deliveries SET status = ?1, attempt_count = ?2, held_attempts = held_attempts + ?3,
        last_outcome = ?4, updated_at = ?5,
        dead_at = CASE WHEN ?1 = 'dead' THEN ?5 ELSE dead_at END
    WHERE pk = ?6
"""
_INSERT_ATTEMPTS = (
    f"INSERT INTO attempts ({', '.join(queue_pg.ATTEMPT_NAMES)})"
    f" VALUES ({', '.join('?' for _ in queue_pg.ATTEMPT_NAMES)})"
    " ON CONFLICT (delivery_id, attempt_number) DO NOTHING"
)
_SUPERSEDE = flow.SUPERSEDE_ROW
# Of the batch's webhooks, those with dead letters at all (one probe each of the dead-letters
# index): a delivered message of any other supersedes nothing, and skips ``_SUPERSEDE``, an
# UPDATE a row that cost about 4 CPU-us a delivery even when it matched nothing (issue 12).
_WITH_DEAD_LETTERS = """
    SELECT j.value FROM json_each(?) AS j
    WHERE EXISTS (SELECT 1 FROM deliveries d INDEXED BY ix_deliveries_dead_letters
                  WHERE d.webhook_id = j.value AND d.dead_at IS NOT NULL
                    AND d.status = 'dead')
"""
# The queue lets its lease go: a head still pending is due again at its retry time; a head
# that finished leaves (``pending`` - 1) and the next in line, if any, is due at once, or
# leased on to this worker (where ``?2`` says so: chained leases, ``queue.Chain``; the lease
# ``?3`` until ``?5``). A row: finished (1) or not (0), chained (1 or 0), lease, due at (when
# not finished), lease until, now, webhook, user. (The right-hand side reads the row as it was:
# ``pending`` is the count before this update; SQLite has one writer, so a next delivery
# counted there is there.)
_MOVE = """
    UPDATE delivery_queues SET pending = pending - ?1,
        lease_owner = CASE WHEN ?2 AND pending > 1 THEN ?3 END,
        due_ms = CASE WHEN ?1 = 0 THEN ?4 WHEN pending <= 1 THEN NULL WHEN ?2 THEN ?5
                      ELSE ?6 END
    WHERE webhook_id = ?7 AND user_id = ?8
"""
# Of the webhooks a record would chain for, those it may: enabled, not paused, not
# rate-limited (as the claim's).
_CHAINABLE = """
    SELECT id FROM webhooks
    WHERE id IN (SELECT value FROM json_each(?)) AND enabled AND rate_limit IS NULL
      AND id NOT IN (SELECT webhook_id FROM webhook_flow WHERE paused_until_ms > ?)
"""


def record(
    db: sqlite3.Connection,
    results: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    with_attempts: bool,
    flags: Sequence[bool] | None = None,
    lease: str | None = None,
    until_ms: int | None = None,
) -> tuple[list[Result], list[Any]]:
    """``queue.record`` but for pauses and disabling (which the caller does): the results
    whose queue's lease still held are recorded, with their attempts (unless told not to),
    their queues let the lease go (a finished head leaving, the next becoming due, or leased
    on with ``lease`` until ``until_ms`` where ``flags`` say so and the webhook allows), and
    dead letters their delivered messages supersede become so. Returns those results, and
    the rows of the next deliveries leased on (``queue.claimed_from``)."""
    keys = codec.dumps([[c.webhook_id, c.user_id, c.lease] for c in (r.claimed for r in results)])
    lost = {row[0] for row in db.execute(_MOVED_ON, (keys,))}
    wanted = flags if flags is not None else [False] * len(results)
    pairs = [
        (r, go) for i, (r, go) in enumerate(zip(results, wanted, strict=True)) if i not in lost
    ]
    kept = [r for r, _ in pairs]
    chain = [go and lease is not None for _, go in pairs]
    if not kept:
        return [], []
    if any(chain):
        asked = codec.dumps(
            sorted({r.claimed.webhook_id for r, go in zip(kept, chain, strict=True) if go})
        )
        allowed = {row[0] for row in db.execute(_CHAINABLE, (asked, now_ms))}
        chain = [go and r.claimed.webhook_id in allowed for r, go in zip(kept, chain, strict=True)]
    db.executemany(
        _MOVE,
        [
            (
                0 if r.status == "pending" else 1,
                1 if go else 0,
                lease,
                r.due_ms,
                until_ms,
                now_ms,
                r.claimed.webhook_id,
                r.claimed.user_id,
            )
            for r, go in zip(kept, chain, strict=True)
        ],
    )
    db.executemany(
        _RECORD,
        [
            (
                r.status,
                r.claimed.attempt_count + 1,
                1 if r.held else 0,
                r.outcome,
                now,
                r.claimed.pk,
            )
            for r in kept
        ],
    )
    if with_attempts:
        db.executemany(_INSERT_ATTEMPTS, [queue_pg.attempt_values(r) for r in kept])
    delivered = [
        (now, c.webhook_id, c.user_id, c.seq, c.subject, c.message_id)
        for c in (r.claimed for r in kept if r.status == "delivered")
        if c.subject is not None
    ]
    if delivered:
        hooks = codec.dumps(sorted({str(row[1]) for row in delivered}))
        dead = {row[0] for row in db.execute(_WITH_DEAD_LETTERS, (hooks,))}
        delivered = [row for row in delivered if row[1] in dead]
    if delivered:
        db.executemany(_SUPERSEDE, delivered)
    heads: list[Any] = []
    if any(chain):
        nexts = [
            [r.claimed.webhook_id, r.claimed.user_id, r.claimed.seq + 1]
            for r, go in zip(kept, chain, strict=True)
            if go
        ]
        heads = db.execute(HEADS_WITH_MESSAGES, (codec.dumps(nexts),)).fetchall()
    return kept, heads
