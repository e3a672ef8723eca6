"""The raw driver under an open transaction (storage/driver.py): statements sent to asyncpg
directly belong to the same transaction as SQLAlchemy's. This reaches into SQLAlchemy's
asyncpg adapter; these tests fail if a release changes what it relies on.

The raw statements are the probes of ``storage/inspect_driver.py``: a bare organization
written and counted through the transaction's own asyncpg or sqlite3 connection."""

from __future__ import annotations

import pytest

from consent_relay import errors
from consent_relay.runtime import Context
from consent_relay.storage import driver, inspect_driver


class Boom(Exception):
    pass


async def _count(ctx: Context, name: str) -> int:
    async with ctx.store.read() as tx:
        return await inspect_driver.count_organizations(tx, name)


async def _insert(ctx: Context, name: str, *, sqlalchemy_first: bool, fail: bool) -> None:
    async with ctx.store.write() as tx:
        if sqlalchemy_first:
            assert await tx.get_organization("nobody") is None  # SQLAlchemy began it
        await inspect_driver.insert_organization(tx, name)
        if fail:
            raise Boom


async def test_only_postgresql_has_a_raw_path(ctx: Context) -> None:
    async with ctx.store.write() as tx:
        assert (await driver.postgres(tx) is None) == ctx.store.is_sqlite


@pytest.mark.parametrize("sqlalchemy_first", [False, True])
async def test_a_raw_write_rolls_back_with_the_transaction(
    ctx: Context, sqlalchemy_first: bool
) -> None:
    """A raw first statement too (SQLAlchemy begins lazily): it must still roll back."""
    if ctx.store.is_sqlite:
        return
    with pytest.raises(Boom):
        await _insert(ctx, "raw1", sqlalchemy_first=sqlalchemy_first, fail=True)
    assert await _count(ctx, "raw1") == 0


async def test_raw_and_sqlalchemy_statements_see_each_other_and_commit_together(
    ctx: Context,
) -> None:
    if ctx.store.is_sqlite:
        return
    async with ctx.store.write() as tx:
        conn = await driver.postgres(tx)
        assert conn is not None
        await inspect_driver.insert_organization(tx, "raw2")
        assert await tx.get_organization("raw2") is not None  # SQLAlchemy sees the raw write
        assert await driver.postgres(tx) is conn  # one connection for the transaction
    assert await _count(ctx, "raw2") == 1


async def test_a_raw_unique_violation_is_a_conflict(ctx: Context) -> None:
    if ctx.store.is_sqlite:
        return
    await _insert(ctx, "raw4", sqlalchemy_first=False, fail=False)
    with pytest.raises(errors.Conflict):
        await _insert(ctx, "raw4", sqlalchemy_first=False, fail=False)


async def _sqlite_insert_then(ctx: Context, name: str, *, fail: bool) -> None:
    async with ctx.store.write() as tx:
        await inspect_driver.insert_organization(tx, name)  # driver.on_sqlite
        assert await tx.get_organization(name) is not None  # SQLAlchemy sees the raw write
        if fail:
            raise Boom


async def test_sqlite_work_in_one_hop_belongs_to_the_transaction(ctx: Context) -> None:
    """driver.on_sqlite runs plain sqlite3 calls on aiosqlite's thread, inside the
    transaction SQLAlchemy began (BEGIN IMMEDIATE): rolled back or committed with it."""
    if not ctx.store.is_sqlite:
        return
    with pytest.raises(Boom):
        await _sqlite_insert_then(ctx, "hop1", fail=True)
    await _sqlite_insert_then(ctx, "hop2", fail=False)
    async with ctx.store.read() as tx:
        assert await tx.get_organization("hop1") is None
        assert await tx.get_organization("hop2") is not None


async def test_the_adapters_own_error_for_a_closed_connection_is_storage_unavailable() -> None:
    """Beginning a transaction through the raw path on a connection the server has just
    closed raises SQLAlchemy's asyncpg adapter error unwrapped: a 503, not a 500."""
    from consent_relay.storage import engine

    closed = inspect_driver.closed_connection_error()
    with pytest.raises(errors.StorageUnavailable):
        async with engine.translate_errors():
            raise closed
