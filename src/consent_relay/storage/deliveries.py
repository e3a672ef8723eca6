"""Reading deliveries, their attempts and dead letters (the queue's writes are in
``queue.py`` and ``batches.py``).

Every listing goes through an index: a webhook's deliveries through
``ix_deliveries_webhook`` or the primary key, its pending ones through its queues, its dead
letters through ``ix_deliveries_letters``, a delivery's attempts through
``uq_attempts_number``. (No index names ``status``: migration 0014.) Rows become
``DeliveryRecord`` and ``AttemptRecord`` here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Row, Select, Subquery, and_, func, select, text

from consent_relay.storage import codec
from consent_relay.storage.records import (
    AttemptRecord,
    DeliveryDetail,
    DeliveryRecord,
    StoredMessage,
)
from consent_relay.storage.tables import attempts, deliveries, delivery_queues, messages
from consent_relay.storage.tx import Tx

_COLUMNS = (
    deliveries.c.organization_id,
    deliveries.c.id,
    deliveries.c.webhook_id,
    deliveries.c.message_id,
    deliveries.c.user_id,
    deliveries.c.seq,
    deliveries.c.status,
    deliveries.c.attempt_count,
    delivery_queues.c.due_ms,
    delivery_queues.c.lease_owner,
    deliveries.c.created_at,
    deliveries.c.updated_at,
    deliveries.c.last_outcome,
    deliveries.c.replay_of,
    deliveries.c.replayed_by,
    deliveries.c.pk,
    messages.c.type,
)


# A pending delivery that heads its queue has the queue's clock and lease (migration 0009);
# the others have neither. One primary-key probe a delivery.
_HEAD_OF = and_(
    delivery_queues.c.webhook_id == deliveries.c.webhook_id,
    delivery_queues.c.user_id == deliveries.c.user_id,
    deliveries.c.status == "pending",
    deliveries.c.seq == delivery_queues.c.last_seq - delivery_queues.c.pending + 1,
)


def _select(*extra: Any) -> Select[Any]:
    """Deliveries with their message's type (and ``extra`` columns of the message), and the
    queue's clock and lease where they head it."""
    return (
        select(*_COLUMNS, *extra)
        .select_from(deliveries)
        .join(messages, messages.c.id == deliveries.c.message_id)
        .outerjoin(delivery_queues, _HEAD_OF)
    )


def _delivery(row: Row[Any]) -> DeliveryRecord:
    return DeliveryRecord(
        organization_id=row.organization_id,
        id=row.id,
        webhook_id=row.webhook_id,
        message_id=row.message_id,
        user_id=row.user_id,
        seq=row.seq,
        status=row.status,
        attempt_count=row.attempt_count,
        due_ms=row.due_ms,
        lease_owner=row.lease_owner,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_outcome=row.last_outcome,
        replay_of=row.replay_of,
        replayed_by=row.replayed_by,
        pk=row.pk,
        type=row.type,
    )


def _attempt(row: Row[Any]) -> AttemptRecord:
    return AttemptRecord(
        id=row.id,
        delivery_id=row.delivery_id,
        attempt_number=row.attempt_number,
        started_at=row.started_at,
        duration_ms=row.duration_ms,
        outcome=row.outcome,
        status_code=row.status_code,
        response_body=row.response_body,
        response_bytes=row.response_bytes,
        request_headers=codec.loads(row.request_headers),
        error=row.error,
    )


# A webhook's first pending deliveries after a pk, through its queues: its queues with a
# delivery on the clock (``ix_delivery_queues_webhook_due``), then each one's head and those
# after it (``ix_deliveries_queue``). The join's order is fixed (a ``LATERAL``, the page's
# conditions outside it; SQLite's ``INDEXED BY``): on tables without statistics PostgreSQL
# otherwise walked the webhook's history in ``ix_deliveries_webhook``.
_PENDING_PG = """
    SELECT p.pk FROM delivery_queues q CROSS JOIN LATERAL (
        SELECT d.pk, d.status FROM deliveries d
        WHERE d.webhook_id = q.webhook_id AND d.user_id = q.user_id
          AND d.seq > q.last_seq - q.pending
        OFFSET 0) AS p
    WHERE q.webhook_id = :pending_w AND q.due_ms IS NOT NULL AND p.pk > :pending_after
      AND p.status = 'pending'
    ORDER BY p.pk LIMIT :pending_limit
"""
_PENDING_SQLITE = """
    SELECT d.pk FROM delivery_queues q INDEXED BY ix_delivery_queues_webhook_due
    JOIN deliveries d INDEXED BY ix_deliveries_queue
      ON d.webhook_id = q.webhook_id AND d.user_id = q.user_id
     AND d.seq > q.last_seq - q.pending
    WHERE q.webhook_id = :pending_w AND q.due_ms IS NOT NULL AND d.pk > :pending_after
      AND d.status = 'pending'
    ORDER BY d.pk LIMIT :pending_limit
"""


def pending_of(dialect: str, webhook_id: str, *, after_pk: int, limit: int) -> Subquery:
    """The pks (column ``pk``) of the webhook's first ``limit`` pending deliveries after
    ``after_pk``, in order, through its queues: no index names ``status`` (migration 0014),
    and a queue's pending deliveries are its head and those after it, so this reads the
    webhook's queues on the clock and their pending deliveries, however long its history."""
    sql = _PENDING_SQLITE if dialect == "sqlite" else _PENDING_PG
    bound = text(sql).bindparams(pending_w=webhook_id, pending_after=after_pk, pending_limit=limit)
    return bound.columns(pk=BigInteger).subquery()


def is_letter(*statuses: str) -> Any:
    """Deliveries in ``statuses`` (dead, superseded), through the dead letters' indexes
    (partial on ``dead_at``, set for those only: migration 0014)."""
    return and_(deliveries.c.dead_at.is_not(None), deliveries.c.status.in_(statuses))


async def list_for_webhook(
    tx: Tx, webhook_id: str, *, status: str | None, after_pk: int, limit: int
) -> list[DeliveryRecord]:
    """The webhook's deliveries after ``after_pk``, oldest first (API pages)."""
    stmt = listing(tx.dialect, webhook_id, status=status, after_pk=after_pk, limit=limit)
    return [_delivery(row) for row in await tx.conn.execute(stmt)]


def listing(
    dialect: str, webhook_id: str, *, status: str | None, after_pk: int, limit: int
) -> Select[Any]:
    """``list_for_webhook``'s statement: all of a webhook's deliveries or the delivered ones
    through ``ix_deliveries_webhook``, the pending ones through the webhook's queues, the
    dead letters through their own index; none reads the rest of the webhook's history."""
    if status == "pending":
        pending = pending_of(dialect, webhook_id, after_pk=after_pk, limit=limit)
        stmt = _select().where(deliveries.c.pk.in_(select(pending.c.pk)))
    else:
        stmt = _select().where(deliveries.c.webhook_id == webhook_id, deliveries.c.pk > after_pk)
        if status in ("dead", "superseded"):
            stmt = stmt.where(is_letter(status))
        elif status is not None:
            stmt = stmt.where(deliveries.c.status == status)
    return stmt.order_by(deliveries.c.pk).limit(limit)


async def newest_for_webhook(tx: Tx, webhook_id: str, *, limit: int) -> list[DeliveryRecord]:
    """The webhook's newest deliveries, newest first (the dashboard)."""
    stmt = (
        _select()
        .where(deliveries.c.webhook_id == webhook_id)
        .order_by(deliveries.c.pk.desc())
        .limit(limit)
    )
    return [_delivery(row) for row in await tx.conn.execute(stmt)]


async def dead_letters(tx: Tx, webhook_id: str, *, limit: int) -> list[DeliveryRecord]:
    """Dead letters not replayed yet, oldest first (the order a replay sends them in)."""
    stmt = (
        _select()
        .where(
            deliveries.c.webhook_id == webhook_id,
            is_letter("dead"),
            deliveries.c.replayed_by.is_(None),
        )
        .order_by(deliveries.c.pk)
        .limit(limit)
    )
    return [_delivery(row) for row in await tx.conn.execute(stmt)]


async def dead_for_replay(
    tx: Tx,
    org_id: str,
    webhook_id: str,
    *,
    delivery_ids: Sequence[str] | None,
    since: str | None,
    until: str | None,
    limit: int,
    statuses: Sequence[str] = ("dead",),
) -> list[DeliveryRecord]:
    """The webhook's dead letters to replay, oldest first: those of ``delivery_ids`` (replayed
    before or not), else those not replayed yet; created in [``since``, ``until``).
    ``statuses`` may add ``superseded`` (a replay by id, which refuses them unless forced)."""
    stmt = _select().where(
        deliveries.c.webhook_id == webhook_id,
        deliveries.c.organization_id == org_id,
        is_letter(*statuses),
    )
    if delivery_ids is not None:
        stmt = stmt.where(deliveries.c.id.in_(delivery_ids))
    else:
        stmt = stmt.where(deliveries.c.replayed_by.is_(None))
    if since is not None:
        stmt = stmt.where(deliveries.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(deliveries.c.created_at < until)
    rows = await tx.conn.execute(stmt.order_by(deliveries.c.pk).limit(limit))
    return [_delivery(row) for row in rows]


async def count_dead(tx: Tx, webhook_id: str, *, replayed: bool = False) -> int:
    """Dead letters of a webhook (by default only those not replayed yet)."""
    stmt = select(func.count()).where(deliveries.c.webhook_id == webhook_id, is_letter("dead"))
    if not replayed:
        stmt = stmt.where(deliveries.c.replayed_by.is_(None))
    return int((await tx.conn.execute(stmt)).scalar_one())


async def get_detail(tx: Tx, org_id: str, delivery_id: str) -> DeliveryDetail | None:
    """One delivery of the organization with its message and its attempts, in order."""
    row = (
        await tx.conn.execute(
            _select(
                messages.c.parameters,
                messages.c.regulation,
                messages.c.purge_reason,
                messages.c.purged_at,
            ).where(deliveries.c.id == delivery_id, deliveries.c.organization_id == org_id)
        )
    ).first()
    if row is None:
        return None
    tries = await tx.conn.execute(
        select(attempts)
        .where(attempts.c.delivery_id == delivery_id)
        .order_by(attempts.c.attempt_number)
    )
    message = StoredMessage(
        id=row.message_id,
        type=row.type,
        regulation=row.regulation,
        parameters=None if row.parameters is None else codec.loads(row.parameters),
        purge_reason=row.purge_reason,
        purged_at=row.purged_at,
    )
    return DeliveryDetail(_delivery(row), message, [_attempt(a) for a in tries])


async def purge_reasons(tx: Tx, message_ids: Sequence[str]) -> dict[str, str]:
    """Of these messages, those whose payload was purged: id -> "erased" | "expired"."""
    rows = await tx.conn.execute(
        select(messages.c.id, messages.c.purge_reason).where(
            messages.c.id.in_(list(message_ids)), messages.c.purge_reason.is_not(None)
        )
    )
    return {row.id: row.purge_reason for row in rows}
