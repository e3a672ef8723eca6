"""The migrations build exactly the schema that ``storage/tables.py`` describes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from consent_relay.storage import databases, inspect, migrate, tamper, webhook_versions
from consent_relay.storage.records import Organization
from consent_relay.storage.store import Store
from tests.conftest import POSTGRES_URL


@contextlib.asynccontextmanager
async def _empty_store(
    db_url: str, tmp_path: Path, tag: str, icu_locale: str | None = None
) -> AsyncIterator[Store]:
    """A store on a database of its own, not migrated (a migration test takes it from an
    older revision): a file beside the test on SQLite, a database dropped afterwards on
    PostgreSQL (its default collation ``icu_locale``'s when given)."""
    if db_url.startswith("sqlite"):
        url, name = f"sqlite:///{tmp_path / 'old.db'}", None
    else:
        name = f"consent_relay_t{os.getpid()}_{tag}"
        url = await databases.create_database(POSTGRES_URL, name, icu_locale)
    store = Store(url, pool_size=1)
    try:
        yield store
    finally:
        await store.close()
        if name is not None:
            await databases.drop_database(POSTGRES_URL, name)


async def test_migrated_schema_matches_the_tables(store: Store) -> None:
    async with store.read() as tx:
        diff = await inspect.schema_differences(tx)
    assert diff == []


async def test_attempts_have_no_second_index_on_delivery_id(store: Store) -> None:
    """uq_attempts_number (delivery_id, attempt_number) serves lookups by delivery; a second
    index on delivery_id alone only slowed every attempt written (migration 0002)."""
    async with store.read() as tx:
        names = await inspect.index_names(tx, "attempts")
    assert "ix_attempts_delivery_id" not in names


async def test_0007_stamps_the_webhooks_of_existing_organizations_at_zero(
    db_url: str, tmp_path: Path
) -> None:
    """An organization created before migration 0007 gets stamp 0, as a new one does, so a
    process's cache works the same for both (services/webhook_cache.py)."""
    async with _empty_store(db_url, tmp_path, "0007") as store:
        await migrate.upgrade(store.engine, "0006")
        async with store.write() as tx:
            await tx.insert_organization(Organization("old", "Old", "2026-01-01T00:00:00Z"))
        await store.migrate()
        async with store.read() as tx:
            assert await webhook_versions.read(tx, "old", None) == (0, [])


def _old_delivery(
    pk: int, user: str, seq: int, status: str, due: int | None, lease: str | None
) -> dict[str, object]:
    """A delivery row as revision 0008 stored it (its clock and lease on the row)."""
    return {
        "pk": pk,
        "id": f"dlv_{pk}",
        "organization_id": "acme",
        "webhook_id": "wh_1",
        "message_id": f"msg_{pk}",
        "user_id": user,
        "seq": seq,
        "status": status,
        "attempt_count": 0,
        "due_ms": due,
        "lease_owner": lease,
        "created_at": "now",
        "updated_at": "now",
        "held_attempts": 0,
    }


async def test_0009_moves_each_heads_clock_and_lease_to_its_queue(
    db_url: str, tmp_path: Path
) -> None:
    """Queues as revision 0008 left them (a head leased, a head due, a queue emptied) keep
    their heads' clocks and leases on the queue row, and the head delivery's row keeps
    nothing of them."""
    async with _empty_store(db_url, tmp_path, "0009") as store:
        await migrate.upgrade(store.engine, "0008")
        async with store.write() as tx:
            await tamper.insert_old_rows(
                tx,
                "delivery_queues",
                [
                    {"webhook_id": "wh_1", "user_id": "leased", "last_seq": 3, "pending": 2},
                    {"webhook_id": "wh_1", "user_id": "due", "last_seq": 1, "pending": 1},
                    {"webhook_id": "wh_1", "user_id": "empty", "last_seq": 1, "pending": 0},
                ],
            )
            await tamper.insert_old_rows(
                tx,
                "deliveries",
                [
                    _old_delivery(1, "leased", 1, "delivered", None, None),
                    _old_delivery(2, "leased", 2, "pending", 70_000, "worker:1"),
                    _old_delivery(3, "leased", 3, "pending", None, None),
                    _old_delivery(4, "due", 1, "pending", 5_000, None),
                    _old_delivery(5, "empty", 1, "delivered", None, None),
                ],
            )
        await store.migrate()
        async with store.read() as tx:
            queues = {
                q["user_id"]: (q["due_ms"], q["lease_owner"])
                for q in await inspect.rows(tx, "delivery_queues")
            }
            clocks = {
                d["pk"]: (d["due_ms"], d["lease_owner"])
                for d in await inspect.deliveries_with_clock(tx)
            }
            assert await inspect.schema_differences(tx) == []
        assert queues == {
            "leased": (70_000, "worker:1"),
            "due": (5_000, None),
            "empty": (None, None),
        }
        assert clocks == {
            1: (None, None),
            2: (70_000, "worker:1"),
            3: (None, None),
            4: (5_000, None),
            5: (None, None),
        }


async def test_0010_text_compares_byte_by_byte_whatever_the_database_locale(
    db_url: str, tmp_path: Path
) -> None:
    """On a PostgreSQL database whose default collation sorts ``_ a B`` (ICU ``en-US``),
    migration 0010 collates every text column ``"C"``: identifiers sort by their bytes,
    ``B _ a``, as on SQLite, and its downgrade gives the columns back to the database's
    default collation."""
    queues = [
        {"webhook_id": "wh_1", "user_id": user, "last_seq": 1, "pending": 1}
        for user in ("a", "_", "B")
    ]
    async with _empty_store(db_url, tmp_path, "0010", "en-US") as store:
        await migrate.upgrade(store.engine, "0009")
        async with store.write() as tx:
            await tamper.insert_old_rows(tx, "delivery_queues", queues)
            before = [q["user_id"] for q in await inspect.rows(tx, "delivery_queues")]
        await store.migrate()
        await store.engine.dispose()  # a column's new type invalidates prepared statements
        async with store.read() as tx:
            after = [q["user_id"] for q in await inspect.rows(tx, "delivery_queues")]
            collations = await inspect.text_collations(tx)
            assert await inspect.schema_differences(tx) == []
        await migrate.downgrade(store.engine, "0009")
        await store.engine.dispose()
        async with store.read() as tx:
            reverted = set((await inspect.text_collations(tx)).values())
    assert after == ["B", "_", "a"]
    if db_url.startswith("sqlite"):  # BINARY already, nothing to migrate
        assert before == after
        assert collations == {}
        assert reverted == set()
    else:
        assert before == ["_", "a", "B"]
        assert ("deliveries", "user_id") in collations
        assert set(collations.values()) == {"C"}
        assert reverted == {None}


async def test_0011_attempts_are_unique_by_delivery_and_number_only(
    db_url: str, tmp_path: Path
) -> None:
    """Migration 0011 drops the unique index on an attempt's id (one B-tree insertion an
    attempt fewer); the attempts already stored stay as they were, and (delivery, attempt
    number) stays unique."""
    attempt = {
        "pk": 7,
        "id": "att_1",
        "delivery_id": "dlv_1",
        "attempt_number": 1,
        "started_at": "2026-12-03T00:00:00Z",
        "duration_ms": 12,
        "outcome": "ok",
        "status_code": 204,
        "response_body": "",
        "request_headers": '{"webhook-id": "msg_1"}',
        "error": None,
        "response_bytes": 1024,
    }
    async with _empty_store(db_url, tmp_path, "0011") as store:
        await migrate.upgrade(store.engine, "0010")
        async with store.write() as tx:
            await tamper.insert_old_rows(tx, "attempts", [attempt])
            before = await inspect.unique_column_sets(tx, "attempts")
        await store.migrate()
        await store.engine.dispose()  # SQLite's table was copied
        async with store.read() as tx:
            after = await inspect.unique_column_sets(tx, "attempts")
            stored = await inspect.rows(tx, "attempts")
            assert await inspect.schema_differences(tx) == []
    assert before == {("id",), ("delivery_id", "attempt_number")}
    assert after == {("delivery_id", "attempt_number")}
    assert stored == [attempt]


async def test_0012_finds_due_queues_a_webhook_at_a_time(db_url: str, tmp_path: Path) -> None:
    """Migration 0012 drops the index of every due head (the claim and the next wake-up read
    each webhook's through ``ix_delivery_queues_webhook_due``); its downgrade makes it again."""
    async with _empty_store(db_url, tmp_path, "0012") as store:
        await migrate.upgrade(store.engine, "0011")
        async with store.read() as tx:
            before = await inspect.index_names(tx, "delivery_queues")
        await store.migrate()
        async with store.read() as tx:
            after = await inspect.index_names(tx, "delivery_queues")
            assert await inspect.schema_differences(tx) == []
        await migrate.downgrade(store.engine, "0011")
        async with store.read() as tx:
            reverted = await inspect.index_names(tx, "delivery_queues")
    assert {"ix_delivery_queues_due", "ix_delivery_queues_webhook_due"} <= before
    assert "ix_delivery_queues_due" not in after
    assert "ix_delivery_queues_webhook_due" in after
    assert reverted == before


async def test_0013_makes_a_place_in_a_queue_unique(db_url: str, tmp_path: Path) -> None:
    """Migration 0013 makes ``ix_deliveries_queue`` (webhook, user, sequence number) unique:
    the planner then knows a head's lookup finds one row. Its downgrade makes it plain."""
    async with _empty_store(db_url, tmp_path, "0013") as store:
        await migrate.upgrade(store.engine, "0012")
        async with store.read() as tx:
            before = await inspect.unique_column_sets(tx, "deliveries")
        await store.migrate()
        async with store.read() as tx:
            after = await inspect.unique_column_sets(tx, "deliveries")
            assert await inspect.schema_differences(tx) == []
        await migrate.downgrade(store.engine, "0012")
        async with store.read() as tx:
            reverted = await inspect.unique_column_sets(tx, "deliveries")
            assert "ix_deliveries_queue" in await inspect.index_names(tx, "deliveries")
    assert ("webhook_id", "user_id", "seq") not in before
    assert after == before | {("webhook_id", "user_id", "seq")}
    assert reverted == before


def _delivery_0013(pk: int, user: str, status: str) -> dict[str, object]:
    """A delivery row as revisions 0009 to 0013 stored it: 0008's without its clock and
    lease (moved to the queue), last updated on day ``pk``."""
    row = _old_delivery(pk, user, 1, status, None, None)
    del row["due_ms"], row["lease_owner"]
    return {**row, "updated_at": f"2026-01-0{pk}T00:00:00Z"}


async def test_0014_marks_dead_letters_by_dead_at_and_indexes_no_status(
    db_url: str, tmp_path: Path
) -> None:
    """Migration 0014: the dead and superseded deliveries get ``dead_at`` (their last update),
    the others none; no index names ``status`` (a delivered record is then a HOT update on
    PostgreSQL: test_hot_record.py). Its downgrade brings the status indexes back."""
    statuses = {1: "dead", 2: "superseded", 3: "delivered", 4: "pending"}
    async with _empty_store(db_url, tmp_path, "0014") as store:
        await migrate.upgrade(store.engine, "0013")
        async with store.write() as tx:
            await tamper.insert_old_rows(
                tx,
                "deliveries",
                [_delivery_0013(pk, f"u{pk}", status) for pk, status in statuses.items()],
            )
        await store.migrate()
        async with store.read() as tx:
            dead_at = {d["pk"]: d["dead_at"] for d in await inspect.rows(tx, "deliveries")}
            after = await inspect.index_names(tx, "deliveries")
            assert await inspect.schema_differences(tx) == []
        await migrate.downgrade(store.engine, "0013")
        async with store.read() as tx:
            reverted = await inspect.index_names(tx, "deliveries")
            columns = await inspect.column_names(tx, "deliveries")
    assert dead_at == {1: "2026-01-01T00:00:00Z", 2: "2026-01-02T00:00:00Z", 3: None, 4: None}
    assert "ix_deliveries_webhook_status" not in after
    assert {"ix_deliveries_webhook", "ix_deliveries_letters", "ix_deliveries_dead_letters"} <= after
    assert {"ix_deliveries_webhook_status", "ix_deliveries_dead_letters"} <= reverted
    assert not {"ix_deliveries_webhook", "ix_deliveries_letters"} & reverted
    assert "dead_at" not in columns


def _attempt(pk: int, response_bytes: int | None) -> dict[str, object]:
    return {
        "pk": pk,
        "id": f"atm_{pk}",
        "delivery_id": f"dlv_{pk}",
        "attempt_number": 1,
        "started_at": "2026-01-01T00:00:00Z",
        "duration_ms": 5,
        "outcome": "OK",
        "response_bytes": response_bytes,
    }


async def test_0015_keeps_a_declared_size_of_any_length(db_url: str, tmp_path: Path) -> None:
    """Migration 0015: an attempt's ``response_bytes`` (a cut body's declared size, the
    receiver's choice) takes 64-bit values on PostgreSQL too; the sizes already stored stay.
    Its downgrade makes unknown (NULL) the sizes that no longer fit."""
    big = 2**40
    async with _empty_store(db_url, tmp_path, "0015") as store:
        await migrate.upgrade(store.engine, "0014")
        async with store.write() as tx:
            await tamper.insert_old_rows(tx, "attempts", [_attempt(1, 4097), _attempt(2, None)])
        await store.migrate()
        async with store.write() as tx:
            await tamper.insert_old_rows(tx, "attempts", [_attempt(3, big)])
        async with store.read() as tx:
            after = {a["pk"]: a["response_bytes"] for a in await inspect.rows(tx, "attempts")}
            assert await inspect.schema_differences(tx) == []
        await migrate.downgrade(store.engine, "0014")
        async with store.read() as tx:
            reverted = {a["pk"]: a["response_bytes"] for a in await inspect.rows(tx, "attempts")}
    assert after == {1: 4097, 2: None, 3: big}
    if db_url.startswith("sqlite"):
        assert reverted == after  # SQLite's INTEGER was 64-bit all along
    else:
        assert reverted == {1: 4097, 2: None, 3: None}
