"""Named queries for operators and tests: counts, states, raw rows.

The service never reads through here. These answer "what does the database hold?" plainly,
so that tests (and an operator's script) ask by name instead of writing SQL of their own:

- ``rows`` and ``count``: any table of the schema, filtered by column values; rows are
  dictionaries of the stored values (JSON documents as their stored text), in key order;
- questions a filter by equality cannot ask, grouped by entity below;
- ``dump``: every row of every table, as text (to look for what must not be stored);
- the schema as the database has it, and the planner's plan of the claim.

Damage done on purpose (a forced state, a tampered ledger) is in ``tamper.py``; the database
server itself (databases, sessions) in ``databases.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Connection, Table, and_, func, select, text
from sqlalchemy import inspect as schema_of

from consent_relay.storage import (
    codec,
    driver,
    due,
    flow,
    queue,
    queue_pg,
    queue_sqlite,
    ratelimit,
)
from consent_relay.storage import deliveries as deliveries_reads
from consent_relay.storage.tables import (
    attempts,
    deliveries,
    delivery_queues,
    erasures,
    events,
    messages,
    metadata,
    users,
    webhooks,
)
from consent_relay.storage.tx import Tx

if TYPE_CHECKING:
    import sqlite3

_TABLES: dict[str, Table] = {table.name: table for table in metadata.sorted_tables}


def _table(name: str) -> Table:
    try:
        return _TABLES[name]
    except KeyError:
        raise ValueError(f"no table {name!r} in the schema") from None


def _key_order(table: Table) -> list[Column[Any]]:
    """``pk`` where the table has one (insertion order), else its primary key."""
    if "pk" in table.c:
        return [table.c.pk]
    return list(table.primary_key.columns)


# -- any table --------------------------------------------------------------------------------


async def rows(tx: Tx, table_name: str, /, **equal_to: Any) -> list[dict[str, Any]]:
    """Every row of ``table_name`` whose columns equal ``equal_to`` (all of them when none
    is given), in key order, as dictionaries of the stored values."""
    table = _table(table_name)
    stmt = select(table).where(*(table.c[name] == value for name, value in equal_to.items()))
    result = await tx.conn.execute(stmt.order_by(*_key_order(table)))
    return [dict(row) for row in result.mappings()]


async def deliveries_with_clock(tx: Tx, /, **equal_to: Any) -> list[dict[str, Any]]:
    """``rows(tx, "deliveries", **equal_to)``, each with the clock and lease of its queue
    where it heads it (``due_ms``, ``lease_owner``; None for the others: a delivery waiting
    its turn, or finished). Since migration 0009 the queue row holds them."""
    q = delivery_queues
    head = and_(
        q.c.webhook_id == deliveries.c.webhook_id,
        q.c.user_id == deliveries.c.user_id,
        deliveries.c.status == "pending",
        deliveries.c.seq == q.c.last_seq - q.c.pending + 1,
    )
    stmt = (
        select(deliveries, q.c.due_ms, q.c.lease_owner)
        .select_from(deliveries.outerjoin(q, head))
        .where(*(deliveries.c[name] == value for name, value in equal_to.items()))
        .order_by(deliveries.c.pk)
    )
    return [dict(row) for row in (await tx.conn.execute(stmt)).mappings()]


async def count(tx: Tx, table_name: str, /, **equal_to: Any) -> int:
    """How many rows of ``table_name`` have columns equal to ``equal_to`` (all rows when
    none is given)."""
    table = _table(table_name)
    stmt = select(func.count()).select_from(table)
    stmt = stmt.where(*(table.c[name] == value for name, value in equal_to.items()))
    return int((await tx.conn.execute(stmt)).scalar_one())


# -- deliveries and attempts ------------------------------------------------------------------


async def count_undelivered(tx: Tx, webhook_id: str | None = None) -> int:
    """Deliveries (of ``webhook_id`` only, if given) not delivered: pending, dead or
    superseded."""
    stmt = select(func.count()).select_from(deliveries).where(deliveries.c.status != "delivered")
    if webhook_id is not None:
        stmt = stmt.where(deliveries.c.webhook_id == webhook_id)
    return int((await tx.conn.execute(stmt)).scalar_one())


async def count_deliveries_of_type(tx: Tx, org_id: str, message_type: str) -> int:
    """The organization's deliveries of messages of ``message_type`` (``event.created``...)."""
    stmt = (
        select(func.count())
        .select_from(deliveries.join(messages, messages.c.id == deliveries.c.message_id))
        .where(deliveries.c.organization_id == org_id, messages.c.type == message_type)
    )
    return int((await tx.conn.execute(stmt)).scalar_one())


async def statuses_and_purges(tx: Tx) -> list[tuple[str, str | None]]:
    """Each delivery's status beside its message's purge reason (None while kept)."""
    stmt = select(deliveries.c.status, messages.c.purge_reason).join(
        messages, messages.c.id == deliveries.c.message_id
    )
    return [(row.status, row.purge_reason) for row in await tx.conn.execute(stmt)]


async def count_leased(tx: Tx, owner_prefix: str) -> int:
    """Pending deliveries claimed by a worker whose lease owner starts with ``owner_prefix``
    (claimed and not yet recorded)."""
    stmt = (
        select(func.count())
        .select_from(delivery_queues)
        .where(
            delivery_queues.c.pending > 0,
            func.substr(delivery_queues.c.lease_owner, 1, len(owner_prefix)) == owner_prefix,
        )
    )
    return int((await tx.conn.execute(stmt)).scalar_one())


async def delivery_status(tx: Tx, delivery_id: str) -> str:
    """The delivery's status (it must exist)."""
    stmt = select(deliveries.c.status).where(deliveries.c.id == delivery_id)
    return str((await tx.conn.execute(stmt)).scalar_one())


async def replayed_by(tx: Tx, delivery_id: str) -> str | None:
    """The delivery that replays this dead letter, if it was replayed (it must exist)."""
    stmt = select(deliveries.c.replayed_by).where(deliveries.c.id == delivery_id)
    found = (await tx.conn.execute(stmt)).scalar_one()
    return None if found is None else str(found)


async def attempts_of(
    tx: Tx,
    *,
    user_id: str | None = None,
    webhook_id: str | None = None,
    delivery_status: str | None = None,
    purge_reason: str | None = None,
) -> list[dict[str, Any]]:
    """The attempts (rows of ``attempts``) of the deliveries to ``user_id``, or through
    ``webhook_id``, or in ``delivery_status``, or of messages purged for ``purge_reason`` (all
    that are given), in the order they were recorded."""
    stmt = select(attempts).join(deliveries, deliveries.c.id == attempts.c.delivery_id)
    if user_id is not None:
        stmt = stmt.where(deliveries.c.user_id == user_id)
    if webhook_id is not None:
        stmt = stmt.where(deliveries.c.webhook_id == webhook_id)
    if delivery_status is not None:
        stmt = stmt.where(deliveries.c.status == delivery_status)
    if purge_reason is not None:
        stmt = stmt.join(messages, messages.c.id == deliveries.c.message_id)
        stmt = stmt.where(messages.c.purge_reason == purge_reason)
    return [dict(row) for row in (await tx.conn.execute(stmt.order_by(attempts.c.pk))).mappings()]


async def deliveries_with_attempts(tx: Tx, webhook_id: str) -> list[dict[str, Any]]:
    """Each delivery through ``webhook_id`` beside each of its attempts, in order: its
    ``delivery_id``, ``status`` and ``attempt_count``, then the attempt's columns (``None``
    for a delivery without any attempt, which has one such entry)."""
    shown = [c for c in attempts.c if c.name not in ("pk", "id", "delivery_id")]
    stmt = (
        select(
            deliveries.c.id.label("delivery_id"),
            deliveries.c.status,
            deliveries.c.attempt_count,
            *shown,
        )
        .select_from(deliveries.outerjoin(attempts, attempts.c.delivery_id == deliveries.c.id))
        .where(deliveries.c.webhook_id == webhook_id)
        .order_by(deliveries.c.pk, attempts.c.pk)
    )
    return [dict(row) for row in (await tx.conn.execute(stmt)).mappings()]


async def queued_messages(tx: Tx, org_id: str) -> list[dict[str, Any]]:
    """What the organization's receivers will be sent, in queue order: for each delivery its
    webhook's ``url``, its user's ``organization_user_id``, its ``seq`` and its message's
    ``type`` and ``parameters``, by URL, then user, then ``seq``."""
    stmt = (
        select(
            webhooks.c.url,
            users.c.organization_user_id,
            deliveries.c.seq,
            messages.c.type,
            messages.c.parameters,
        )
        .select_from(
            deliveries.join(messages, messages.c.id == deliveries.c.message_id)
            .join(webhooks, webhooks.c.id == deliveries.c.webhook_id)
            .join(
                users,
                (users.c.id == deliveries.c.user_id)
                & (users.c.organization_id == deliveries.c.organization_id),
            )
        )
        .where(deliveries.c.organization_id == org_id)
        .order_by(webhooks.c.url, users.c.organization_user_id, deliveries.c.seq)
    )
    return [dict(row) for row in (await tx.conn.execute(stmt)).mappings()]


async def count_failed_attempts(tx: Tx) -> int:
    """Attempts whose outcome is not ``ok``."""
    stmt = select(func.count()).select_from(attempts).where(attempts.c.outcome != "ok")
    return int((await tx.conn.execute(stmt)).scalar_one())


# -- messages ---------------------------------------------------------------------------------


async def count_erased_messages(tx: Tx, user_id: str) -> int:
    """The user's messages purged by an erasure, the ``user.deleted`` notice excepted."""
    stmt = (
        select(func.count())
        .select_from(messages)
        .where(
            messages.c.user_id == user_id,
            messages.c.purge_reason == "erased",
            messages.c.type != "user.deleted",
        )
    )
    return int((await tx.conn.execute(stmt)).scalar_one())


async def unpurged_messages(tx: Tx) -> list[dict[str, Any]]:
    """The messages whose content is still kept (not purged), in insertion order."""
    stmt = select(messages).where(messages.c.purged_at.is_(None)).order_by(messages.c.pk)
    return [dict(row) for row in (await tx.conn.execute(stmt)).mappings()]


async def message_purge_reason(tx: Tx, message_id: str) -> str | None:
    """Why the message's content was purged; None while it is kept (or if it is unknown)."""
    stmt = select(messages.c.purge_reason).where(messages.c.id == message_id)
    found = (await tx.conn.execute(stmt)).scalar()
    return None if found is None else str(found)


# -- events -----------------------------------------------------------------------------------


async def events_by_user(tx: Tx) -> list[dict[str, Any]]:
    """Every event, user by user, each user's in ``seq`` order."""
    stmt = select(events).order_by(events.c.user_id, events.c.seq)
    return [dict(row) for row in (await tx.conn.execute(stmt)).mappings()]


# -- erasures ---------------------------------------------------------------------------------


async def erasure_settled_at(tx: Tx, user_id: str) -> str | None:
    """When the user's erasure was settled (every copy purged); None while it is not, or
    when the user was never erased."""
    stmt = select(erasures.c.settled_at).where(erasures.c.user_id == user_id)
    found = (await tx.conn.execute(stmt)).scalar()
    return None if found is None else str(found)


# -- the whole database -----------------------------------------------------------------------


_SQLITE_TABLES = text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
_POSTGRES_TABLES = text(
    "SELECT table_name AS name FROM information_schema.tables"
    " WHERE table_schema = current_schema() ORDER BY table_name"
)


async def table_names(tx: Tx) -> list[str]:
    """Every table in the database, the migrations' own bookkeeping included."""
    stmt = _SQLITE_TABLES if tx.dialect == "sqlite" else _POSTGRES_TABLES
    return [str(row.name) for row in await tx.conn.execute(stmt)]


async def dump(tx: Tx) -> list[tuple[str, str]]:
    """Every row of every table as ``(table, text)``: on SQLite the row's values joined by
    spaces, on PostgreSQL the row cast to text."""
    dumped: list[tuple[str, str]] = []
    for name in await table_names(tx):
        quoted = '"' + name.replace('"', '""') + '"'
        if tx.dialect == "sqlite":
            result = await tx.conn.execute(text(f"SELECT * FROM {quoted}"))
            dumped += [(name, " ".join(str(value) for value in row)) for row in result]
        else:
            result = await tx.conn.execute(text(f"SELECT CAST(t AS text) FROM {quoted} AS t"))
            dumped += [(name, str(value)) for (value,) in result]
    return dumped


# -- the schema and the planner ----------------------------------------------------------------


_POSTGRES_COLLATIONS = text(
    "SELECT table_name, column_name, collation_name FROM information_schema.columns"
    " WHERE table_schema = current_schema() AND data_type = 'text'"
    " AND table_name <> 'alembic_version' ORDER BY table_name, column_name"
)


async def text_collations(tx: Tx) -> dict[tuple[str, str], str | None]:
    """Each text column's collation on PostgreSQL, by (table, column) (``None``: the
    database's default); empty on SQLite, whose columns all compare ``BINARY``."""
    if tx.dialect == "sqlite":
        return {}
    rows = await tx.conn.execute(_POSTGRES_COLLATIONS)
    return {(str(r.table_name), str(r.column_name)): r.collation_name for r in rows}


async def schema_differences(tx: Tx) -> list[Any]:
    """What the database's schema lacks or has beyond ``tables.py`` (Alembic's comparison;
    empty when the migrations built exactly the tables described), and each PostgreSQL text
    column not collated ``"C"`` (``tables.Text``; Alembic does not compare collations)."""

    def differences(sync_connection: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync_connection), metadata))

    found = await tx.conn.run_sync(differences)
    collations = await text_collations(tx)
    return found + [
        ("collation", table, column, collation)
        for (table, column), collation in collations.items()
        if collation != "C"
    ]


async def unique_column_sets(tx: Tx, table_name: str) -> set[tuple[str, ...]]:
    """The column sets ``table_name`` keeps unique (its unique constraints and unique
    indexes, named or not; the primary key aside)."""
    _table(table_name)

    def sets(sync_connection: Connection) -> set[tuple[str, ...]]:
        schema = schema_of(sync_connection)
        found = {tuple(c["column_names"]) for c in schema.get_unique_constraints(table_name)}
        for index in schema.get_indexes(table_name):
            if index["unique"]:
                found.add(tuple(name or "" for name in index["column_names"]))
        return found

    return await tx.conn.run_sync(sets)


async def index_names(tx: Tx, table_name: str) -> set[str]:
    """The names of the indexes the database has on ``table_name``, as SQLAlchemy reflects
    them (PostgreSQL's include the indexes of unique constraints, SQLite's do not)."""
    _table(table_name)

    def names(sync_connection: Connection) -> set[str]:
        found = schema_of(sync_connection).get_indexes(table_name)
        return {index["name"] or "" for index in found}

    return await tx.conn.run_sync(names)


async def column_names(tx: Tx, table_name: str) -> set[str]:
    """The names of the columns the database has on ``table_name`` (reflected)."""
    _table(table_name)

    def names(sync_connection: Connection) -> set[str]:
        return {column["name"] for column in schema_of(sync_connection).get_columns(table_name)}

    return await tx.conn.run_sync(names)


_CLAIM_PARAMETERS: dict[str, Any] = {
    "now": 10**13,
    "limit": 100,
    "lease": "l",
    "until": 10**13,
    "excluded": "[]",
}


async def claim_plan(tx: Tx) -> str:
    """The planner's plan for the claim statement (``queue.claim_sql``), run on nothing: on
    SQLite the ``EXPLAIN QUERY PLAN`` details, one a line; on PostgreSQL the
    ``EXPLAIN (FORMAT JSON)`` document, as JSON text."""
    sql = queue.claim_sql(tx.dialect)
    if tx.dialect == "sqlite":  # the webhooks, their due queues, the lease, the heads' read
        lines: list[str] = []
        for statement, parameters in (
            (due.SQLITE_SERVED, _CLAIM_PARAMETERS),
            (due.SQLITE_DUE_OF_WEBHOOK, {"w": "w", "now": 10**13, "limit": 100}),
            (sql, {**_CLAIM_PARAMETERS, "rowids": "[]"}),
            (queue_sqlite.LEASED_HEADS_WITH_MESSAGES.replace("?", ":keys"), {"keys": "[]"}),
        ):
            result = await tx.conn.execute(text("EXPLAIN QUERY PLAN " + statement), parameters)
            lines.extend(str(row[-1]) for row in result)
        return "\n".join(lines)
    result = await tx.conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), _CLAIM_PARAMETERS)
    return json.dumps(result.one()[0])


async def listing_reads(tx: Tx, webhook_id: str, status: str) -> dict[str, int]:
    """PostgreSQL: a page of the webhook's deliveries in ``status`` (``deliveries.listing``,
    the first 100) run under ``EXPLAIN ANALYZE``: the rows its scans read (those a filter
    dropped included), by index (or table, for a sequential scan)."""
    stmt = deliveries_reads.listing(tx.dialect, webhook_id, status=status, after_pk=0, limit=100)
    sql = str(stmt.compile(dialect=tx.conn.dialect, compile_kwargs={"literal_binds": True}))
    result = await tx.conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql))
    reads: Counter[str] = Counter()

    def walk(node: dict[str, Any]) -> None:
        if "Scan" in node["Node Type"] and "Relation Name" in node:
            found = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            reads[node.get("Index Name", node["Relation Name"])] += found * node["Actual Loops"]
        for child in node.get("Plans", []):
            walk(child)

    walk(result.one()[0][0]["Plan"])
    return dict(reads)


async def _queue_reads(
    tx: Tx, sql: str, params: dict[str, Any], nested_loops: bool
) -> tuple[int, int, int]:
    """PostgreSQL: ``sql`` run under ``EXPLAIN ANALYZE`` in ``tx`` (it does its work): (rows
    it returned, ``delivery_queues`` rows its scans read, those a filter dropped included,
    and how many scans of it began: an index descent each). Without ``nested_loops`` the
    planner is told to avoid them for the rest of ``tx``, as its costs led it to on some
    tables (a hash join where it can)."""
    if not nested_loops:
        await tx.conn.execute(text("SET LOCAL enable_nestloop = off"))
    result = await tx.conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) " + sql), params)
    plan = result.one()[0][0]["Plan"]

    def read(node: dict[str, Any]) -> tuple[int, int]:
        rows = scans = 0
        if node.get("Relation Name") == "delivery_queues" and "Scan" in node["Node Type"]:
            found = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            rows, scans = found * node["Actual Loops"], node["Actual Loops"]
        for child in node.get("Plans", []):
            more = read(child)
            rows, scans = rows + more[0], scans + more[1]
        return rows, scans

    return int(plan["Actual Rows"]), *read(plan)


async def claim_reads(
    tx: Tx, *, limit: int, now_ms: int, lease: str, nested_loops: bool = True
) -> tuple[int, int, int]:
    """PostgreSQL: the claim statement run as ``_queue_reads`` says (it does lease, in
    ``tx``): (queues leased, ``delivery_queues`` rows read, scans of it begun)."""
    params = {**_CLAIM_PARAMETERS, "now": now_ms, "limit": limit, "lease": lease}
    return await _queue_reads(tx, queue.claim_sql(tx.dialect), params, nested_loops)


async def take_plan(tx: Tx) -> str:
    """SQLite: the ``EXPLAIN QUERY PLAN`` details of the rate-limited webhooks' lease
    (``ratelimit``'s take), one a line."""
    params = {"w": "w", "n": 100, "now": 10**13, "lease": "l", "until": 10**13}
    result = await tx.conn.execute(
        text("EXPLAIN QUERY PLAN " + ratelimit.TAKE_SQL[tx.dialect]), params
    )
    return "\n".join(str(row[-1]) for row in result)


async def take_reads(
    tx: Tx, *, webhook_id: str, n: int, now_ms: int, lease: str, nested_loops: bool = True
) -> tuple[int, int]:
    """PostgreSQL: the rate-limited webhooks' lease (``ratelimit``'s take of ``n`` due queues
    of ``webhook_id``) run as ``_queue_reads`` says (it does lease, in ``tx``): (queues
    leased, ``delivery_queues`` rows read)."""
    params = {"w": webhook_id, "n": n, "now": now_ms, "lease": lease, "until": now_ms + 60_000}
    leased, read, _scans = await _queue_reads(
        tx, ratelimit.TAKE_SQL[tx.dialect], params, nested_loops
    )
    return leased, read


async def claim_steps(tx: Tx, *, limit: int, now_ms: int, lease: str) -> tuple[int, int]:
    """SQLite: the worker's claim (``queue.claim_sqlite``) run in ``tx`` (it does lease), with
    SQLite's virtual machine counting its steps: (queues leased, thousands of steps)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    def work(db: sqlite3.Connection) -> int:
        db.set_progress_handler(count, 1000)
        try:
            claimed, _more = queue.claim_sqlite(
                db, limit=limit, now_ms=now_ms, lease=lease, lease_ms=60_000
            )
        finally:
            db.set_progress_handler(None, 0)
        return len(claimed)

    leased = await driver.on_sqlite(tx, work)
    return leased, steps


async def supersede_plan(tx: Tx) -> str:
    """The planner's plan for finding the dead letters a delivered message supersedes, run on
    nothing: on SQLite ``flow.SUPERSEDE_ROW``'s ``EXPLAIN QUERY PLAN`` details; on PostgreSQL
    the ``EXPLAIN (FORMAT JSON)`` of ``queue_pg.RECORD`` (which holds it), as JSON text."""
    if tx.dialect == "sqlite":
        result = await tx.conn.execute(
            text("EXPLAIN QUERY PLAN " + flow.SUPERSEDE_ROW.replace("?", ":p")),
            {"p": "x"},
        )
        return "\n".join(str(row[-1]) for row in result)
    raw = await driver.postgres(tx)
    assert raw is not None
    delivered = codec.dumps(
        [{"pk": 1, "w": "wh_1", "u": "u1", "seq": 9, "lease": "l", "status": "delivered",
          "due_ms": None, "fin": 1, "attempt_count": 1, "held": 0, "outcome": "delivered",
          "s": "user", "m": "msg_9", "chain": 0}]
    )  # fmt: skip
    document = await raw.fetchval(
        "EXPLAIN (FORMAT JSON) " + queue_pg.RECORD, delivered, "now", "[]", 0, None, None
    )
    return document if isinstance(document, str) else json.dumps(document)


# -- the server's sessions ----------------------------------------------------------------------


async def sessions_waiting_for_locks(tx: Tx) -> int:
    """How many sessions on this database (PostgreSQL) are waiting for a lock now."""
    result = await tx.conn.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )
    return int(result.scalar_one())
