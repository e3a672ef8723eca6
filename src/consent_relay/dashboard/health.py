"""Read-only queries behind the dashboard: webhook health and newest-first listings.

SQLAlchemy Core only, the same statements on SQLite and PostgreSQL. Every query is bounded
by an index (``ix_deliveries_webhook_status``, the primary keys, ``attempts.delivery_id``) so a
busy webhook with millions of deliveries does not make the page slow: the success rate and the
last failure look at the attempts of the webhook's most recent deliveries only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select

from consent_relay.domain.timefmt import format_ts
from consent_relay.services.context import Context
from consent_relay.storage import codec
from consent_relay.storage.tables import attempts, deliveries, events, messages, users

HEALTH_WINDOW = timedelta(hours=24)
RECENT_DELIVERIES = 500  # the deliveries whose attempts make the success rate
JSON = dict[str, Any]


@dataclass(frozen=True)
class LastFailure:
    delivery_id: str
    started_at: str
    outcome: str
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class Health:
    attempts: int  # attempts in the window, among the recent deliveries
    succeeded: int
    queue_depth: int  # pending deliveries
    oldest_waiting: str | None  # created_at of the oldest pending delivery
    dead_letters: int  # dead and not replayed
    last_failure: LastFailure | None

    @property
    def success_rate(self) -> float | None:
        """Percent of attempts that succeeded, or None without attempts."""
        return None if self.attempts == 0 else 100.0 * self.succeeded / self.attempts

    @property
    def status(self) -> str:
        """``failing`` (most attempts fail), ``degraded`` (some failures or dead letters),
        ``healthy``, ``waiting`` (deliveries queued, none tried in the window) or ``idle``."""
        rate = self.success_rate
        if rate is not None and rate < 50:
            return "failing"
        if self.dead_letters or (rate is not None and rate < 100):
            return "degraded"
        if rate is None:
            return "waiting" if self.queue_depth else "idle"
        return "healthy"


async def webhook_health(ctx: Context, webhook_id: str, *, now: datetime | None = None) -> Health:
    since = format_ts((now or datetime.now(UTC)) - HEALTH_WINDOW)
    recent = (
        select(deliveries.c.id)
        .where(deliveries.c.webhook_id == webhook_id)
        .order_by(deliveries.c.pk.desc())
        .limit(RECENT_DELIVERIES)
        .scalar_subquery()
    )
    in_window = and_(attempts.c.delivery_id.in_(recent), attempts.c.started_at >= since)
    rate_stmt = select(
        func.count(), func.coalesce(func.sum(case((attempts.c.outcome == "ok", 1), else_=0)), 0)
    ).where(in_window)
    pending = and_(deliveries.c.webhook_id == webhook_id, deliveries.c.status == "pending")
    depth_stmt = select(func.count()).select_from(deliveries).where(pending)
    oldest_stmt = select(deliveries.c.created_at).where(pending).order_by(deliveries.c.pk).limit(1)
    dead_stmt = (
        select(func.count())
        .select_from(deliveries)
        .where(
            deliveries.c.webhook_id == webhook_id,
            deliveries.c.status == "dead",
            deliveries.c.replayed_by.is_(None),
        )
    )
    failure_stmt = (
        select(
            attempts.c.delivery_id,
            attempts.c.started_at,
            attempts.c.outcome,
            attempts.c.status_code,
            attempts.c.error,
        )
        .where(attempts.c.delivery_id.in_(recent), attempts.c.outcome != "ok")
        .order_by(attempts.c.started_at.desc(), attempts.c.pk.desc())
        .limit(1)
    )
    async with ctx.store.read() as tx:
        total, succeeded = (await tx.conn.execute(rate_stmt)).one()
        depth = (await tx.conn.execute(depth_stmt)).scalar_one()
        oldest = (await tx.conn.execute(oldest_stmt)).scalar_one_or_none()
        dead = (await tx.conn.execute(dead_stmt)).scalar_one()
        failure = (await tx.conn.execute(failure_stmt)).first()
    return Health(
        attempts=int(total),
        succeeded=int(succeeded),
        queue_depth=int(depth),
        oldest_waiting=oldest,
        dead_letters=int(dead),
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


# -- newest-first listings (the services page oldest-first, for API clients) ------------------


def _delivery_row(row: Any) -> JSON:
    return {
        "id": row.id,
        "type": row.type,
        "user_id": row.user_id,
        "status": row.status,
        "attempt_count": row.attempt_count,
        "last_outcome": row.last_outcome,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "replay_of": row.replay_of,
        "replayed_by": row.replayed_by,
        "in_flight": row.lease_owner is not None and row.status == "pending",
    }


_DELIVERY_COLUMNS = (
    deliveries.c.id,
    messages.c.type,
    deliveries.c.user_id,
    deliveries.c.status,
    deliveries.c.attempt_count,
    deliveries.c.last_outcome,
    deliveries.c.created_at,
    deliveries.c.updated_at,
    deliveries.c.replay_of,
    deliveries.c.replayed_by,
    deliveries.c.lease_owner,
)


async def recent_deliveries(ctx: Context, webhook_id: str, *, limit: int = 25) -> list[JSON]:
    """The webhook's newest deliveries, newest first."""
    stmt = (
        select(*_DELIVERY_COLUMNS)
        .join(messages, messages.c.id == deliveries.c.message_id)
        .where(deliveries.c.webhook_id == webhook_id)
        .order_by(deliveries.c.pk.desc())
        .limit(limit)
    )
    async with ctx.store.read() as tx:
        return [_delivery_row(row) for row in await tx.conn.execute(stmt)]


async def dead_letters(ctx: Context, webhook_id: str, *, limit: int = 100) -> list[JSON]:
    """Dead letters not replayed yet, oldest first (the order a replay sends them in)."""
    stmt = (
        select(*_DELIVERY_COLUMNS)
        .join(messages, messages.c.id == deliveries.c.message_id)
        .where(
            deliveries.c.webhook_id == webhook_id,
            deliveries.c.status == "dead",
            deliveries.c.replayed_by.is_(None),
        )
        .order_by(deliveries.c.pk)
        .limit(limit)
    )
    async with ctx.store.read() as tx:
        return [_delivery_row(row) for row in await tx.conn.execute(stmt)]


@dataclass(frozen=True)
class Page:
    items: list[JSON]
    older: int | None  # pass as ``before`` for the next (older) page


async def recent_events(
    ctx: Context,
    org_id: str,
    *,
    user_id: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> Page:
    """The organization's consent events, newest first."""
    stmt = select(events.c.pk, events.c.document).where(events.c.organization_id == org_id)
    if user_id is not None:
        stmt = stmt.where(events.c.user_id == user_id)
    if before is not None:
        stmt = stmt.where(events.c.pk < before)
    stmt = stmt.order_by(events.c.pk.desc()).limit(limit + 1)
    async with ctx.store.read() as tx:
        rows = list(await tx.conn.execute(stmt))
    items = [codec.loads(row.document) for row in rows[:limit]]
    return Page(items, rows[limit - 1].pk if len(rows) > limit else None)


async def recent_users(
    ctx: Context, org_id: str, *, before: int | None = None, limit: int = 50
) -> Page:
    """The organization's users, most recently created first, with their consents by
    regulation."""
    stmt = select(
        users.c.pk,
        users.c.id,
        users.c.organization_user_id,
        users.c.country,
        users.c.version,
        users.c.created_at,
        users.c.updated_at,
        users.c.consents,
    ).where(users.c.organization_id == org_id)
    if before is not None:
        stmt = stmt.where(users.c.pk < before)
    stmt = stmt.order_by(users.c.pk.desc()).limit(limit + 1)
    async with ctx.store.read() as tx:
        rows = list(await tx.conn.execute(stmt))
    items = [
        {
            "id": row.id,
            "organization_user_id": row.organization_user_id,
            "country": row.country,
            "version": row.version,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "consents": codec.loads(row.consents) or {},
        }
        for row in rows[:limit]
    ]
    return Page(items, rows[limit - 1].pk if len(rows) > limit else None)
