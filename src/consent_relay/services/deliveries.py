"""Deliveries, their attempts, and dead letters with replay."""

from __future__ import annotations

from typing import Any

from consent_relay import errors
from consent_relay.domain.timefmt import normalize_ts, now_ts
from consent_relay.runtime import Context
from consent_relay.services import pagination, views
from consent_relay.storage import batches, recovery
from consent_relay.storage import deliveries as delivery_reads
from consent_relay.storage.records import DeliveryRecord
from consent_relay.storage.tx import Tx

JSON = dict[str, Any]
STATUSES = ("pending", "delivered", "dead", "superseded")


async def _webhook_exists(tx: Tx, org_id: str, webhook_id: str) -> None:
    if await tx.get_webhook(org_id, webhook_id) is None:
        raise errors.NotFound(f"no webhook {webhook_id!r}")


async def list_deliveries(
    ctx: Context,
    org_id: str,
    webhook_id: str,
    *,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = pagination.DEFAULT_LIMIT,
) -> views.Page[views.DeliveryOut]:
    if status is not None and status not in STATUSES:
        raise errors.Unprocessable(
            f"unknown status {status!r}", [errors.FieldError("status", f"one of {STATUSES}")]
        )
    after = pagination.decode(cursor)
    pagination.check_limit(limit)
    async with ctx.store.read() as tx:
        await _webhook_exists(tx, org_id, webhook_id)
        rows = await delivery_reads.list_for_webhook(
            tx, webhook_id, status=status, after_pk=after, limit=limit + 1
        )
    return pagination.page([views.delivery_view(r) for r in rows], [r.pk for r in rows], limit)


async def get_delivery(ctx: Context, org_id: str, delivery_id: str) -> views.DeliveryDetailOut:
    async with ctx.store.read() as tx:
        found = await delivery_reads.get_detail(tx, org_id, delivery_id)
    if found is None:
        raise errors.NotFound(f"no delivery {delivery_id!r}")
    message = found.message
    return {
        **views.delivery_view(found.delivery),
        "message": {
            "type": message.type,
            "regulation": message.regulation,
            # null once purged (README, "Privacy"): "payload erased" or "payload expired"
            "parameters": message.parameters,
            "purged": None
            if message.purge_reason is None
            else {"reason": f"payload {message.purge_reason}", "at": message.purged_at},
        },
        "attempts": [views.attempt_view(a) for a in found.attempts],
    }


async def count_dead(ctx: Context, webhook_id: str, *, replayed: bool = False) -> int:
    """Dead letters of a webhook (by default only those not replayed yet)."""
    async with ctx.store.read() as tx:
        return await delivery_reads.count_dead(tx, webhook_id, replayed=replayed)


async def owner_of(ctx: Context, webhook_id: str) -> str:
    """The organization a webhook belongs to (for operator commands)."""
    async with ctx.store.read() as tx:
        hook = await tx.get_webhook(None, webhook_id)
    if hook is None:
        raise errors.NotFound(f"no webhook {webhook_id!r}")
    return hook.organization_id


def _time_bound(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return normalize_ts(value)
    except ValueError as exc:
        raise errors.Unprocessable(
            f"{field} is not an ISO-8601 timestamp",
            [errors.FieldError(field, "not an ISO-8601 timestamp")],
        ) from exc


async def replay(
    ctx: Context,
    org_id: str,
    webhook_id: str,
    *,
    delivery_ids: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 10_000,
    force: bool = False,
) -> int:
    """Send dead letters again, each as a new delivery of the same message (same
    ``webhook-id``) at the back of its user's queue, with a fresh retry schedule. Without
    ``delivery_ids``, dead letters already replayed are left out, and so are superseded ones
    (a later message of the same subject was delivered: replaying would send a stale
    consent state) and those a later message of the same subject still queued would
    supersede (``recovery.without_stale``). By id, a superseded one is refused (409) unless
    ``force``."""
    lower, upper = _time_bound(since, "since"), _time_bound(until, "until")
    async with ctx.store.write() as tx:
        await _webhook_exists(tx, org_id, webhook_id)
        dead = await delivery_reads.dead_for_replay(
            tx,
            org_id,
            webhook_id,
            delivery_ids=delivery_ids,
            since=lower,
            until=upper,
            limit=limit,
            statuses=("dead", "superseded") if delivery_ids is not None else ("dead",),
        )
        if delivery_ids is not None:
            missing = set(delivery_ids) - {row.id for row in dead}
            if missing:
                raise errors.Unprocessable(
                    "some ids are not dead letters of this webhook",
                    [errors.FieldError("delivery_ids", f"not dead letters: {sorted(missing)}")],
                )
            superseded = sorted(row.id for row in dead if row.status == "superseded")
            if superseded and not force:
                raise errors.Conflict(
                    "not replayed: a later message about the same user or event was delivered "
                    "since, and replaying would send an older consent state over it "
                    f'(superseded: {", ".join(superseded)}); send "force": true to replay '
                    "anyway"
                )
        else:
            dead = await recovery.without_stale(tx, dead)
        dead = await _payload_kept(tx, dead, explicit=delivery_ids is not None)
        if not dead:
            return 0
        letters = [
            batches.DeadLetter(
                row.pk, row.id, row.organization_id, webhook_id, row.message_id, row.user_id
            )
            for row in dead
        ]
        # A dead letter the database refuses stays dead (and is logged); the others go out.
        done = await batches.replay(tx, letters, ctx.clock_ms(), now_ts())
    if done.replayed:
        ctx.notify_enqueued()
    return len(done.replayed)


async def _payload_kept(
    tx: Tx, dead: list[DeliveryRecord], *, explicit: bool
) -> list[DeliveryRecord]:
    """Dead letters whose message still has its payload: a purged one cannot go out again
    (named in a 409 when asked for by id; left out of a bulk replay)."""
    gone = await delivery_reads.purge_reasons(tx, list({row.message_id for row in dead}))
    if explicit and gone:
        named = sorted(f"{row.id} (payload {gone[row.message_id]})" for row in dead
                       if row.message_id in gone)  # fmt: skip
        raise errors.Conflict(
            f"cannot replay, the message's payload was purged: {', '.join(named)}"
        )
    return [row for row in dead if row.message_id not in gone]
