"""Damage done on purpose, for tests and drills: states forced past the queue's rules, rows
written without the service's invariants, a tampered ledger.

The service never calls these. They put the database in a state a test needs (a dead letter
without six real attempts, a delivery marked delivered behind the workers' back, a ledger
entry changed after the fact) so that the test can check what the service makes of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, update

from consent_relay.storage.tables import attempts, deliveries, ledger_entries
from consent_relay.storage.tx import Tx

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
    values: dict[str, Any] = {"status": status}
    if clear_due:
        values["due_ms"] = None
    return int((await tx.conn.execute(stmt.values(**values))).rowcount)


async def make_dead_letters(
    tx: Tx, ids: Sequence[str], *, attempt_count: int, last_outcome: str
) -> None:
    """Turn the deliveries ``ids`` into dead letters, as if their ``attempt_count`` attempts
    had failed, the last with ``last_outcome`` (no attempt rows are written)."""
    await tx.conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)))
        .values(status="dead", due_ms=None, attempt_count=attempt_count, last_outcome=last_outcome)
    )


async def insert_attempts(tx: Tx, rows: Sequence[Mapping[str, Any]]) -> None:
    """Attempt rows as given (every column of ``attempts`` but ``pk``), whatever the
    deliveries they name went through."""
    if rows:
        await tx.conn.execute(insert(attempts), [dict(row) for row in rows])


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
