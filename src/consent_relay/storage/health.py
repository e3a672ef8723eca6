"""Aggregates over deliveries: a webhook's health (the dashboard) and every webhook's queue
figures (the metrics' gauges).

Every query is bounded by an index (``ix_deliveries_webhook``, the dead letters' and the
queues' indexes, the primary keys, ``uq_attempts_number``) so a busy webhook with millions
of deliveries does not make a page or a scrape slow: the success rate and the last failure
look at the attempts of the webhook's most recent deliveries only.
"""

from __future__ import annotations

from sqlalchemy import and_, case, func, select, text

from consent_relay.storage import deliveries as delivery_reads
from consent_relay.storage.records import HealthFigures, LastFailure, QueueFigures
from consent_relay.storage.tables import attempts, deliveries, delivery_queues
from consent_relay.storage.tx import Tx


async def webhook_figures(tx: Tx, webhook_id: str, *, since: str, recent: int) -> HealthFigures:
    """The webhook's figures: the attempts since ``since`` among its ``recent`` newest
    deliveries, its queue, its dead letters and its last failure."""
    newest = (
        select(deliveries.c.id)
        .where(deliveries.c.webhook_id == webhook_id)
        .order_by(deliveries.c.pk.desc())
        .limit(recent)
        .scalar_subquery()
    )
    in_window = and_(attempts.c.delivery_id.in_(newest), attempts.c.started_at >= since)
    rate_stmt = select(
        func.count(), func.coalesce(func.sum(case((attempts.c.outcome == "ok", 1), else_=0)), 0)
    ).where(in_window)
    # A queue's pending deliveries are counted on its row; the oldest waiting is a queue's
    # head (the webhook's queues with a delivery on the clock, through their due index).
    on_the_clock = and_(
        delivery_queues.c.webhook_id == webhook_id, delivery_queues.c.due_ms.is_not(None)
    )
    depth_stmt = select(func.coalesce(func.sum(delivery_queues.c.pending), 0)).where(on_the_clock)
    first = delivery_reads.pending_of(tx.dialect, webhook_id, after_pk=0, limit=1)
    oldest_stmt = select(deliveries.c.created_at).where(
        deliveries.c.pk == select(first.c.pk).scalar_subquery()
    )
    failure_stmt = (
        select(
            attempts.c.delivery_id,
            attempts.c.started_at,
            attempts.c.outcome,
            attempts.c.status_code,
            attempts.c.error,
        )
        .where(attempts.c.delivery_id.in_(newest), attempts.c.outcome != "ok")
        .order_by(attempts.c.started_at.desc(), attempts.c.pk.desc())
        .limit(1)
    )
    total, succeeded = (await tx.conn.execute(rate_stmt)).one()
    depth = (await tx.conn.execute(depth_stmt)).scalar_one()
    oldest = (await tx.conn.execute(oldest_stmt)).scalar_one_or_none()
    dead = await delivery_reads.count_dead(tx, webhook_id)
    failure = (await tx.conn.execute(failure_stmt)).first()
    return HealthFigures(
        attempts=int(total),
        succeeded=int(succeeded),
        queue_depth=int(depth),
        oldest_waiting=oldest,
        dead_letters=dead,
        last_failure=(
            LastFailure(
                failure.delivery_id,
                failure.started_at,
                failure.outcome,
                failure.status_code,
                failure.error,
            )
            if failure is not None
            else None
        ),
    )


_QUEUE_FIGURES = text(
    """
    SELECT w.id AS webhook_id,
           (SELECT coalesce(sum(q.pending), 0) FROM delivery_queues q
             WHERE q.webhook_id = w.id AND q.due_ms IS NOT NULL) AS pending,
           (SELECT min(q.due_ms) FROM delivery_queues q
             WHERE q.webhook_id = w.id AND q.due_ms IS NOT NULL
               AND q.lease_owner IS NULL) AS oldest_due,
           (SELECT count(*) FROM deliveries d
             WHERE d.webhook_id = w.id AND d.dead_at IS NOT NULL
               AND d.status = 'dead') AS dead
    FROM webhooks w
    """
)


async def queue_figures(tx: Tx) -> list[QueueFigures]:
    """Every webhook's queue: pending deliveries, the oldest due one, dead letters."""
    rows = await tx.conn.execute(_QUEUE_FIGURES)
    return [
        QueueFigures(row.webhook_id, int(row.pending), row.oldest_due, int(row.dead))
        for row in rows
    ]
