"""Damage done on purpose, for tests and drills: states forced past the queue's rules, rows
written without the service's invariants, leases run out early, rows the database refuses,
messages it cannot read back, a tampered ledger.

The service never calls these. They put the database in a state a test needs (a dead letter
without six real attempts, a delivery marked delivered behind the workers' back, a ledger
entry changed after the fact) so that the test can check what the service makes of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, insert, select, text, update

from consent_relay.storage.tables import (
    attempts,
    deliveries,
    delivery_queues,
    ledger_entries,
    messages,
    metadata,
    webhooks,
)
from consent_relay.storage.tx import Tx

# -- any table --------------------------------------------------------------------------------


def _checked_column(table_name: str, column: str) -> None:
    """Fail unless ``table_name`` is a table of the schema with a column ``column``."""
    table = metadata.tables.get(table_name)
    if table is None or column not in table.c:
        raise ValueError(f"no column {column!r} of a table {table_name!r} in the schema")


def _literal(value: str) -> str:
    """``value`` as an SQL string literal (for DDL, which takes no bound parameters)."""
    return "'" + value.replace("'", "''") + "'"


async def insert_rows(tx: Tx, table_name: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows written into ``table_name`` as given, past the service and its invariants."""
    if table_name not in metadata.tables:
        raise ValueError(f"no table {table_name!r} in the schema")
    if rows:
        await tx.conn.execute(insert(metadata.tables[table_name]), [dict(row) for row in rows])


async def insert_old_rows(tx: Tx, table_name: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows written into ``table_name`` of a database at an older revision (migration tests):
    the columns the rows name, whatever ``tables.py`` says today. Every row names the same
    columns."""
    if table_name not in metadata.tables:
        raise ValueError(f"no table {table_name!r} in the schema")
    if not rows:
        return
    names = list(rows[0])
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"not a column name: {name!r}")
    columns = ", ".join(names)
    values = ", ".join(f":{name}" for name in names)
    await tx.conn.execute(
        text(f"INSERT INTO {table_name} ({columns}) VALUES ({values})"), [dict(r) for r in rows]
    )


async def forget_statistics(tx: Tx, table_names: Sequence[str]) -> None:
    """PostgreSQL forgets what it knows of these tables' contents, as for a table that was
    never analyzed (a new database): the planner falls back on its defaults. Superuser only."""
    for name in table_names:
        if name not in metadata.tables:
            raise ValueError(f"no table {name!r} in the schema")
        await tx.conn.execute(
            text("DELETE FROM pg_statistic WHERE starelid = CAST(:t AS regclass)"), {"t": name}
        )
        await tx.conn.execute(
            text(
                "UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = CAST(:t AS regclass)"
            ),
            {"t": name},
        )


async def refuse_inserts(tx: Tx, table_name: str, column: str, value: str) -> None:
    """A trigger (``refuse_row``) that makes the database refuse each row inserted into
    ``table_name`` whose ``column`` is ``value``, with the error "row refused by test"."""
    _checked_column(table_name, column)
    condition = f"NEW.{column} = {_literal(value)}"
    if tx.dialect == "postgresql":
        await tx.conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql "
                f"AS $$ BEGIN IF {condition} THEN RAISE EXCEPTION 'row refused by test'; "
                "END IF; RETURN NEW; END $$"
            )
        )
        await tx.conn.execute(
            text(
                f"CREATE TRIGGER refuse_row BEFORE INSERT ON {table_name} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_row()"
            )
        )
    else:
        await tx.conn.execute(
            text(
                f"CREATE TRIGGER refuse_row BEFORE INSERT ON {table_name} WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, 'row refused by test'); END"
            )
        )


async def allow_inserts(tx: Tx, table_name: str) -> None:
    """Drop the trigger of ``refuse_inserts`` on ``table_name``, if there is one."""
    if table_name not in metadata.tables:
        raise ValueError(f"no table {table_name!r} in the schema")
    if tx.dialect == "postgresql":
        await tx.conn.execute(text(f"DROP TRIGGER IF EXISTS refuse_row ON {table_name}"))
        await tx.conn.execute(text("DROP FUNCTION IF EXISTS refuse_row()"))
    else:
        await tx.conn.execute(text("DROP TRIGGER IF EXISTS refuse_row"))


# -- webhooks ---------------------------------------------------------------------------------


async def disable_webhook(tx: Tx, webhook_id: str, reason: str) -> None:
    """Disable the webhook as the service does on a 410, with ``reason`` as its reason."""
    await tx.conn.execute(
        update(webhooks)
        .where(webhooks.c.id == webhook_id)
        .values(enabled=False, disabled_reason=reason)
    )


# -- deliveries and attempts ------------------------------------------------------------------


async def set_delivery_status(
    tx: Tx,
    status: str,
    *,
    ids: Sequence[str] | None = None,
    user_id: str | None = None,
    webhook_id: str | None = None,
    clear_due: bool = False,
) -> int:
    """Give ``status`` to the deliveries chosen by ``ids``, ``user_id`` and ``webhook_id``
    (all that are given), taking them off the queue's clock too if ``clear_due``; nothing
    else of theirs changes. Returns how many there were."""
    if ids is None and user_id is None and webhook_id is None:
        raise ValueError("choose the deliveries: ids, user_id or webhook_id")
    stmt = update(deliveries)
    if ids is not None:
        stmt = stmt.where(deliveries.c.id.in_(list(ids)))
    if user_id is not None:
        stmt = stmt.where(deliveries.c.user_id == user_id)
    if webhook_id is not None:
        stmt = stmt.where(deliveries.c.webhook_id == webhook_id)
    if clear_due:
        await _stop_clocks(tx, stmt.whereclause)
    # ``dead_at`` with it, as the record sets it (set for dead letters only: migration 0014)
    dead_at = deliveries.c.updated_at if status in ("dead", "superseded") else None
    return int((await tx.conn.execute(stmt.values(status=status, dead_at=dead_at))).rowcount)


def _heads(chosen: Any) -> Any:
    """A condition on ``delivery_queues``: the queue's head is a delivery ``chosen`` (a
    condition on ``deliveries``) picks."""
    return (
        select(deliveries.c.pk)
        .where(
            chosen,
            deliveries.c.webhook_id == delivery_queues.c.webhook_id,
            deliveries.c.user_id == delivery_queues.c.user_id,
            deliveries.c.seq == delivery_queues.c.last_seq - delivery_queues.c.pending + 1,
        )
        .exists()
    )


async def _stop_clocks(tx: Tx, chosen: Any) -> None:
    """Take off the clock (no due time, no lease) the queues headed by a delivery that
    ``chosen`` (a condition on ``deliveries``) picks."""
    await tx.conn.execute(
        update(delivery_queues).where(_heads(chosen)).values(due_ms=None, lease_owner=None)
    )


async def make_dead_letters(
    tx: Tx, ids: Sequence[str], *, attempt_count: int, last_outcome: str
) -> None:
    """Turn the deliveries ``ids`` into dead letters, as if their ``attempt_count`` attempts
    had failed, the last with ``last_outcome`` (no attempt rows are written)."""
    chosen = deliveries.c.id.in_(list(ids))
    await _stop_clocks(tx, chosen)
    await tx.conn.execute(
        update(deliveries)
        .where(chosen)
        .values(
            status="dead",
            attempt_count=attempt_count,
            last_outcome=last_outcome,
            dead_at=deliveries.c.updated_at,
        )
    )


async def expire_leases(tx: Tx, owner_prefix: str = "") -> int:
    """Make the pending deliveries leased by owners whose id starts with ``owner_prefix``
    (every leased one when it is empty) due at once (``due_ms`` 0), as their leases running
    out would; returns how many there were."""
    stmt = update(delivery_queues).where(
        delivery_queues.c.lease_owner.is_not(None), _heads(deliveries.c.status == "pending")
    )
    if owner_prefix:
        prefix = func.substr(delivery_queues.c.lease_owner, 1, len(owner_prefix))
        stmt = stmt.where(prefix == owner_prefix)
    return int((await tx.conn.execute(stmt.values(due_ms=0))).rowcount)


async def take_lease(tx: Tx, webhook_id: str, user_id: str, owner: str) -> None:
    """Hand the lease on the queue of ``user_id`` at ``webhook_id`` to ``owner``, as another
    worker's claim after this one's lease ran out would."""
    await tx.conn.execute(
        update(delivery_queues)
        .where(delivery_queues.c.webhook_id == webhook_id, delivery_queues.c.user_id == user_id)
        .values(lease_owner=owner)
    )


async def delete_webhook_row(tx: Tx, webhook_id: str) -> None:
    """Remove the webhook's row alone (its deliveries and queues left as they were), as a
    deletion that commits while a worker holds its deliveries would leave them to it."""
    await tx.conn.execute(webhooks.delete().where(webhooks.c.id == webhook_id))


async def insert_attempts(tx: Tx, rows: Sequence[Mapping[str, Any]]) -> None:
    """Attempt rows as given (every column of ``attempts`` but ``pk``), whatever the
    deliveries they name went through."""
    if rows:
        await tx.conn.execute(insert(attempts), [dict(row) for row in rows])


# -- messages ---------------------------------------------------------------------------------


async def make_message_unreadable(tx: Tx, message_id: str) -> None:
    """Store parameters the database cannot hand back as JSON: on SQLite text that is not
    UTF-8 (which the relay never writes), on PostgreSQL (whose text is always UTF-8) text
    that is not JSON, which ``parsing_claim_sql`` and ``messages_by_id_parsed`` refuse."""
    not_utf8 = text("CAST(X'7B22FF227D' AS TEXT)")  # {"\xff"}
    parameters = not_utf8 if tx.dialect == "sqlite" else '{"not json'
    await tx.conn.execute(
        update(messages).where(messages.c.id == message_id).values(parameters=parameters)
    )


_PARSED = "CAST(CAST(m.parameters AS jsonb) AS text) AS parameters"


def parsing_claim_sql(plain: Callable[[str, bool], str]) -> Callable[[str, bool], str]:
    """``plain`` (``queue.claim_sql``) reading each message's parameters parsed (PostgreSQL:
    ``CAST AS jsonb``), so that one that is not JSON fails the claim's statement."""

    def claim_sql(dialect: str, with_messages: bool = True) -> str:
        return plain(dialect, with_messages).replace("m.parameters", _PARSED)

    return claim_sql


async def messages_by_id_parsed(tx: Tx, message_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``queue.messages_by_id`` with each message's parameters parsed as they are read
    (PostgreSQL): a message that is not JSON fails the whole read."""
    found = await tx.conn.execute(
        text(
            f"SELECT m.id, m.type, m.regulation, {_PARSED} FROM messages m WHERE m.id = ANY(:ids)"
        ),
        {"ids": list(message_ids)},
    )
    return {
        r.id: {"type": r.type, "regulation": r.regulation, "parameters": r.parameters}
        for r in found
    }


# -- the ledger -------------------------------------------------------------------------------


async def change_ledger_status_code(tx: Tx, seq: int, status_code: int) -> None:
    """Rewrite the status code of the ledger entry ``seq`` (its hash is left as it was)."""
    await tx.conn.execute(
        update(ledger_entries).where(ledger_entries.c.seq == seq).values(status_code=status_code)
    )


async def delete_ledger_entry(tx: Tx, seq: int) -> None:
    """Remove the ledger entry ``seq`` (its neighbours are left as they were)."""
    await tx.conn.execute(ledger_entries.delete().where(ledger_entries.c.seq == seq))


async def swap_ledger_entries(tx: Tx, first: int, second: int) -> None:
    """Exchange the places (``seq``) of two ledger entries, leaving their contents."""
    for old, new in ((first, -first), (second, first), (-first, second)):
        await tx.conn.execute(
            update(ledger_entries).where(ledger_entries.c.seq == old).values(seq=new)
        )
