"""The write path's batch (services/ingest.py) in two statements on PostgreSQL.

A batch reads, then writes. On PostgreSQL each half is one statement sent to asyncpg
directly (``storage.driver``), inside the batch's transaction:

    read    the users the batch names, locked in id order, which of its event ids are
            taken and the organization's webhook stamp: one SELECT (a LEFT JOIN from the
            one-row list of taken ids, so that it answers even when no user exists yet). The
            stamp spares fan-out a statement of its own while this process keeps the list
            of that stamp (services/webhook_cache.py; a round trip less a batch, measured)
    write   new users, changed users, events, messages, the queues' sequence numbers, the
            deliveries and the workers' wake-up: one statement of data-modifying CTEs

The write computes each delivery's place in its (webhook, user) queue in SQL from what the
queue upsert returns (its last sequence number and pending count after the batch): the
``k``-th new delivery of a queue that got ``n`` gets ``last_seq - n + 1 + k``, and a queue
that was empty gets its clock in the upsert (its first new delivery, the head, is due at
once). That is the same rule as ``queue_append.append`` (one upsert, then the rows), with its
round trips folded into one.

Before, the same batch took eight statements through SQLAlchemy (``users.lock_many``,
``events.existing_ids``, ``users.insert_many``, ``users.update_many``, ``events.insert_many``
and ``queue_append.enqueue``'s three). On SQLite it runs the same steps as plain ``sqlite3``
calls in one hop to aiosqlite's thread for the read and one for the write
(``driver.on_sqlite``), instead of a hop or two a statement: the read with those statements'
texts, the write's rows one a call (``executemany``; see ``_INSERT_USER_SQLITE``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row

from consent_relay import ids
from consent_relay.storage import codec, driver, flow, mapping, queue_append
from consent_relay.storage import events as stored_events
from consent_relay.storage import users as stored_users
from consent_relay.storage.dialect import Columns
from consent_relay.storage.records import EventRecord, MessageRecord, NewDelivery, UserRecord
from consent_relay.storage.tx import Tx


@dataclass
class Locked:
    """What the read of a batch found: the users it names (locked), which of its event ids
    are taken, and the organization's webhook stamp (None: no such organization)."""

    users: list[UserRecord]
    taken: set[str]
    webhooks_stamp: int | None


@dataclass
class Written:
    """What the write inserted, to tell a lost race (another process first) from success."""

    users: int
    events: int


async def lock_and_check(
    tx: Tx, org_id: str, user_ids: Sequence[str], ouids: Sequence[str], event_ids: Sequence[str]
) -> Locked:
    """The organization's users named by id or organization_user_id, locked for the rest of
    the transaction (in id order), which of ``event_ids`` it already has, and its webhook
    stamp, all from one statement."""
    conn = await driver.postgres(tx)
    if conn is None:
        return await driver.on_sqlite(
            tx, lambda db: _read_sqlite(db, org_id, user_ids, ouids, event_ids)
        )
    rows = await conn.fetch(_READ_SQL, org_id, list(user_ids), list(ouids), list(event_ids))
    taken = set(rows[0]["taken"])
    found = [driver.Record(row) for row in rows if row["id"] is not None]
    users = [mapping.user(cast("Row[Any]", row)) for row in found]
    return Locked(users, taken, rows[0]["webhooks_stamp"])


async def write(
    tx: Tx,
    *,
    new_users: Sequence[UserRecord],
    changed_users: Sequence[UserRecord],
    new_events: Sequence[EventRecord],
    new_messages: Sequence[MessageRecord],
    new_deliveries: Sequence[NewDelivery],
    now_ms: int,
    now: str,
) -> Written:
    """Write what a batch worked out; deliveries get their ids."""
    conn = await driver.postgres(tx)
    queues, delivery_rows = _place(new_deliveries)
    if conn is None:
        user_rows = [_user_row(user) for user in new_users]
        changed_rows = [_user_row(user) for user in changed_users]
        event_rows = [_event_row(event) for event in new_events]
        message_rows = [queue_append.message_values(m) for m in new_messages]
        return await driver.on_sqlite(
            tx,
            lambda db: _write_sqlite(
                db,
                user_rows,
                changed_rows,
                event_rows,
                message_rows,
                queues,
                delivery_rows,
                now_ms,
                now,
            ),
        )
    row = await conn.fetchrow(
        _WRITE_SQL,
        stored_users.rows_json(new_users),
        stored_users.rows_json(changed_users),
        stored_events.rows_json(new_events),
        queue_append.message_rows_json(new_messages),
        codec.dumps(queues),
        codec.dumps(delivery_rows),
        now_ms,
        now,
    )
    assert row is not None
    return Written(int(row["users"]), int(row["events"]))


def _place(new: Sequence[NewDelivery]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each delivery's queue, its rank ``k`` among the batch's deliveries of that queue and
    the queue's count ``n``; queues sorted (one lock order for every writer) and rows in that
    order (``o``), ids made in the batch's order: as ``queue_append.append`` does."""
    by_queue: dict[tuple[str, str], list[NewDelivery]] = {}
    for item in new:
        item.id = ids.DELIVERIES.new()
        by_queue.setdefault((item.webhook_id, item.message.user_id), []).append(item)
    queues: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for (webhook_id, user_id), items in sorted(by_queue.items()):
        queues.append({"w": webhook_id, "u": user_id, "n": len(items)})
        for k, item in enumerate(items):
            message = item.message
            rows.append(
                {
                    "id": item.id,
                    "organization_id": message.organization_id,
                    "webhook_id": webhook_id,
                    "message_id": message.id,
                    "user_id": user_id,
                    "k": k,
                    "n": len(items),
                    "o": len(rows),
                    "subject": flow.subject_of(message.type, message.parameters),
                }
            )
    return queues, rows


# -- SQLite: one hop for the read, one for the write ----------------------------------------


def _user_row(user: UserRecord) -> tuple[Any, ...]:
    """A user's columns in ``_USERS`` order (its key first)."""
    values = mapping.user_values(user)
    return tuple(values[name] for name, _ in _USERS)


def _event_row(event: EventRecord) -> tuple[Any, ...]:
    """An event's columns in ``_EVENTS`` order."""
    values = mapping.event_values(event)
    return tuple(values[name] for name, _ in _EVENTS)


def _read_sqlite(
    db: sqlite3.Connection,
    org_id: str,
    user_ids: Sequence[str],
    ouids: Sequence[str],
    event_ids: Sequence[str],
) -> Locked:
    users: list[UserRecord] = []
    if user_ids or ouids:
        cursor = db.execute(
            stored_users.LOCK_SQL["sqlite"],
            {"org": org_id, "ids": codec.dumps(list(user_ids)), "ouids": codec.dumps(list(ouids))},
        )
        names = [column[0] for column in cursor.description]
        found = [driver.Record(dict(zip(names, row, strict=True))) for row in cursor]
        users = [mapping.user(cast("Row[Any]", row)) for row in found]
    taken: set[str] = set()
    if event_ids:
        params = {"org": org_id, "ids": codec.dumps(list(event_ids))}
        taken = {row[0] for row in db.execute(stored_events.EXISTING_SQL["sqlite"], params)}
    stamp = db.execute(_STAMP_SQL_SQLITE, (org_id,)).fetchone()
    return Locked(users, taken, None if stamp is None else int(stamp[0]))


def _write_sqlite(
    db: sqlite3.Connection,
    user_rows: list[tuple[Any, ...]],
    changed_rows: list[tuple[Any, ...]],
    event_rows: list[tuple[Any, ...]],
    message_rows: list[tuple[Any, ...]],
    queues: list[dict[str, Any]],
    delivery_rows: list[dict[str, Any]],
    now_ms: int,
    now: str,
) -> Written:
    inserted_users = 0
    if user_rows:
        # ON CONFLICT DO NOTHING: the rows changed are the users inserted
        inserted_users = db.executemany(_INSERT_USER_SQLITE, user_rows).rowcount
        if inserted_users < len(user_rows):
            return Written(inserted_users, 0)  # the caller runs the batch again
    if changed_rows:
        # the key last: (organization_id, id) moved behind the columns set
        db.executemany(_UPDATE_USER_SQLITE, [row[2:] + row[:2] for row in changed_rows])
    inserted_events = 0
    if event_rows:
        # ON CONFLICT DO NOTHING: the rows changed are the events inserted
        inserted_events = db.executemany(_INSERT_EVENT_SQLITE, event_rows).rowcount
    if message_rows:
        db.executemany(_INSERT_MESSAGE_SQLITE, message_rows)
    if queues:
        reserved = db.execute(
            queue_append.RESERVE_SQL["sqlite"], {"rows": codec.dumps(queues), "now": now_ms}
        )
        counters = {(w, u): (last_seq, pending) for w, u, last_seq, pending in reserved}
        placed = []
        for row in delivery_rows:
            last_seq, _pending = counters[(row["webhook_id"], row["user_id"])]
            n, k = row["n"], row["k"]
            placed.append(
                (
                    row["id"],
                    row["organization_id"],
                    row["webhook_id"],
                    row["message_id"],
                    row["user_id"],
                    last_seq - n + 1 + k,
                    row["subject"],
                    now,
                )
            )
        db.executemany(_INSERT_DELIVERY_SQLITE, placed)
    return Written(inserted_users, inserted_events)


# -- PostgreSQL: two statements ------------------------------------------------------------


def _source(param: int, columns: Columns) -> str:
    spec = ", ".join(f"{name} {kind}" for name, kind in columns)
    return f"json_to_recordset(${param}::json) AS v({spec})"


def _names(columns: Columns) -> str:
    return ", ".join(name for name, _ in columns)


# Every lookup is one index probe per name, whatever the planner knows: a LATERAL subquery
# per name, LIMIT 1 in the order of the unique index that answers it (at most one row
# matches, so the order changes nothing but the planner's choice of index). Written as
# ``organization_id = $1 AND (id = ANY($2) OR organization_user_id = ANY($3))``, a table
# without statistics yet (a new database, the first minute of a deployment: autovacuum
# analyzes once a minute at best) got a plan that read every user of the organization and
# filtered them, and every event of it for the taken ids: without statistics
# ``organization_id = $1`` looks like a handful of rows. The batch's cost then grew with the
# tables (ingest bench, 10 s on a new database: ~200 index entries read per probe of
# uq_users_org_ouid, pg_stat_user_indexes). tests/integration/test_write_batch.py keeps it.
# The rows are then locked by primary key alone (an array worked out first), so that a row
# updated meanwhile is rechecked against ``pk = ANY(...)`` only.
_READ_SQL = """
    WITH locked AS (
        SELECT * FROM users
        WHERE pk = ANY(ARRAY(
            SELECT f.pk FROM unnest($2::text[]) AS n(id) CROSS JOIN LATERAL (
                SELECT pk FROM users WHERE organization_id = $1 AND id = n.id
                ORDER BY organization_id, id LIMIT 1
            ) AS f
            UNION
            SELECT f.pk FROM unnest($3::text[]) AS n(ouid) CROSS JOIN LATERAL (
                SELECT pk FROM users WHERE organization_id = $1 AND organization_user_id = n.ouid
                ORDER BY organization_id, organization_user_id LIMIT 1
            ) AS f
        ))
        ORDER BY id
        FOR UPDATE
    )
    SELECT t.taken, t.webhooks_stamp, locked.*
    FROM (
        SELECT (SELECT webhooks_version FROM organizations WHERE id = $1) AS webhooks_stamp,
        ARRAY(
            SELECT e.id FROM unnest($4::text[]) AS n(id) CROSS JOIN LATERAL (
                SELECT id FROM events WHERE organization_id = $1 AND id = n.id
                ORDER BY organization_id, id LIMIT 1
            ) AS e
        ) AS taken
    ) AS t
    LEFT JOIN locked ON true
"""

_STAMP_SQL_SQLITE = "SELECT webhooks_version FROM organizations WHERE id = ?"

_USERS = stored_users.COLUMNS
_EVENTS = stored_events.COLUMNS
_MESSAGES = queue_append.MESSAGE_COLUMNS

# One row a call (sqlite3's executemany): SQLite 3.40 parses a JSON array's object once a
# column with json_extract, which cost more than the statement's own work (bench.write_path).
_INSERT_DELIVERY_SQLITE = (
    "INSERT INTO deliveries (id, organization_id, webhook_id, message_id, user_id, seq, status,"
    " attempt_count, subject, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?8, ?8)"
)
_INSERT_USER_SQLITE = (
    f"INSERT INTO users ({', '.join(name for name, _ in _USERS)})"
    f" VALUES ({', '.join('?' for _ in _USERS)}) ON CONFLICT DO NOTHING"
)
_UPDATE_USER_SQLITE = (
    f"UPDATE users SET {', '.join(f'{name} = ?' for name, _ in _USERS[2:])}"
    " WHERE organization_id = ? AND id = ?"
)
_INSERT_EVENT_SQLITE = (
    f"INSERT INTO events ({', '.join(name for name, _ in _EVENTS)})"
    f" VALUES ({', '.join('?' for _ in _EVENTS)}) ON CONFLICT DO NOTHING"
)
_INSERT_MESSAGE_SQLITE = (
    f"INSERT INTO messages ({', '.join(name for name, _ in _MESSAGES)})"
    f" VALUES ({', '.join('?' for _ in _MESSAGES)})"
)
_DELIVERIES: Columns = (
    ("id", "text"),
    ("organization_id", "text"),
    ("webhook_id", "text"),
    ("message_id", "text"),
    ("user_id", "text"),
    ("k", "bigint"),
    ("n", "bigint"),
    ("o", "bigint"),
    ("subject", "text"),
)
_USER_SETS = ", ".join(f"{name} = v.{name}" for name, _ in _USERS[2:])

_WRITE_SQL = f"""
    WITH new_users AS (
        INSERT INTO users ({_names(_USERS)})
        SELECT {_names(_USERS)} FROM {_source(1, _USERS)}
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), changed_users AS (
        UPDATE users SET {_USER_SETS}
        FROM {_source(2, _USERS)}
        WHERE users.organization_id = v.organization_id AND users.id = v.id
        RETURNING 1
    ), new_events AS (
        INSERT INTO events ({_names(_EVENTS)})
        SELECT {_names(_EVENTS)} FROM {_source(3, _EVENTS)}
        ON CONFLICT DO NOTHING
        RETURNING 1
    ), new_messages AS (
        INSERT INTO messages ({_names(_MESSAGES)})
        SELECT {_names(_MESSAGES)} FROM {_source(4, _MESSAGES)}
        RETURNING 1
    ), queues AS (
        INSERT INTO delivery_queues (webhook_id, user_id, last_seq, pending, due_ms)
        SELECT w, u, n, n, $7::bigint
        FROM {_source(5, (("w", "text"), ("u", "text"), ("n", "bigint")))}
        ON CONFLICT (webhook_id, user_id) DO UPDATE
        SET last_seq = delivery_queues.last_seq + excluded.last_seq,
            pending = delivery_queues.pending + excluded.pending,
            due_ms = CASE WHEN delivery_queues.pending = 0 THEN excluded.due_ms
                          ELSE delivery_queues.due_ms END
        RETURNING webhook_id, user_id, last_seq, pending
    ), new_deliveries AS (
        INSERT INTO deliveries (id, organization_id, webhook_id, message_id, user_id, seq,
                                status, attempt_count, subject, created_at, updated_at)
        SELECT v.id, v.organization_id, v.webhook_id, v.message_id, v.user_id,
               q.last_seq - v.n + 1 + v.k, 'pending', 0, v.subject, $8, $8
        FROM {_source(6, _DELIVERIES)}
        JOIN queues AS q ON q.webhook_id = v.webhook_id AND q.user_id = v.user_id
        ORDER BY v.o
        RETURNING 1
    ), wake AS (
        SELECT pg_notify('consent_relay_deliveries', '')
        WHERE EXISTS (SELECT 1 FROM new_deliveries)
    )
    SELECT (SELECT count(*) FROM new_users) AS users,
           (SELECT count(*) FROM new_events) AS events,
           (SELECT count(*) FROM changed_users) AS changed,
           (SELECT count(*) FROM new_messages) AS messages,
           (SELECT count(*) FROM wake) AS woken
"""


async def postgres_read_plan(
    tx: Tx, org_id: str, user_ids: Sequence[str], ouids: Sequence[str], event_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """PostgreSQL's executed plan of the batch's read (``EXPLAIN ANALYZE``), every node of it,
    for the test that keeps each lookup a probe by name; [] on SQLite."""
    conn = await driver.postgres(tx)
    if conn is None:
        return []
    explained = await conn.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + _READ_SQL,
        org_id,
        list(user_ids),
        list(ouids),
        list(event_ids),
    )
    nodes: list[dict[str, Any]] = []
    todo = [explained[0]["Plan"]]  # the connection's json codec (SQLAlchemy's) decoded it
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


async def sqlite_read_plans(tx: Tx) -> list[str]:
    """SQLite's plan of the batch's read statements (``EXPLAIN QUERY PLAN`` details), for the
    test that keeps every lookup on its unique index."""
    params = {"org": "o", "ids": "[]", "ouids": "[]"}

    def plans(db: sqlite3.Connection) -> list[str]:
        found: list[str] = []
        for sql in (stored_users.LOCK_SQL["sqlite"], stored_events.EXISTING_SQL["sqlite"]):
            found.extend(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
        return found

    return await driver.on_sqlite(tx, plans)
