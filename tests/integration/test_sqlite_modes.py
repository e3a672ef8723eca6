"""The SQLite database is private to its owner: the file and its -wal and -shm 0600, the
folder 0700, whatever the umask, and whichever of the database or the secret files comes first."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from consent_relay import crypto
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs
from consent_relay.settings import Settings
from consent_relay.storage.store import Store


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """Umask 0: only the modes we ask for protect the files (022 would hide a missing one)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _write_something(store: Store) -> None:
    await store.migrate()
    ctx = Context(settings=Settings(), store=store, box=crypto.SecretBox([crypto.new_key()]))
    await orgs.create_organization(ctx, OrganizationIn(id="acme"))


async def test_a_new_database_file_and_folder_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "db"
    path = folder / "relay.db"
    store = Store(f"sqlite:///{path}")
    try:
        await _write_something(store)
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        # (-wal and -shm exist while a connection is open: stat would fail otherwise)
        assert {p.name: _mode(p) for p in (path, wal, shm)} == {
            "relay.db": 0o600,
            "relay.db-wal": 0o600,
            "relay.db-shm": 0o600,
        }
        assert _mode(folder) == 0o700
    finally:
        await store.close()


async def test_the_data_dir_is_private_when_the_secret_files_come_first(tmp_path: Path) -> None:
    # `serve` reads (and creates) the admin token before it opens the database.
    settings = Settings(data_dir=tmp_path / "data", admin_token="", secret_key="")
    crypto.admin_token(settings)
    crypto.secret_box(settings)
    store = Store(settings.resolved_database_url)
    try:
        await _write_something(store)
    finally:
        await store.close()
    data_dir = settings.data_dir
    assert _mode(data_dir) == 0o700
    modes = {p.name: _mode(p) for p in data_dir.iterdir()}
    assert modes["consent-relay.db"] == 0o600
    assert modes["secret.key"] == 0o600
    assert modes["admin.token"] == 0o600


async def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = Store(f"sqlite:///{path}")
    await _write_something(store)
    await store.close()
    path.chmod(0o640)  # the operator's choice (a backup group, say)
    store = Store(f"sqlite:///{path}")
    try:
        async with store.read() as tx:
            assert [org.id for org in await tx.list_organizations()] == ["acme"]
    finally:
        await store.close()
    assert _mode(path) == 0o640
