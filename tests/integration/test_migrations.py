"""The migrations build exactly the schema that ``storage/tables.py`` describes."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from consent_relay.storage.store import Store
from consent_relay.storage.tables import metadata


async def test_migrated_schema_matches_the_tables(store: Store) -> None:
    def differences(sync_connection: Any) -> list[Any]:
        context = MigrationContext.configure(sync_connection)
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        diff = await conn.run_sync(differences)
    assert diff == []


async def test_attempts_have_no_second_index_on_delivery_id(store: Store) -> None:
    """uq_attempts_number (delivery_id, attempt_number) serves lookups by delivery; a second
    index on delivery_id alone only slowed every attempt written (migration 0002)."""

    def index_names(sync_connection: Any) -> set[str]:
        from sqlalchemy import inspect

        return {index["name"] or "" for index in inspect(sync_connection).get_indexes("attempts")}

    async with store.engine.connect() as conn:
        names = await conn.run_sync(index_names)
    assert "ix_attempts_delivery_id" not in names
