"""A revoked API key is refused by every process within a second, although each API process
remembers the keys it has seen: on PostgreSQL the revoking transaction notifies every process
(LISTEN/NOTIFY), which forgets its keys; on SQLite no process remembers any."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from consent_relay import crypto, errors
from consent_relay.api.app import create_app
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs
from consent_relay.settings import Settings
from consent_relay.storage import databases, notices
from consent_relay.storage.store import Store
from consent_relay.storage.tx import Tx
from tests.e2e.helpers import Process, eventually, free_port, process_env, wait_healthy

HOOKS = "/v1/webhooks"
POSTGRES = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


async def _refused_within(http: httpx.AsyncClient, key: str, seconds: float) -> float:
    """Ask until the key is refused (401); how long that took. Fails past ``seconds``."""
    started = time.monotonic()

    async def refused() -> bool:
        response = await http.get(HOOKS, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code in (200, 401), response.text
        return response.status_code == 401

    await eventually(refused, within=seconds, interval=0.02, what="the revoked key refused")
    return time.monotonic() - started


# -- two processes ----------------------------------------------------------------------------


async def test_a_key_revoked_in_this_process_is_refused_by_a_serve_process_within_a_second(
    settings: Settings, ctx: Context, org: tuple[str, str], tmp_path: Path
) -> None:
    port = free_port()
    server = Process(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        process_env(settings, CONSENT_RELAY_LOG_LEVEL="INFO"),
        tmp_path / "serve.log",
    ).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            await wait_healthy(http, server)
            bearer = {"Authorization": f"Bearer {org[1]}"}
            assert (await http.get(HOOKS, headers=bearer)).status_code == 200
            if not ctx.store.is_sqlite:
                # The first authentication started the process's revocation listener; once
                # it listens, the key is remembered (for 5 s) by the next request.
                await server.printed(f"listening for notices on {notices.API_KEYS}", within=10)
            assert (await http.get(HOOKS, headers=bearer)).status_code == 200

            [key] = await orgs.list_keys(ctx, org[0])
            await orgs.revoke_key(ctx, key["id"])
            await _refused_within(http, org[1], 1.0)
    finally:
        await server.terminate()


# -- two contexts in this process: what each one's key cache does -------------------------------


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[tuple[Context, httpx.AsyncClient]]:
    """A second API on the same database, with its own store (so its own key cache), as
    another process would have."""
    store = Store(settings.resolved_database_url, pool_size=2)
    ctx = Context(settings=settings, store=store, box=crypto.SecretBox([settings.secret_key]))
    transport = httpx.ASGITransport(app=create_app(settings, ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as http:
        yield ctx, http
    await store.close()


async def _cached_by(other: tuple[Context, httpx.AsyncClient], key: str) -> orgs.KeyCache:
    """Authenticate on ``other`` until its cache listens, then once more: the key is cached."""
    ctx, http = other
    bearer = {"Authorization": f"Bearer {key}"}
    assert (await http.get(HOOKS, headers=bearer)).status_code == 200
    cache = orgs.key_cache(ctx.store)

    async def listening() -> bool:
        return cache.listening

    await eventually(listening, within=10, what="the revocation listener")
    assert (await http.get(HOOKS, headers=bearer)).status_code == 200
    assert cache.get(crypto.hash_key(key)) == "acme"
    return cache


@POSTGRES
async def test_another_store_forgets_its_keys_on_the_revocation_notice(
    ctx: Context, org: tuple[str, str], other: tuple[Context, httpx.AsyncClient]
) -> None:
    cache = await _cached_by(other, org[1])
    [key] = await orgs.list_keys(ctx, org[0])
    await orgs.revoke_key(ctx, key["id"])  # through this store: the other one only hears of it

    async def forgotten() -> bool:
        return cache.get(crypto.hash_key(org[1])) is None

    await eventually(forgotten, within=1.0, interval=0.01, what="the notice")
    await _refused_within(other[1], org[1], 1.0)


@POSTGRES
async def test_a_lost_listen_connection_forgets_the_keys_and_listens_again(
    ctx: Context, org: tuple[str, str], other: tuple[Context, httpx.AsyncClient]
) -> None:
    cache = await _cached_by(other, org[1])
    generation = cache.generation
    async with ctx.store.read() as tx:
        killed = await databases.terminate_sessions(tx, f"consent-relay listen {notices.API_KEYS}")
    assert killed == 1

    async def relistened() -> bool:
        # lost() then connected(): each forgets everything (a notice may have been missed).
        return cache.listening and cache.generation >= generation + 2

    await eventually(relistened, within=10, what="the listener to notice and reconnect")
    assert cache.get(crypto.hash_key(org[1])) is None


async def test_keys_are_remembered_only_where_revocations_are_heard(
    ctx: Context, org: tuple[str, str], other: tuple[Context, httpx.AsyncClient]
) -> None:
    """SQLite has no notices: another process's revocation (``consent-relay keys revoke``)
    must count within a second, so a key is remembered there for half a second at most.
    PostgreSQL's cache listens."""
    other_ctx, http = other
    bearer = {"Authorization": f"Bearer {org[1]}"}
    assert (await http.get(HOOKS, headers=bearer)).status_code == 200
    cache = orgs.key_cache(other_ctx.store)
    if ctx.store.is_sqlite:
        assert cache.ttl <= 0.5
        assert (await http.get(HOOKS, headers=bearer)).status_code == 200
        assert cache.get(crypto.hash_key(org[1])) == org[0]
        [key] = await orgs.list_keys(ctx, org[0])
        await orgs.revoke_key(ctx, key["id"])  # by another process: nothing tells this one

        async def refused() -> bool:
            return (await http.get(HOOKS, headers=bearer)).status_code == 401

        began = time.monotonic()
        await eventually(refused, within=2, what="the revoked key to be refused")
        assert time.monotonic() - began < 1.0
    else:
        await _cached_by(other, org[1])


async def test_closing_a_store_stops_its_listener_even_while_it_is_connecting() -> None:
    """A database that accepts the connection and then says nothing (asyncpg would wait 5 s
    for it): closing the store does not wait for that."""
    accepted = asyncio.Event()
    silent: list[asyncio.StreamWriter] = []

    async def say_nothing(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)
        accepted.set()

    server = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = Store(f"postgresql://postgres@127.0.0.1:{port}/nowhere")
    try:
        assert store.watch(
            notices.API_KEYS, on_notice=lambda: None, on_connected=lambda: None,
            on_lost=lambda: None,
        )  # fmt: skip
        await asyncio.wait_for(accepted.wait(), 10)
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started < 1
    finally:
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()


@POSTGRES
async def test_a_listener_survives_an_unexpected_error(store: Store) -> None:
    """Whatever goes wrong in the listener, its caller hears of it (on_lost) and it listens
    again: a listener that died quietly would leave a cache trusting notices that never come."""
    events: list[str] = []
    stop = asyncio.Event()

    def connected() -> None:
        events.append("connected")
        if events.count("connected") == 1:
            raise RuntimeError("a bug in a callback")

    task = asyncio.create_task(
        notices.listen(
            store.url, notices.API_KEYS, stop,
            on_notice=lambda: events.append("notice"), on_connected=connected,
            on_lost=lambda: events.append("lost"),
        )
    )  # fmt: skip
    try:

        async def listening_again() -> bool:
            return events.count("connected") == 2

        await eventually(listening_again, within=10, what="the listener to reconnect")
        async with store.write() as tx:
            await notices.notify(tx, notices.API_KEYS)

        async def noticed() -> bool:
            return "notice" in events

        await eventually(noticed, within=5, what="the notice")
        assert events[:3] == ["connected", "lost", "connected"]
    finally:
        stop.set()
        await task


async def test_requests_that_miss_together_share_one_lookup(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a key's entry is missing (first use, or expired under load), the requests in
    flight share one database lookup instead of one each; a revocation heard meanwhile makes
    the next request look again."""
    created = await orgs.create_organization(ctx, OrganizationIn(id="acme", name="acme"))
    org_id, api_key = "acme", str(created["api_key"])
    cache = orgs.key_cache(ctx.store)
    cache.forget_all()
    lookups: list[str] = []
    real = Tx.organization_for_key

    async def counting(self: Tx, key_hash: str) -> str | None:
        lookups.append(key_hash)
        return await real(self, key_hash)

    monkeypatch.setattr(Tx, "organization_for_key", counting)
    found = await asyncio.gather(*(orgs.authenticate(ctx, api_key) for _ in range(50)))
    assert found == [org_id] * 50
    assert len(lookups) == 1
    assert not cache.lookups
    with pytest.raises(errors.Unauthorized):
        await asyncio.gather(*(orgs.authenticate(ctx, "cr_unknown") for _ in range(5)))
    assert len(lookups) == 2
