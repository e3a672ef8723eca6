"""Shared fixtures: a migrated database of each kind, a context, an API client.

``db_url`` is parametrized over SQLite and PostgreSQL, so every test that uses it runs on
both. PostgreSQL comes from ``CONSENT_RELAY_TEST_POSTGRES_URL`` (default: the local server,
database ``consent_relay_test``); when it is unreachable the tests fail, they do not skip.
With ``CONSENT_RELAY_REQUIRE_POSTGRES=1`` (set by ``make test``) the run also fails if no
PostgreSQL test ran at all.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs
from consent_relay.settings import Settings
from consent_relay.storage import databases
from consent_relay.storage.store import Store
from tests.receiver import Receiver

POSTGRES_URL = os.environ.get(
    "CONSENT_RELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/consent_relay_test"
)
_postgres_passed = 0
_postgres_migrated = False


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_passed
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _postgres_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CONSENT_RELAY_REQUIRE_POSTGRES") == "1" and session.testscollected:
        if _postgres_passed == 0 and exitstatus == 0:
            print("\nERROR: no PostgreSQL test passed, but CONSENT_RELAY_REQUIRE_POSTGRES=1")
            session.exitstatus = 1
        else:
            print(f"\nPostgreSQL tests passed: {_postgres_passed}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection loaded (modules, apps' compiled schemas, the tests themselves) is kept
    out of the collector's reach, as a service process does once started (``gctune.settle``).
    Without it each full collection of this one process walked every one of those objects:
    pauses of 0.35-0.7 s (``gc.callbacks``, a full ``make test``), long enough to run out a
    test's 0.5 s connect timeout against a receiver that answers at once (seen in CI:
    test_hostile_payloads' attempts ending E_TIMEOUT, their requests never sent)."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgres":
            item.add_marker(pytest.mark.postgres)


def _session_database_url() -> str:
    """A database of this test session's own (so parallel sessions never collide), created
    on first use on the server of ``CONSENT_RELAY_TEST_POSTGRES_URL`` and dropped at exit."""
    return databases.with_database(POSTGRES_URL, f"consent_relay_t{os.getpid()}")


def _drop_session_database() -> None:
    name = str(databases.database_name(_session_database_url()))
    asyncio.run(databases.drop_database(POSTGRES_URL, name))


async def _reset_postgres(store: Store) -> None:
    global _postgres_migrated
    if not _postgres_migrated:
        await databases.create_database(POSTGRES_URL, str(databases.database_name(store.url)))
        atexit.register(_drop_session_database)
        await store.migrate()
        _postgres_migrated = True
    async with store.write() as tx:
        await databases.empty_tables(tx)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return _session_database_url()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        admin_token="test-admin-token",
        secret_key=crypto.new_key(),
        allowed_networks=["127.0.0.0/8", "::1/128"],
        retry_schedule=[0.05, 0.1, 0.1, 0.1, 0.1],
        request_timeout=2.0,
        connect_timeout=1.0,
    )


async def prepare_store(store: Store) -> None:
    """A migrated, empty database: SQLite files are new; PostgreSQL is truncated."""
    if store.is_sqlite:
        await store.migrate()
    else:
        await _reset_postgres(store)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    store = Store(settings.resolved_database_url, pool_size=5)
    await prepare_store(store)
    yield store
    await store.close()


@pytest.fixture
def ctx(settings: Settings, store: Store) -> Context:
    return Context(settings=settings, store=store, box=crypto.SecretBox([settings.secret_key]))


@pytest.fixture
async def org(ctx: Context) -> tuple[str, str]:
    """An organization ``acme`` and its API key."""
    created = await orgs.create_organization(ctx, OrganizationIn(id="acme", name="Acme"))
    return "acme", created["api_key"]


@pytest.fixture
async def client(settings: Settings, ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app (in process, no network), without credentials."""
    app = create_app(settings, ctx)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as http:
        yield http


@pytest.fixture
async def api(client: httpx.AsyncClient, org: tuple[str, str]) -> httpx.AsyncClient:
    """The client, signed in as organization ``acme``."""
    client.headers["Authorization"] = f"Bearer {org[1]}"
    return client


def body(response: httpx.Response) -> Any:
    return response.json()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1."""
    started = await Receiver().start()
    yield started
    await started.stop()
