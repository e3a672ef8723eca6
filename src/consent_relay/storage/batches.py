"""Batches that one bad row cannot poison: recording attempts, claiming deliveries,
replaying dead letters.

A batch goes to the database as one statement (one JSON parameter: see ``queue``), which is
what keeps the worker's database cost per delivery low. But the database refuses a statement
whole: one row it cannot take (once, a receiver's NUL byte that PostgreSQL's ``jsonb``
refused) failed every row beside it, and a failed record meant every delivery of the batch
went out again when its lease ran out, with no attempt recorded.

So a batch that fails for any reason but the database's availability is tried again in
halves, down to single rows (``bisect``): the normal case costs nothing more, one bad row
costs about ``2 log2(n)`` more statements, and only the bad row fails. PostgreSQL aborts a
transaction at its first error, so each try has a transaction of its own (``record``) or a
SAVEPOINT (``replay``, which must stay one transaction with the dead letters it read).
``StorageUnavailable`` is never bisected (the caller retries the batch when the database is
back), except by ``claim``, for a reason given there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import text

from consent_relay import errors
from consent_relay.storage import codec, driver, ledger, queue
from consent_relay.storage import engine as engines
from consent_relay.storage.queue import Claimed, Result
from consent_relay.storage.tx import Tx

if TYPE_CHECKING:
    import sqlite3

    from consent_relay.storage.store import Store

log = logging.getLogger("consent_relay.storage")
T = TypeVar("T")
Opener = Callable[[], AbstractAsyncContextManager[Tx]]  # Store.write or Store.read

# Stored in an attempt's ``error`` in place of texts the database refused (its body, error
# and request headers are then left out); the attempt still counts.
UNSTORABLE_NOTE = (
    "not stored: the database refused this attempt's response body, error text or request "
    "headers (the worker's log says why)"
)


async def bisect(
    items: Sequence[T],
    attempt: Callable[[Sequence[T]], Awaitable[None]],
    alone: Callable[[T, Exception], Awaitable[None]],
    *,
    unavailable_too: bool = False,
) -> None:
    """``attempt(items)``; if it fails (not for availability, unless ``unavailable_too``),
    each half the same way, down to single items; a single item that fails goes to ``alone``
    with the reason."""
    if not items:
        return
    try:
        await attempt(items)
        return
    except Exception as exc:
        if isinstance(exc, errors.StorageUnavailable) and not unavailable_too:
            raise
        failure = exc
    if len(items) == 1:
        await alone(items[0], failure)
        return
    # Not a warning: a conflict that clears at once (two records starting an organization's
    # ledger chain together) takes this path too; a row that keeps failing is logged alone.
    log.info("a batch of %d failed, tried again in halves: %s", len(items), describe(failure))
    middle = len(items) // 2
    await bisect(items[:middle], attempt, alone, unavailable_too=unavailable_too)
    await bisect(items[middle:], attempt, alone, unavailable_too=unavailable_too)


def describe(exc: BaseException) -> str:
    """The database's own reason, on one line, for a log. (SQLAlchemy's text goes on with
    the statement and its parameters: every row of the batch.)"""
    cause: BaseException = exc
    while isinstance(cause, errors.ConsentRelayError) and cause.__cause__ is not None:
        cause = cause.__cause__  # Conflict and the like wrap the driver's error
    cause = getattr(cause, "orig", None) or cause
    first = (str(cause).splitlines() or [""])[0][:300]
    line = f"{type(cause).__name__}: {first}"
    # A log line is JSON too (logs.JsonFormatter): no lone surrogate may reach it.
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


# -- recording attempts -----------------------------------------------------------------------


@dataclass
class Recorded:
    """What became of a batch of results (``record``)."""

    kept: list[Result] = field(default_factory=list)  # recorded (``noted`` among them)
    noted: list[Result] = field(default_factory=list)  # recorded with UNSTORABLE_NOTE
    lost: list[Result] = field(default_factory=list)  # the lease had moved on: not recorded
    failed: list[Result] = field(default_factory=list)  # not recorded: the lease runs out
    # The next deliveries leased on to the worker in the records that committed (``chain``)
    chained: list[Claimed] = field(default_factory=list)

    def settled(self) -> set[int]:
        """The deliveries (pk) done with, one way or another."""
        return {r.claimed.pk for r in (*self.kept, *self.lost, *self.failed)}

    def add(self, tried: Sequence[Result], kept: Sequence[Result]) -> None:
        held = {r.claimed.pk for r in kept}
        self.kept.extend(kept)
        self.lost.extend(r for r in tried if r.claimed.pk not in held)


async def record(
    store: Store,
    results: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    into: Recorded | None = None,
    chain: queue.Chain | None = None,
) -> Recorded:
    """Record a batch of results (``queue.record``), one bad row failing alone. With
    ``chain``, the records lease on the next deliveries of the queues they finish, at most
    ``chain.limit`` in all (``Recorded.chained``; a result recorded alone chains nothing).

    A result the database refuses, alone, is recorded again with ``UNSTORABLE_NOTE`` in
    place of its texts: its attempt counts, retries and dead-lettering go on as for any
    other. Should even that fail, its delivery is updated without an attempt row; should
    that fail too, it is left to its lease (and logged). The reason is always logged.

    Raises ``StorageUnavailable``, after which ``into`` (when given) holds what was settled
    before: retry the others (``Recorded.settled``).
    """
    done = Recorded() if into is None else into

    async def attempt(batch: Sequence[Result]) -> None:
        room = None
        if chain is not None:
            room = dataclasses.replace(chain, limit=chain.limit - len(done.chained))
        chained: list[Claimed] = []
        path = _path(store)
        if path is not None and not any(_changes_flow(r) for r in batch):
            if path == "sqlite":
                kept, leased_on = await store.sqlite_transaction(
                    _record_sqlite(batch, now_ms=now_ms, now=now, with_attempts=True, chain=room)
                )
            else:
                # One statement, the ledger's entries with it: its own transaction.
                kept, leased_on = await store.pg_transaction(
                    lambda raw: queue.record_pg(
                        raw,
                        batch,
                        now_ms=now_ms,
                        now=now,
                        with_attempts=True,
                        chain=room,
                        with_ledger=True,
                    ),
                    begin=False,
                )
            chained.extend(leased_on)
        else:
            async with store.write() as tx:
                kept = await _record_in(
                    tx, batch, now_ms=now_ms, now=now, chain=room, chained=chained
                )
        done.add(batch, kept)
        done.chained.extend(chained)  # committed: these leases are the worker's now

    async def alone(result: Result, reason: Exception) -> None:
        await _record_alone(store.write, result, reason, now_ms=now_ms, now=now, done=done)

    await bisect(results, attempt, alone)
    return done


async def _record_in(
    tx: Tx,
    batch: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    with_attempts: bool = True,
    chain: queue.Chain | None = None,
    chained: list[Claimed] | None = None,
) -> list[Result]:
    """``queue.record``, then ``ledger.append`` for the delivered ones, in ``tx``; on SQLite
    both in one hop to aiosqlite's thread (``queue_sqlite``), pauses and disabling apart.
    The next deliveries leased on (``chain``) go to ``chained``."""
    if tx.dialect != "sqlite":
        kept = await queue.record(
            tx,
            batch,
            now_ms=now_ms,
            now=now,
            with_attempts=with_attempts,
            chain=chain,
            chained=chained,
        )
        await ledger.append(tx, kept, now)  # delivered ones leave a ledger entry
        return kept

    work = _record_sqlite(batch, now_ms=now_ms, now=now, with_attempts=with_attempts, chain=chain)
    kept, leased_on = await driver.on_sqlite(tx, work)
    if chained is not None:
        chained.extend(leased_on)
    await queue.flow_changes(tx, kept, now)
    return kept


def _record_sqlite(
    batch: Sequence[Result],
    *,
    now_ms: int,
    now: str,
    with_attempts: bool,
    chain: queue.Chain | None,
) -> Callable[[sqlite3.Connection], tuple[list[Result], list[Claimed]]]:
    """The record of ``batch`` and the ledger entries of its delivered results, as one
    function of SQLite's connection (run whole in one call): the results recorded and the
    next deliveries leased on."""

    def work(db: sqlite3.Connection) -> tuple[list[Result], list[Claimed]]:
        kept, leased_on = queue.record_sqlite(
            db, batch, now_ms=now_ms, now=now, with_attempts=with_attempts, chain=chain
        )
        ledger.append_sqlite(db, kept, now)
        return kept, leased_on

    return work


def _path(store: Store) -> str | None:
    """How the worker's claim and record reach the database, rather than through
    ``write()``: "sqlite" (a SQLite file: ``Store.sqlite_transaction``, each transaction in
    one call on the event loop's thread), "postgresql" (``Store.pg_transaction``, on the raw
    driver); None for SQLite in memory (``write()``'s connection is its only one)."""
    if store.sqlite_file is not None:
        return "sqlite"
    return None if store.is_sqlite else "postgresql"


def _changes_flow(result: Result) -> bool:
    """A result that pauses or disables its webhook (``queue.flow_changes``): its batch is
    recorded through ``write()``, where those statements are, in the same transaction."""
    return result.pause_until_ms is not None or result.disable_reason is not None


async def _record_alone(
    write: Opener, result: Result, reason: Exception, *, now_ms: int, now: str, done: Recorded
) -> None:
    where = f"attempt {result.claimed.attempt_count + 1} of delivery {result.claimed.id}"
    log.error(
        "%s could not be stored (%s); recording it without its texts", where, describe(reason)
    )
    noted = dataclasses.replace(
        result, response_body=None, request_headers=None, error=UNSTORABLE_NOTE
    )
    for with_attempt in (True, False):
        try:
            async with write() as tx:
                kept = await _record_in(
                    tx, [noted], now_ms=now_ms, now=now, with_attempts=with_attempt
                )
        except errors.StorageUnavailable:
            raise
        except Exception as exc:
            if with_attempt:
                log.error(
                    "%s could not be stored even without its texts (%s); updating its "
                    "delivery without an attempt row",
                    where,
                    describe(exc),
                )
                continue
            log.error(
                "%s: its delivery could not be updated (%s); its lease will run out and it "
                "will be tried again",
                where,
                describe(exc),
            )
            done.failed.append(result)
            return
        done.add([noted], kept)
        done.noted.extend(kept)
        return


# -- claiming deliveries ---------------------------------------------------------------------


async def claim(
    store: Store,
    *,
    limit: int,
    now_ms: int,
    lease: str,
    lease_ms: int,
    excluded: Sequence[str] = (),
) -> list[Claimed]:
    """Lease due heads with their messages (``queue.claim``), one unreadable message failing
    alone.

    The claim reads the heads' messages in its own transaction (on PostgreSQL in its one
    statement), so a message the database cannot hand back (on SQLite, text that is not
    UTF-8, written by something else than us) failed every claim, oldest due first, and the
    worker delivered nothing. SQLite reports that as an ``OperationalError``, which reads as
    the database being unavailable: so here any failure of the claim is followed by a claim
    without messages (which fails in turn when the database is really away), then by reading
    the messages in halves. A head whose message cannot be read stays leased (tried again
    when the lease runs out) and is logged; the others are returned.
    """
    claimed: list[Claimed] = []  # by a first transaction that committed
    try:
        path = _path(store)
        if path is None:
            async with store.write() as tx:
                return await queue.claim(
                    tx, limit=limit, now_ms=now_ms, lease=lease, lease_ms=lease_ms,
                    excluded=excluded,
                )  # fmt: skip
        # The claim in one call on SQLite (``queue.claim_sqlite``), or as one
        # statement on PostgreSQL's raw driver (``queue.claim_pg``); when it comes back short
        # while rate-limited webhooks have due heads, those in a transaction of their own
        # (a lease is a lease whichever transaction took it). The claim's commit does not
        # wait for the disk (``durable=False``): it writes leases only, and one lost in a
        # crash ran out; every later durable commit, its record's included, syncs it.
        if path == "sqlite":
            claimed, more = await store.sqlite_transaction(
                lambda db: queue.claim_sqlite(
                    db,
                    limit=limit,
                    now_ms=now_ms,
                    lease=lease,
                    lease_ms=lease_ms,
                    excluded=excluded,
                ),
                durable=False,
            )
        else:
            claimed, more = await store.pg_transaction(
                lambda raw: queue.claim_pg(
                    raw,
                    limit=limit,
                    now_ms=now_ms,
                    lease=lease,
                    lease_ms=lease_ms,
                    excluded=excluded,
                ),
                begin=False,
                durable=False,
            )
        if not more:
            return claimed
        async with store.write() as tx:
            return claimed + await queue.claim_rate_limited(
                tx,
                limit=limit - len(claimed),
                now_ms=now_ms,
                lease=lease,
                lease_ms=lease_ms,
                excluded=excluded,
            )
    except Exception as exc:
        failure = exc
    limit -= len(claimed)
    async with store.write() as tx:
        bare = await queue.claim(
            tx,
            limit=limit,
            now_ms=now_ms,
            lease=lease,
            lease_ms=lease_ms,
            excluded=excluded,
            with_messages=False,
        )
    log.error(
        "claim failed (%s); %d deliveries claimed without their messages, read apart",
        describe(failure),
        len(bare),
    )
    found: dict[str, queue.Message] = {}
    unreadable: set[int] = set()

    async def attempt(heads: Sequence[Claimed]) -> None:
        async with store.read() as tx:
            found.update(await queue.messages_by_id(tx, [c.message_id for c in heads]))

    async def alone(head: Claimed, reason: Exception) -> None:
        log.error(
            "message %s of delivery %s cannot be read (%s); the delivery is tried again "
            "when its lease runs out",
            head.message_id,
            head.id,
            describe(reason),
        )
        unreadable.add(head.pk)

    await bisect(bare, attempt, alone, unavailable_too=True)
    return claimed + [
        dataclasses.replace(c, message=found.get(c.message_id))
        for c in bare
        if c.pk not in unreadable
    ]


# -- replaying dead letters -------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    pk: int
    id: str
    organization_id: str
    webhook_id: str
    message_id: str
    user_id: str


@dataclass
class Replayed:
    """What became of the dead letters of a replay: ``(dead letter id, new delivery id)``
    for those replayed, ``(dead letter id, reason)`` for those the database refused."""

    replayed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


async def replay(tx: Tx, dead: Sequence[DeadLetter], now_ms: int, now: str) -> Replayed:
    """Each dead letter as a new delivery of its message at the back of its queue, the two
    linked (``replayed_by``, ``replay_of``), in ``tx``; a dead letter the database refuses
    is left as it is (and logged), the others are replayed."""
    done = Replayed()

    async def attempt(batch: Sequence[DeadLetter]) -> None:
        async with engines.translate_errors(), tx.conn.begin_nested():
            new_ids = await queue.append(
                tx,
                [(d.organization_id, d.webhook_id, d.message_id, d.user_id) for d in batch],
                now_ms,
                now,
            )
            pairs = [(d, new_id) for d, new_id in zip(batch, new_ids, strict=True)]
            await _link_replays(tx, pairs)
        done.replayed.extend((d.id, new_id) for d, new_id in pairs)

    async def alone(letter: DeadLetter, reason: Exception) -> None:
        log.error("dead letter %s could not be replayed (%s)", letter.id, describe(reason))
        done.failed.append((letter.id, describe(reason)))

    await bisect(dead, attempt, alone)
    return done


async def _link_replays(tx: Tx, pairs: Sequence[tuple[DeadLetter, str]]) -> None:
    rows: list[dict[str, Any]] = [{"pk": d.pk, "old": d.id, "new": n} for d, n in pairs]
    source = queue.rows_source(tx.dialect, [("pk", "bigint"), ("old", "text"), ("new", "text")])
    params = {"rows": codec.dumps(rows)}
    await tx.conn.execute(
        text(f"UPDATE deliveries SET replayed_by = v.new FROM {source} WHERE deliveries.pk = v.pk"),
        params,
    )
    await tx.conn.execute(
        # The replay is about what its dead letter was about (flow.subject_of).
        text(
            f"UPDATE deliveries SET replay_of = v.old,"
            f" subject = (SELECT o.subject FROM deliveries o WHERE o.pk = v.pk)"
            f" FROM {source} WHERE deliveries.id = v.new"
        ),
        params,
    )
