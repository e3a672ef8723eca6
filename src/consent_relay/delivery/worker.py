"""The delivery worker: claim, send, record, as separate short steps.

    claim   one short transaction leases a batch of due queue heads (storage.batches.claim)
    send    no transaction open; ``concurrency`` sender coroutines, one request each at a time
    record  results are batched into one short transaction that checks the leases

It wakes at once when work is queued (in-process event; LISTEN/NOTIFY on PostgreSQL) and
otherwise sleeps until the next delivery falls due, polling at least every
``poll_interval``. A per-webhook cap keeps a slow receiver from taking everyone's capacity:
the claim skips webhooks at their cap and gives back what would go over it.

The senders are a fixed pool fed by a queue, not a task per delivery: a task, a semaphore
and a metric's ``labels()`` per delivery cost more CPU than the worker's database work
(measured with py-spy; see docs/performance-log.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

from consent_relay import errors, ids, metrics
from consent_relay.delivery import (
    attempt,
    flow,
    http1,
    idgen,
    oauth,
    replays,
    requests,
    retry,
    sender,
    waiting,
)
from consent_relay.delivery.outcome import Outcome
from consent_relay.domain.timefmt import from_ms, now_ts
from consent_relay.runtime import Context
from consent_relay.security import targets
from consent_relay.storage import batches, queue, ratelimit
from consent_relay.storage.queue import Claimed, Message, Result

log = logging.getLogger("consent_relay.worker")
Job = tuple[Claimed, requests.PreparedWebhook, Message]
CLAIM_PAUSE = 0.05  # the longest a worker with free slots waits before claiming again
RECORD_PAUSE = 0.01  # the recorder waits this long for more results, with fewer than
RECORD_BATCH = 50  # this many waiting and requests in flight
# Leases a worker holds at most, a slot of ``concurrency``: in flight, or sent and waiting
# for the recorder's commit. The recorder writes a batch at a time (two on PostgreSQL:
# ``RECORDERS_PG``), so what waits for it is the pipeline's slack: at twice the slots, a
# PostgreSQL worker spent its time waiting for its record to make room (in flight 100 of
# 200 on average; the bench's delivery ratio 0.53-0.55), at four 0.59-0.63 in the same runs
# (bigger record batches; docs/performance-log.md). It is also what a crash can send twice:
# the leases run out and those deliveries go again.
LEASES_PER_SLOT = 4
# Batches a PostgreSQL worker records at once, each a transaction on a connection of its own
# (the raw pool, ``Store.pg_transaction``). A record is five round trips (BEGIN, the record,
# the ledger's heads and entries, COMMIT), and each came back through an event loop busy with
# the requests: 8-9 ms of wall a round trip, a record of ~300 results 56 ms, and the one
# recorder was busy 98-99 % of a drain while results and leases piled up behind it
# (docs/performance-log.md). Two at a time overlap those waits. Their rows never meet (a
# queue's next delivery is claimed only once its head's record committed); the ledger's
# head of an organization is taken by one at a time, after the queues in both (one lock
# order). SQLite's transactions take one lock in turn: one recorder there.
RECORDERS_PG = 2


def pg_recorders(processes: int) -> int:
    """Batches a PostgreSQL worker records at once when it is one of ``processes`` worker
    processes started together (``worker --processes N``, ``serve --worker-processes N``):
    ``RECORDERS_PG`` alone, one beside others. Alone, the second recorder overlaps the
    round trips' waits on a loop busy with the requests. Beside others the machine's CPU is
    what bounds them, not those waits, and the extra records cost the server: four at once
    of two processes queue on the ledger's head and record smaller batches (with one each,
    ``python -m bench --only scale-out --repeat 3`` alternated three times: two processes
    2.8 % faster, the server 94 -> 90 CPU-µs a delivery, medians of nine runs;
    docs/performance-log.md, twenty-sixth session)."""
    return RECORDERS_PG if processes <= 1 else 1


class Worker:
    def __init__(
        self,
        ctx: Context,
        *,
        concurrency: int | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        rand: Callable[[], float] = random.random,
        worker_id: str | None = None,
        processes: int = 1,
    ) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.concurrency = concurrency or settings.worker_concurrency
        self.batch_size = batch_size
        # Worker processes started together, this one included (``pg_recorders``).
        self.processes = processes
        self.poll_interval = poll_interval
        self.rand = rand
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{ids.new_id('wk')[-8:]}"
        self.webhook_cap = settings.webhook_concurrency
        self.lease_ms = settings.lease_ms
        self.allowed = targets.allowed_networks(settings.allowed_networks)
        self.proxy = settings.egress_proxy or None
        self.webhooks = requests.WebhookCache(ctx)
        self._in_flight: set[int] = set()  # handed to the senders, not finished
        self._claimed: dict[int, Claimed] = {}  # leases held: in flight, or being recorded
        self._per_webhook: Counter[str] = Counter()
        self._todo: waiting.Jobs[Job | None] = waiting.Jobs()
        self._results: waiting.Waiting[Result] = waiting.Waiting()
        self._token_sources: dict[str, oauth.TokenSource] = {}
        self._wake = ctx.work_queued
        self._last_claim = 0.0
        self._backlog = False  # the last claim came back full (see _chain)
        self._stopping = False
        self._session: aiohttp.ClientSession
        self._pool: http1.Pool | None = None  # the POSTs' connections (sender.make_pool)
        self.sent = 0  # attempts made, for tests and metrics
        self.chained = 0  # deliveries a record leased on to this worker (see _chain)
        self._replays = replays.AutoReplay(ctx, self._wake)  # dead letters, once delivering
        self._attempt_ids = idgen.AttemptIds()

    # -- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        session = self._session = sender.make_session(self.ctx.settings, limit=self.concurrency)
        self._pool = sender.make_pool(self.ctx.settings, limit=self.concurrency)
        recorder = asyncio.create_task(self._record_loop(), name="recorder")
        senders = [
            asyncio.create_task(self._send_loop(), name=f"sender-{n}")
            for n in range(self.concurrency)
        ]
        try:
            while not stop.is_set():
                try:
                    busy = await self._claim_and_start()
                except errors.StorageUnavailable:
                    log.warning("database unavailable; retrying claims shortly")
                    busy = False
                except Exception:  # never let one bad batch stop the worker
                    log.exception("claim failed; retrying shortly")
                    busy = False
                if not busy:
                    await self._sleep(stop)
        finally:
            await self._shutdown(session, recorder, senders)

    async def _claim_and_start(self) -> bool:
        """Claim and start a batch. True when more is probably due right now."""
        # Clear before looking: work queued from now on sets it again and cuts the next
        # sleep short. (Cleared after the claim, a notice in between would be lost.)
        self._wake.clear()
        # At most ``concurrency`` requests in flight, and at most LEASES_PER_SLOT times that
        # many leases held (in flight, or sent and waiting for the recorder's commit):
        # claiming goes on while the previous results are written, and a crash loses at most
        # LEASES_PER_SLOT x concurrency leases.
        free, threshold, held = self._room()
        recently = time.monotonic() - self._last_claim < CLAIM_PAUSE
        if free <= 0 or (free < threshold and held and recently):
            # Batch claims while slots free up; but never wait long with slots free, or
            # requests hanging on a few dead receivers would starve everyone else.
            return False
        self._last_claim = time.monotonic()
        want = min(free, self.batch_size)
        await self.webhooks.refresh_if_stale()
        excluded = self._excluded()
        now_ms = self.ctx.clock_ms()
        lease = f"{self.id}:{ids.new_id('ls')[-10:]}"
        claimed = await batches.claim(  # one unreadable message cannot stop every claim
            self.ctx.store,
            limit=want,
            now_ms=now_ms,
            lease=lease,
            lease_ms=self.lease_ms,
            excluded=excluded,
        )
        self._backlog = len(claimed) == want
        if not claimed:
            return False
        await self._start(claimed, now_ms)
        return len(claimed) == want

    async def _start(self, claimed: list[Claimed], now_ms: int) -> None:
        """Hand leased deliveries to the senders; give back those it cannot send."""
        hooks = await self.webhooks.get_many({c.webhook_id for c in claimed})
        unsendable = []
        for item in claimed:
            hook = hooks.get(item.webhook_id)
            message = item.message
            if (
                hook is None
                or message is None
                or self._per_webhook[item.webhook_id] >= (self.webhook_cap)
            ):
                # Deleted meanwhile, turned unpreparable, or over its webhook's cap (one
                # claim may hold more heads of a webhook than it has room for): given back.
                unsendable.append(item)
                continue
            self._claimed[item.pk] = item
            self._per_webhook[item.webhook_id] += 1
            self._in_flight.add(item.pk)
            self._todo.put((item, hook, message))
        if unsendable:
            async with self.ctx.store.write() as tx:
                await queue.release(tx, unsendable, now_ms)

    def _excluded(self) -> list[str]:
        """Webhooks not to lease for now: at their cap of requests in flight, or broken."""
        excluded = [hook for hook, n in self._per_webhook.items() if n >= self.webhook_cap]
        excluded.extend(self.webhooks.broken)
        return excluded

    def _room(self) -> tuple[int, int, int]:
        """(free slots, the least worth a claim, leases held)."""
        in_flight, held = len(self._in_flight), len(self._claimed)
        free = self._free(in_flight, held)
        return free, max(1, min(self.batch_size, self.concurrency // 4)), held

    def _free(self, in_flight: int, held: int) -> int:
        """How many more deliveries this worker may lease: a slot each, and at most
        ``LEASES_PER_SLOT`` leases a slot in all."""
        return min(self.concurrency - in_flight, LEASES_PER_SLOT * self.concurrency - held)

    def _wake_if_room(self) -> None:
        """Wake the claiming loop when a claim would go ahead; not for every slot that frees
        up (each wake-up cost a look and a sleep's two tasks: measured): it looks again
        within CLAIM_PAUSE anyway while slots are free."""
        free, threshold, held = self._room()
        if free >= threshold or not held:
            self._wake.set()

    async def _sleep(self, stop: asyncio.Event) -> None:
        timeout = self.poll_interval
        if self._claimed and len(self._in_flight) < self.concurrency:
            timeout = CLAIM_PAUSE  # slots are free: look again soon, even with no wake-up
        # When the next delivery falls due, unless the worker looks again within
        # CLAIM_PAUSE anyway (a read transaction, each time a delivery ends, had the main
        # loop reading the queue while it waited for slots: measured).
        if timeout > CLAIM_PAUSE and len(self._in_flight) < self.concurrency:
            now_ms = self.ctx.clock_ms()
            try:
                async with self.ctx.store.read() as tx:
                    due = await queue.next_due_ms(tx, now_ms)
                    token = await ratelimit.next_token_ms(tx, now_ms)
                if token is not None:  # a rate-limited webhook's due heads, then
                    # (not at once: a webhook this worker leaves out, at its cap or broken,
                    # may have tokens and due heads, and would keep it spinning)
                    token = max(token, now_ms + int(CLAIM_PAUSE * 1000))
                    due = token if due is None else min(due, token)
            except errors.StorageUnavailable:
                due = None
            if due is not None:
                timeout = min(timeout, max(0.0, (due - now_ms) / 1000))
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # -- one delivery ---------------------------------------------------------------------

    async def _send_loop(self) -> None:
        """One sender: deliveries one at a time until the ``None`` that shutdown sends."""
        while (job := await self._todo.get()) is not None:
            await self._deliver(*job)

    async def _deliver(
        self, item: Claimed, hook: requests.PreparedWebhook, message: Message
    ) -> None:
        try:
            body = requests.render(hook, message)
            headers = requests.headers_for(hook, item.message_id, body)
            started_at = now_ts()
            result = await attempt.run(
                self._session,
                hook.url,
                body,
                headers,
                tokens=self._tokens_for(hook),
                deadline=self.ctx.settings.request_timeout,
                allowed=self.allowed,
                proxy=self.proxy,
                require_https=self.ctx.settings.require_https,
                pool=self._pool,
            )
            self.sent += 1
            self._results.add(self._result(item, hook, result, started_at, headers, body))
        except Exception:
            # Our own fault (a bug): give the slot back; the lease runs out and the delivery
            # is tried again later, by this worker or another.
            log.exception("delivery %s failed before it was sent", item.id)
            self._claimed.pop(item.pk, None)
        finally:
            self._in_flight.discard(item.pk)
            self._per_webhook[item.webhook_id] -= 1
            if self._per_webhook[item.webhook_id] <= 0:
                del self._per_webhook[item.webhook_id]
            if not self._wake.is_set():  # set already: the claiming loop will look anyway
                self._wake_if_room()

    def _tokens_for(self, hook: requests.PreparedWebhook) -> oauth.TokenSource | None:
        """The webhook's token source, kept while its OAuth settings stay the same."""
        if hook.authentication is None or hook.auth_secret is None:
            self._token_sources.pop(hook.id, None)
            return None
        credentials = oauth.Credentials.from_settings(hook.authentication, hook.auth_secret)
        source = self._token_sources.get(hook.id)
        if source is None or source.credentials != credentials:
            source = oauth.TokenSource(
                credentials,
                allowed=self.allowed,
                proxy=self.proxy,
                require_https=self.ctx.settings.require_https,
            )
            self._token_sources[hook.id] = source
        return source

    @property
    def leases_held(self) -> int:
        """Deliveries leased to this worker: in flight, or sent and not yet recorded."""
        return len(self._claimed)

    @property
    def requests_in_flight(self) -> int:
        """Deliveries handed to the senders and not finished (at most ``concurrency``)."""
        return len(self._in_flight)

    @property
    def token_fetches(self) -> int:
        return sum(source.fetches for source in self._token_sources.values())

    def _result(
        self,
        item: Claimed,
        hook: requests.PreparedWebhook,
        result: Outcome,
        started_at: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Result:
        status, due_ms = "delivered", None
        hold = None
        now_ms = 0
        if not result.ok:
            now_ms = self.ctx.clock_ms()
            # Attempts the receiver asked us to hold (Retry-After, 410) use up no retry.
            failed = item.attempt_count + 1 - item.held_attempts
            retry_after = retry.parse_retry_after(result.retry_after, datetime.now(UTC))
            hold = flow.hold_for(result.status_code, retry_after, item.held_attempts)
        if hold is not None:
            status, due_ms = "pending", now_ms + int(hold.due_in_s * 1000)
        elif not result.ok:
            delay = retry.next_delay(
                failed,
                self.ctx.settings.retry_schedule,
                jitter=self.ctx.settings.retry_jitter,
                rand=self.rand(),
                status_code=result.status_code,
                retry_after=retry_after,
            )
            if delay is None:
                status = "dead"
            else:
                status, due_ms = "pending", now_ms + int(delay * 1000)
        return Result(
            claimed=item,
            status=status,
            due_ms=due_ms,
            outcome=result.code,
            attempt_id=self._attempt_ids.new(),
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            response_body=result.response_body,
            request_headers=requests.stored_headers(hook, headers),
            error=result.error,
            response_bytes=result.response_bytes,
            # For the ledger, which has an entry for delivered results only (~1 us a KB).
            payload_sha256=hashlib.sha256(body).hexdigest() if status == "delivered" else None,
            held=hold is not None,
            pause_until_ms=None
            if hold is None or hold.pause_s is None
            else now_ms + int(hold.pause_s * 1000),
            disable_reason=f"HTTP 410 at {from_ms(now_ms)}" if hold and hold.disable else None,
        )

    # -- recording --------------------------------------------------------------------------

    async def _record_loop(self) -> None:
        """Record results in batches of at most 500 until shutdown closes ``_results``, after
        which everything added before has been recorded: one batch at a time on SQLite, up
        to ``pg_recorders`` on PostgreSQL (a batch is taken when a recorder is free)."""
        results = self._results
        recorders = 1 if self.ctx.store.is_sqlite else pg_recorders(self.processes)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                while len(running) >= recorders:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                await results.wait()
                if not results.closed and self._in_flight and len(results) < RECORD_BATCH:
                    # More results are on their way: a moment's wait makes one transaction
                    # of many (a record's round trips cost the same for 5 results or 50).
                    await asyncio.sleep(RECORD_PAUSE)
                batch = results.take(500)
                if not batch:
                    return  # closed, and nothing left (the finally waits for the rest)
                # The attempts' metrics, a batch at a time (metrics.AttemptTally).
                metrics.attempt_tally.add([(r.outcome, r.duration_ms) for r in batch])
                task = asyncio.create_task(self._record(batch), name="record")
                running.add(task)
                task.add_done_callback(running.discard)
        except asyncio.CancelledError:
            for task in running:  # the recorder is cancelled: so are its records
                task.cancel()
            raise
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _record(self, batch: list[Result]) -> None:
        """Record a batch (storage isolates a row the database refuses, and logs why);
        while the database is away, retry what is not recorded yet."""
        recorded = batches.Recorded()
        left = batch
        delay = 0.05
        chain = self._chain(batch)
        while left:
            try:
                now_ms = self.ctx.clock_ms()
                if chain is not None:
                    chain.until_ms = now_ms + self.lease_ms
                await batches.record(
                    self.ctx.store,
                    left,
                    now_ms=now_ms,
                    now=from_ms(now_ms),
                    into=recorded,
                    chain=chain,
                )
                break
            except errors.StorageUnavailable:
                log.warning("database unavailable; will record %d results again", len(left))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                settled = recorded.settled()
                left = [r for r in left if r.claimed.pk not in settled]
            except Exception:
                # Our own fault (batches.record isolates the database's refusals): these
                # results are dropped and their leases run out, so the deliveries go out
                # again (at least once); the recorder itself carries on.
                log.exception("could not record %d results", len(left))
                break
        for result in batch:
            self._claimed.pop(result.claimed.pk, None)
        if recorded.chained:
            self.chained += len(recorded.chained)
            try:
                await self._start(recorded.chained, self.ctx.clock_ms())
            except Exception:  # their leases run out and they go out then
                log.exception("could not start %d chained deliveries", len(recorded.chained))
        self._wake_if_room()  # leases given back: room to claim, perhaps
        if recorded.lost:
            log.info("%d results dropped: their leases had moved on", len(recorded.lost))
        finished = Counter(r.status for r in recorded.kept if r.status != "pending")
        for status, count in finished.items():
            metrics.finished.labels(status).inc(count)
        if finished:
            self._wake.set()  # the next deliveries of those queues are due now
            self._replays.note(recorded.kept)

    def _chain(self, batch: list[Result]) -> queue.Chain | None:
        """What the record of ``batch`` may lease on to this worker (chained leases: the
        next delivery of each queue it finishes, without a claim; ``queue.Chain``), or None.

        On SQLite only: there, one writer, it saved 5-10 % of the worker's CPU a delivery
        (the claims of about half the deliveries of a backlog, each a transaction with its
        fsync); on PostgreSQL it measured slower (the record, one at a time, then carries
        the next deliveries and their messages, while claims run beside it), so there the
        next deliveries are made due and claimed. Only while there is a backlog (the last
        claim came back full): then every worker has due queues to claim, and a worker
        keeping its queues' next deliveries takes nothing from another. When work is scarce
        the next deliveries are made due instead, for any worker to claim, so that a worker
        does not keep every queue to itself while others wait. At most the room the batch
        leaves (the same bounds as a claim's), and never for a webhook the claim would
        leave out."""
        if self._stopping or not self._backlog or not self.ctx.store.is_sqlite:
            return None
        settled = sum(1 for r in batch if r.claimed.pk in self._claimed)
        in_flight, held = len(self._in_flight), len(self._claimed) - settled
        room = self._free(in_flight, held)
        if room <= 0:
            return None
        excluded = self._excluded()
        lease = f"{self.id}:{ids.new_id('ls')[-10:]}"
        return queue.Chain(lease=lease, until_ms=0, limit=room, excluded=excluded)

    # -- shutdown ---------------------------------------------------------------------------

    async def _shutdown(
        self,
        session: aiohttp.ClientSession,
        recorder: asyncio.Task[None],
        senders: list[asyncio.Task[None]],
    ) -> None:
        """Stop claiming; let in-flight attempts finish within their deadline; record them;
        give back the leases of whatever could not finish."""
        self._stopping = True  # records lease nothing on from now on
        for _ in senders:
            self._todo.put(None)  # after every job queued: those are sent first
        await asyncio.wait(senders, timeout=self.ctx.settings.request_timeout + 1)
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        # Let the recorder write everything queued (it retries while the database is away,
        # for a bounded time); cancelling it mid-write could lose a result already sent.
        self._results.close()
        try:
            await asyncio.wait_for(recorder, timeout=self.ctx.settings.request_timeout + 5)
        except TimeoutError:
            log.warning("could not record every result before stopping")
        await self._replays.stop()
        leftover = list(self._claimed.values())
        if leftover:
            with contextlib.suppress(errors.StorageUnavailable):
                async with self.ctx.store.write() as tx:
                    await queue.release(tx, leftover, self.ctx.clock_ms())
        await session.close()
        if self._pool is not None:
            await self._pool.close()
