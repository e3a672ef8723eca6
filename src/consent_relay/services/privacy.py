"""Erasure of a deleted user's personal data, and payload retention (README, "Privacy").

Erasing a user (``erase``, run by ``users.delete_user`` in the deletion's own transaction)
purges every message payload of theirs that no delivery still needs and clears their
attempts' response bodies and request headers. Deliveries still pending (``user.deleted``
among them) keep their message until delivered or dead; dead letters keep it for the grace
period (``CONSENT_RELAY_ERASURE_GRACE``). ``purge_once``, run by the workers every few
seconds, finishes what erasures left and purges delivered messages older than
``CONSENT_RELAY_PAYLOAD_RETENTION``, in small batches. On SQLite, a WAL checkpoint follows
any erasure, so the erased bytes are gone from the files (``secure_delete`` zeroes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

from consent_relay import errors, metrics
from consent_relay.domain.timefmt import format_ts, now_ts
from consent_relay.runtime import Context
from consent_relay.services import ledger
from consent_relay.storage import privacy
from consent_relay.storage.tx import Tx

JSON = dict[str, Any]
log = logging.getLogger("consent_relay.privacy")
SCAN = 500  # unpurged messages looked at per retention step
ERASURES_PER_PASS = 100
MAX_INTERVAL = 15.0  # seconds between passes at most: erased bytes leave within a minute


def _before(now: datetime, seconds: float) -> str:
    return format_ts(now - timedelta(seconds=seconds))


def interval(ctx: Context) -> float:
    """Seconds between purge passes: a quarter of the shortest period, within bounds."""
    shortest = min(ctx.settings.payload_retention, ctx.settings.erasure_grace or MAX_INTERVAL)
    return max(0.05, min(MAX_INTERVAL, shortest / 4))


async def erase(ctx: Context, tx: Tx, org_id: str, user_id: str) -> int:
    """Erase the user's personal data kept beside their profile and events, in ``tx``:
    payloads no delivery needs, attempts' texts. Returns the payloads purged now."""
    # The clock messages are stamped with (outbox.publish): the user.deleted just published
    # in this transaction is covered by the erasure.
    now = now_ts()
    await privacy.record_erasure(tx, org_id, user_id, now)
    purged = await privacy.purge_user_messages(
        tx, org_id, user_id, erased_at=now, now=now, keep_dead=ctx.settings.erasure_grace > 0
    )
    await privacy.clear_user_attempts(tx, org_id, user_id)
    return len(purged)


async def after_erasure(ctx: Context) -> None:
    """Once the erasing transaction committed: on SQLite, the erased bytes leave the WAL."""
    await checkpoint(ctx)


async def erase_user(ctx: Context, org_id: str, user_id: str) -> int:
    """``consent-relay users erase``: delete the user (which erases their data) or, when the
    user is already gone (deleted before erasure existed), erase what remains of theirs."""
    from consent_relay.services import users

    try:
        await users.delete_user(ctx, org_id, user_id)
        return 0
    except errors.NotFound:
        pass
    async with ctx.store.write() as tx:
        purged = await erase(ctx, tx, org_id, user_id)
    await after_erasure(ctx)
    return purged


async def checkpoint(ctx: Context) -> bool:
    if not ctx.store.is_sqlite:
        return True
    done = await privacy.checkpoint_sqlite(make_url(ctx.store.url).database)
    if not done:
        log.warning("WAL checkpoint after an erasure was kept waiting by a reader; will retry")
    return done


@dataclass
class PurgeState:
    """What a purging process remembers between passes."""

    next_pk: int = 0
    erasures_after: tuple[str, str, str] | None = None  # where the next pass goes on
    checkpoint_owed: bool = False
    totals: dict[str, int] = field(default_factory=lambda: {"erased": 0, "expired": 0})


async def purge_once(ctx: Context, state: PurgeState) -> dict[str, int]:
    """One pass: settle erasures whose deliveries are done (or whose grace is over), then
    one retention step. Each in short transactions of its own."""
    moment = datetime.now(UTC)
    now = format_ts(moment)
    grace_over_before = _before(moment, ctx.settings.erasure_grace)
    done = {"erased": 0, "expired": 0}
    async with ctx.store.read() as tx:
        erasures = await privacy.unsettled_erasures(tx, ERASURES_PER_PASS, state.erasures_after)
    state.erasures_after = (
        None
        if len(erasures) < ERASURES_PER_PASS
        else (erasures[-1].erased_at, erasures[-1].organization_id, erasures[-1].user_id)
    )
    for erasure in erasures:
        async with ctx.store.write() as tx:
            purged = await privacy.purge_user_messages(
                tx,
                erasure.organization_id,
                erasure.user_id,
                erased_at=erasure.erased_at,
                now=now,
                keep_dead=erasure.erased_at > grace_over_before,
            )
            await privacy.clear_user_attempts(tx, erasure.organization_id, erasure.user_id)
            left = await privacy.unpurged_count(
                tx, erasure.organization_id, erasure.user_id, erasure.erased_at
            )
            if left == 0:
                await privacy.settle(tx, erasure, now)
        done["erased"] += len(purged)
    async with ctx.store.write() as tx:
        scan = await privacy.purge_expired(
            tx,
            after_pk=state.next_pk,
            created_before=_before(moment, ctx.settings.payload_retention),
            now=now,
            scan=SCAN,
        )
        await privacy.clear_attempts_of(tx, scan.purged)
    state.next_pk = scan.next_pk
    done["expired"] = len(scan.purged)
    for reason, count in done.items():
        if count:
            metrics.payloads_purged.labels(reason).inc(count)
            state.totals[reason] += count
    if done["erased"] or state.checkpoint_owed:
        state.checkpoint_owed = not await checkpoint(ctx)
    return done


async def run_periodically(ctx: Context, stop: asyncio.Event) -> None:
    """The workers' side task: a purge pass every ``interval`` seconds (sooner again while
    a pass finds a full batch of work) until ``stop``."""
    state = PurgeState()
    while not stop.is_set():
        busy = False
        try:
            await purge_once(ctx, state)
            busy = state.next_pk != 0 or state.erasures_after is not None
        except errors.StorageUnavailable:
            log.warning("purge: the database is unavailable; trying again later")
        except Exception:
            log.exception("purge pass failed; trying again later")
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval(ctx))
        else:
            await asyncio.sleep(0)


# -- the data-subject export (GDPR Art. 15 and 20) ----------------------------------------------


async def export_user(ctx: Context, org_id: str, user_id: str) -> dict[str, Any]:
    """Everything stored about one user, as one JSON document: their current state (per
    regulation they have consents under), every consent event, and the ledger entries about
    them (which receiver was told what, and when). A user already erased still gets the
    ledger and the erasure's time; a user never known is a 404."""
    from consent_relay.services.folding import GDPR, event_view, user_view

    async with ctx.store.read() as tx:
        user = await tx.get_user(org_id, user_id)
        events: list[dict[str, Any]] = []
        after = 0
        while user is not None:
            batch = await tx.list_events(
                org_id, user_id=user_id, status=None, after_pk=after, limit=1000
            )
            events.extend(event_view(e) for e in batch)
            if len(batch) < 1000:
                break
            after = batch[-1].pk or 0
        erasure = await privacy.erasure_of(tx, org_id, user_id)
    entries = await ledger.entries_about(ctx, org_id, user_id)
    if user is None and erasure is None and not entries:
        raise errors.NotFound(f"no user {user_id!r}")
    state = None
    if user is not None:
        regulations = sorted(set(user.state.consents) | {GDPR})
        state = {regulation: user_view(user, regulation) for regulation in regulations}
    return {
        "organization_id": org_id,
        "user_id": user_id,
        "exported_at": now_ts(),
        "erased_at": erasure,
        "state": state,  # by regulation; null once the user was deleted
        "events": events,
        "ledger": entries,
    }


async def told_about(ctx: Context, org_id: str, user_id: str, *, limit: int = 500) -> JSON:
    """For the dashboard's user page: the user (None once deleted), when they were erased,
    and which receivers were told what about them, and when (the ledger, oldest first)."""
    from consent_relay.services.folding import user_view

    async with ctx.store.read() as tx:
        user = await tx.get_user(org_id, user_id)
        erasure = await privacy.erasure_of(tx, org_id, user_id)
    page = await ledger.list_entries(ctx, org_id, user_id=user_id, limit=limit)
    if user is None and erasure is None and not page["data"]:
        raise errors.NotFound(f"no user {user_id!r}")
    return {
        "user": None if user is None else user_view(user),
        "erased_at": erasure,
        "entries": page["data"],
        "more": page["next_cursor"] is not None,
    }
