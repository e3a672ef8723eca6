"""What the dashboard shows of webhooks' health and newest-first listings.

The figures come from ``storage.health`` and the rows from ``storage.deliveries`` and
``storage.recent`` (every query there is bounded by an index); here they become what the
templates show.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consent_relay.domain.timefmt import format_ts
from consent_relay.runtime import Context
from consent_relay.services import views
from consent_relay.storage import deliveries as delivery_reads
from consent_relay.storage import flow, recent
from consent_relay.storage import health as figures
from consent_relay.storage.records import LastFailure

HEALTH_WINDOW = timedelta(hours=24)
RECENT_DELIVERIES = 500  # the deliveries whose attempts make the success rate
JSON = dict[str, Any]


@dataclass(frozen=True)
class Health:
    attempts: int  # attempts in the window, among the recent deliveries
    succeeded: int
    queue_depth: int  # pending deliveries
    oldest_waiting: str | None  # created_at of the oldest pending delivery
    dead_letters: int  # dead and not replayed
    last_failure: LastFailure | None
    superseded: int = 0  # dead letters a later delivered message replaced (never replayed)

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
    async with ctx.store.read() as tx:
        found = await figures.webhook_figures(tx, webhook_id, since=since, recent=RECENT_DELIVERIES)
        superseded = await flow.count_superseded(tx, webhook_id)
    return Health(
        attempts=found.attempts,
        succeeded=found.succeeded,
        queue_depth=found.queue_depth,
        oldest_waiting=found.oldest_waiting,
        dead_letters=found.dead_letters,
        last_failure=found.last_failure,
        superseded=superseded,
    )


# -- newest-first listings (the services page oldest-first, for API clients) ------------------


async def recent_deliveries(
    ctx: Context, webhook_id: str, *, limit: int = 25
) -> list[views.DeliveryOut]:
    """The webhook's newest deliveries, newest first."""
    async with ctx.store.read() as tx:
        found = await delivery_reads.newest_for_webhook(tx, webhook_id, limit=limit)
    return [views.delivery_view(delivery) for delivery in found]


async def dead_letters(
    ctx: Context, webhook_id: str, *, limit: int = 100
) -> list[views.DeliveryOut]:
    """Dead letters not replayed yet, oldest first (the order a replay sends them in)."""
    async with ctx.store.read() as tx:
        found = await delivery_reads.dead_letters(tx, webhook_id, limit=limit)
    return [views.delivery_view(delivery) for delivery in found]


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
    async with ctx.store.read() as tx:
        found = await recent.newest_events(
            tx, org_id, user_id=user_id, before=before, limit=limit + 1
        )
    items = [event.document for event in found[:limit]]
    return Page(items, found[limit - 1].pk if len(found) > limit else None)


async def recent_users(
    ctx: Context, org_id: str, *, before: int | None = None, limit: int = 50
) -> Page:
    """The organization's users, most recently created first, with their consents by
    regulation."""
    async with ctx.store.read() as tx:
        found = await recent.newest_users(tx, org_id, before=before, limit=limit + 1)
    items = [
        {
            "id": user.id,
            "organization_user_id": user.state.organization_user_id,
            "country": user.state.country,
            "version": user.version,
            "created_at": user.created_at,
            "updated_at": user.updated_at,
            "consents": user.state.consents or {},
        }
        for user in found[:limit]
    ]
    return Page(items, found[limit - 1].pk if len(found) > limit else None)
