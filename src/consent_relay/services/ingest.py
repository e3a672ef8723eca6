"""The write path of consent events, with group commit.

Concurrent ``POST /v1/consents/events`` requests of a process are written together: while
one transaction commits, the requests that arrive wait, and the next transaction takes them
all (at most ``MAX_BATCH``). Each request is still answered only after the transaction that
holds its event has committed, with the outbox (messages and deliveries) in that same
transaction, so nothing acknowledged is ever lost.

A batch costs a fixed number of set-based statements, whatever its size:

    lock the users it names,     one SELECT ... FOR UPDATE per organization
    find the event ids taken
    and the webhooks' stamp
    the webhooks to fan out to   from memory while the stamp holds, else one SELECT
    new users, changed users     one INSERT, one UPDATE
    events                       one INSERT
    messages, deliveries         the queue's append (storage.queue.enqueue)

Everything between the reads and the writes is pure Python on the loaded users, applied in
arrival order, so a user named by several requests of the batch sees them one after the
other, exactly as if they had come in separate transactions.

One bad request never fails its neighbours: a request the rules refuse (an event id that is
taken, an organization_user_id that belongs to another user) gets its own 4xx and leaves the
batch untouched; if the batch's transaction fails for any other reason, each request is
written again alone, so only the one at fault fails. See docs/write-path.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from consent_relay import errors, ids
from consent_relay.domain import rules, users
from consent_relay.domain.rules import Change, ChangeKind
from consent_relay.domain.timefmt import format_ts, now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn
from consent_relay.services import folding, outbox, webhook_cache
from consent_relay.storage import write_batch
from consent_relay.storage.records import (
    EventRecord,
    MessageRecord,
    NewDelivery,
    UserRecord,
    WebhookRecord,
)
from consent_relay.storage.tx import Tx

log = logging.getLogger("consent_relay.ingest")
JSON = dict[str, Any]
MAX_BATCH = 128  # requests in one transaction
MAX_TRIES = 5  # when a concurrent writer (another process) created the same user first
CONCURRENT_BATCHES = 8  # transactions open at once on PostgreSQL (EventWriter; 3 -> 8 measured)
UserKey = tuple[str, str]  # (organization, id)


class _Retry(Exception):
    """A concurrent writer created one of the batch's users or event ids first: the whole
    transaction runs again, on what is stored now."""


@dataclass
class Request:
    """One event to record, and the future its HTTP request waits on."""

    org_id: str
    data: EventIn
    quiet: bool
    event_id: str
    future: asyncio.Future[JSON]


@dataclass
class _Pending:
    """What a batch has worked out and not written yet."""

    new_users: dict[UserKey, UserRecord] = field(default_factory=dict)
    changed_users: dict[UserKey, UserRecord] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    deliveries: list[NewDelivery] = field(default_factory=list)
    queued: int = 0


class _Batch:
    """One transaction's worth of requests: loaded state, then each request in turn."""

    def __init__(self, ctx: Context, tx: Tx, requests: Sequence[Request], now: str) -> None:
        self.ctx = ctx
        self.tx = tx
        self.requests = requests
        self.now = now
        self.by_id: dict[UserKey, UserRecord] = {}
        self.by_ouid: dict[UserKey, UserRecord] = {}
        self.stored: set[UserKey] = set()  # users that exist in the database (or will)
        self.taken_events: set[UserKey] = set()
        self.hooks: dict[str, list[WebhookRecord]] = {}
        self.pending = _Pending()
        self.queued = 0

    async def load(self) -> None:
        orgs: dict[str, list[Request]] = {}
        for request in self.requests:
            orgs.setdefault(request.org_id, []).append(request)
        for org_id, requests in orgs.items():
            given = [request.data.user for request in requests]
            user_ids = sorted({u.id for u in given if u.id is not None})
            ouids = sorted({u.organization_user_id for u in given if u.organization_user_id})
            locked = await write_batch.lock_and_check(
                self.tx, org_id, user_ids, ouids, [request.event_id for request in requests]
            )
            for user in locked.users:
                self._index(user)
                self.stored.add((org_id, user.id))
            self.taken_events.update((org_id, event_id) for event_id in locked.taken)
            if any(not request.quiet for request in requests):
                self.hooks[org_id] = await webhook_cache.webhooks_for(
                    self.tx, org_id, locked.webhooks_stamp
                )

    def _index(self, user: UserRecord) -> None:
        self.by_id[(user.organization_id, user.id)] = user
        if user.state.organization_user_id is not None:
            self.by_ouid[(user.organization_id, user.state.organization_user_id)] = user

    def _resolve_user(self, org_id: str, data: EventIn) -> tuple[UserRecord, bool]:
        """The user an event names, or a new one when unknown. Returns (user, is_new)."""
        user_id, ouid = data.user.id, data.user.organization_user_id
        by_id = self.by_id.get((org_id, user_id)) if user_id else None
        by_ouid = self.by_ouid.get((org_id, ouid)) if ouid else None
        if by_ouid is not None and user_id and (by_id is None or by_id.id != by_ouid.id):
            raise errors.Conflict(
                f"user.organization_user_id {ouid!r} belongs to user {by_ouid.id!r}, "
                f"not to user.id {user_id!r}",
                [errors.FieldError("user.id", "names another user than user.organization_user_id")],
            )
        existing = by_id or by_ouid
        if existing is not None:
            return existing, False
        user = UserRecord(
            organization_id=org_id,
            id=user_id or ids.new_uuid(),
            identity_organization_user_id=ouid,
            state=users.UserState(organization_user_id=ouid),
            version=1,
            created_at=self.now,
            updated_at=self.now,
        )
        return user, True

    async def record(self, request: Request) -> JSON:
        """Work out one request on the batch's state; its rows join what the batch writes."""
        org_id, data = request.org_id, request.data
        if (org_id, request.event_id) in self.taken_events:
            raise errors.Conflict(
                f"an event with id {request.event_id!r} exists",
                [errors.FieldError("id", "already exists in this organization")],
            )
        user, is_new = self._resolve_user(org_id, data)
        self.taken_events.add((org_id, request.event_id))
        key = (org_id, user.id)
        if is_new:
            self.pending.new_users[key] = user
        elif key in self.stored:
            self.pending.changed_users[key] = user
        created_at = format_ts(data.created_at) if data.created_at else self.now
        before = None if is_new else folding.user_view(user, data.regulation)
        document = folding.event_document(org_id, request.event_id, data, user, created_at)
        confirmed = data.status == "confirmed"
        seq = user.next_seq()
        self.pending.events.append(
            EventRecord(
                organization_id=org_id,
                id=request.event_id,
                user_id=user.id,
                status=data.status,
                regulation=data.regulation,
                created_at=created_at,
                updated_at=created_at,
                confirmed_at=created_at if confirmed else None,
                seq=seq if confirmed else None,
                document=document,
            )
        )
        if confirmed:
            item = users.FoldItem(
                at=created_at,
                seq=seq,
                user=document["user"],
                regulation=data.regulation,
                consents=document["consents"],
            )
            if folding.sorts_last(user, item):
                folding.apply_last(user, item)
            else:
                # An import with an old created_at: fold again from everything stored,
                # this batch's rows so far included.
                await self.flush()
                await folding.refold(self.tx, user)
                self.pending.changed_users[key] = user
        self._index(user)
        after = folding.user_view(user, data.regulation)
        if before is not None:
            after = folding.bump_if_changed(user, before, data.regulation, self.now)
        if not request.quiet:
            change = Change(
                ChangeKind.EVENT_CREATED, event_after=document, user_before=before, user_after=after
            )
            records, new = outbox.fan_out(
                self.hooks[org_id],
                organization_id=org_id,
                user_id=user.id,
                regulation=data.regulation,
                fired=rules.messages_for(change),
                now=self.now,
            )
            self.pending.messages.extend(records)
            self.pending.deliveries.extend(new)
        return document

    async def flush(self) -> None:
        """Write what the batch has worked out so far."""
        pending, self.pending = self.pending, _Pending()
        new_users = sorted(pending.new_users.values(), key=lambda u: (u.organization_id, u.id))
        written = await write_batch.write(
            self.tx,
            new_users=new_users,
            changed_users=[
                u for k, u in pending.changed_users.items() if k not in pending.new_users
            ],
            new_events=pending.events,
            new_messages=pending.messages,
            new_deliveries=pending.deliveries,
            now_ms=self.ctx.clock_ms(),
            now=self.now,
        )
        if written.users < len(new_users) or written.events < len(pending.events):
            raise _Retry()  # a user or an event id created meanwhile by another process
        self.stored.update((u.organization_id, u.id) for u in new_users)
        self.queued += len(pending.deliveries)
        # Users written now are updated, not inserted, by a later flush of this batch.
        for key, user in pending.new_users.items():
            self.pending.changed_users.setdefault(key, user)
        for key, user in pending.changed_users.items():
            self.pending.changed_users.setdefault(key, user)


Outcome = JSON | errors.ConsentRelayError


async def _write(ctx: Context, requests: Sequence[Request]) -> tuple[list[Outcome], int]:
    """One transaction for the batch (again while a concurrent writer wins a race)."""
    for _ in range(MAX_TRIES):
        outcomes: list[Outcome] = []
        try:
            async with ctx.store.write() as tx:
                batch = _Batch(ctx, tx, requests, now_ts())
                await batch.load()
                for request in requests:
                    try:
                        outcomes.append(await batch.record(request))
                    except errors.ConsentRelayError as exc:
                        outcomes.append(exc)
                await batch.flush()
            return outcomes, batch.queued
        except _Retry:
            continue
    conflict = errors.Conflict("the user is being changed concurrently; retry")
    return [conflict for _ in requests], 0


class EventWriter:
    """Group commit for one process: requests queue up while a transaction is open, and
    the next transaction writes them all.

    On PostgreSQL ``concurrency`` transactions may be open at once: while one waits on the
    database, the next takes what arrived meanwhile (a batch's statements are round trips
    in a row, so one transaction at a time left the process idle; measured). Two batches
    naming the same user meet on its row lock (or, for a new user, on the unique index,
    and the later one runs again), so each user's events still go one after the other.
    SQLite writes one transaction at a time anyway.
    """

    def __init__(
        self, ctx: Context, *, max_batch: int = MAX_BATCH, concurrency: int | None = None
    ) -> None:
        self.ctx = ctx
        self.max_batch = max_batch
        self.concurrency = concurrency or (1 if ctx.store.is_sqlite else CONCURRENT_BATCHES)
        self._waiting: list[Request] = []
        self._runners: set[asyncio.Task[None]] = set()
        self.batches = 0  # transactions written, for tests and metrics

    async def create(self, org_id: str, data: EventIn, *, quiet: bool = False) -> JSON:
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._waiting.append(Request(org_id, data, quiet, data.id or ids.new_uuid(), future))
        if len(self._runners) < self.concurrency:
            runner = asyncio.create_task(self._run(), name="event-writer")
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        # A cancelled request (the client went away) does not cancel the batch: its event
        # is written, or not, with the others.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = (
                    self._waiting[: self.max_batch],
                    self._waiting[self.max_batch :],
                )
                try:
                    await self._commit(batch)
                except BaseException as exc:  # never leave a request waiting for ever
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            # Leave the runners in the same step that found nothing waiting. The task's done
            # callback runs later: a request arriving in between saw this runner still
            # counted, started none, and waited for ever (seen: a crash test's events
            # stalled mid-round on SQLite, where one runner is the limit).
            self._runners.discard(asyncio.current_task())

    async def _commit(self, batch: list[Request]) -> None:
        try:
            outcomes, queued = await _write(self.ctx, batch)
        except errors.StorageUnavailable:
            raise  # every request of the batch gets the 503
        except Exception:
            if len(batch) == 1:
                raise
            # Something in one request's rows broke the transaction: each alone now, so
            # that only the one at fault fails.
            log.warning("a batch of %d events failed; writing each alone", len(batch))
            for request in batch:
                try:
                    await self._commit([request])
                except Exception as exc:
                    if not request.future.done():
                        request.future.set_exception(exc)
            return
        self.batches += 1
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.future.done():
                continue
            if isinstance(outcome, errors.ConsentRelayError):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)
        if queued:
            self.ctx.notify_enqueued()


def writer(ctx: Context) -> EventWriter:
    """The process's event writer (one per context)."""
    if ctx.event_writer is None:
        ctx.event_writer = EventWriter(ctx)
    return ctx.event_writer
