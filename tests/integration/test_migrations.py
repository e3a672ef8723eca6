"""The migrations build exactly the schema that ``storage/tables.py`` describes."""

from __future__ import annotations

import os
from pathlib import Path

from consent_relay.storage import databases, inspect, migrate, webhook_versions
from consent_relay.storage.records import Organization
from consent_relay.storage.store import Store
from tests.conftest import POSTGRES_URL


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
    if db_url.startswith("sqlite"):
        url, name = f"sqlite:///{tmp_path / 'old.db'}", None
    else:
        name = f"consent_relay_t{os.getpid()}_0007"
        url = await databases.create_database(POSTGRES_URL, name)
    store = Store(url, pool_size=1)
    try:
        await migrate.upgrade(store.engine, "0006")
        async with store.write() as tx:
            await tx.insert_organization(Organization("old", "Old", "2026-01-01T00:00:00Z"))
        await store.migrate()
        async with store.read() as tx:
            assert await webhook_versions.read(tx, "old", None) == (0, [])
    finally:
        await store.close()
        if name is not None:
            await databases.drop_database(POSTGRES_URL, name)
