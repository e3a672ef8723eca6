"""Signing out of the dashboard ends the session on the server: a copy of the session cookie
taken before the sign-out is refused after it, by this process and by another one on the same
database; and a session expires on the server too, whatever the browser keeps."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from itsdangerous import TimestampSigner

from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.dashboard.session import SESSION_COOKIE, SESSION_MAX_AGE, Sessions
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect, logouts
from consent_relay.storage.store import Store
from tests.integration.test_dashboard import D, sign_in


def _browser(settings: Settings, ctx: Context, cookie: str) -> httpx.AsyncClient:
    """Another browser on this process's dashboard, holding a copy of ``cookie``."""
    transport = httpx.ASGITransport(app=create_app(settings, ctx))
    copy = httpx.AsyncClient(transport=transport, base_url="http://relay.test")
    copy.cookies.set(SESSION_COOKIE, cookie, domain="relay.test", path=D)
    return copy


def _signed_in(response: httpx.Response) -> bool:
    if response.status_code == 200:
        return True
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{D}/login"
    return False


@pytest.fixture
async def other_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard of a second application on the same database (its own store), as
    another process would serve it."""
    store = Store(settings.resolved_database_url, pool_size=2)
    ctx = Context(settings=settings, store=store, box=crypto.SecretBox([settings.secret_key]))
    transport = httpx.ASGITransport(app=create_app(settings, ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as http:
        yield http
    await store.close()


async def test_a_cookie_copied_before_sign_out_is_refused_after_it(
    client: httpx.AsyncClient,
    org: tuple[str, str],
    settings: Settings,
    ctx: Context,
    other_process: httpx.AsyncClient,
) -> None:
    csrf = await sign_in(client, org[1])
    cookie = client.cookies[SESSION_COOKIE]
    async with _browser(settings, ctx, cookie) as copy:
        other_process.cookies.set(SESSION_COOKIE, cookie, domain="relay.test", path=D)
        assert _signed_in(await copy.get(D))
        assert _signed_in(await other_process.get(D))

        response = await client.post(f"{D}/logout", data={"csrf_token": csrf})
        assert response.status_code == 303

        assert not _signed_in(await client.get(D))  # the browser dropped its cookie...
        assert not _signed_in(await copy.get(D))  # ...and its copy no longer works,
        assert not _signed_in(await other_process.get(D))  # in another process neither
        # Nor for a form: a POST with the old cookie and its CSRF token is refused.
        refused = await copy.post(f"{D}/logout", data={"csrf_token": csrf})
        assert refused.status_code == 303
        assert refused.headers["location"] == f"{D}/login"


async def test_signing_in_again_makes_a_new_session(
    client: httpx.AsyncClient, org: tuple[str, str], settings: Settings, ctx: Context
) -> None:
    csrf = await sign_in(client, org[1])
    first = client.cookies[SESSION_COOKIE]
    await client.post(f"{D}/logout", data={"csrf_token": csrf})
    await sign_in(client, org[1])
    second = client.cookies[SESSION_COOKIE]
    assert second != first
    assert _signed_in(await client.get(D))
    async with _browser(settings, ctx, first) as old:
        assert not _signed_in(await old.get(D))


async def test_a_session_expires_on_the_server(
    org: tuple[str, str], settings: Settings, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The browser may keep a cookie past its Max-Age (or a copy of it may be replayed): the
    server reads the signed timestamp and refuses it after SESSION_MAX_AGE."""
    key_hash = crypto.hash_key(org[1])
    fresh = Sessions(settings).issue(org[0], key_hash)[1]
    issued_at = int(time.time()) - SESSION_MAX_AGE - 1
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: issued_at)
    stale = Sessions(settings).issue(org[0], key_hash)[1]
    monkeypatch.undo()
    async with _browser(settings, ctx, fresh) as browser:
        assert _signed_in(await browser.get(D))
    async with _browser(settings, ctx, stale) as browser:
        assert not _signed_in(await browser.get(D))


async def test_sign_outs_are_kept_only_as_long_as_a_cookie_could_be_used(
    settings: Settings, store: Store
) -> None:
    now_ms = int(time.time() * 1000)
    async with store.write() as tx:
        await logouts.end_session(tx, "old", expires_ms=now_ms - 1, now_ms=now_ms - 10)
        await logouts.end_session(tx, "live", expires_ms=now_ms + 60_000, now_ms=now_ms - 10)
        await logouts.end_session(tx, "live", expires_ms=now_ms + 60_000, now_ms=now_ms - 10)
    async with store.write() as tx:
        await logouts.end_session(tx, "new", expires_ms=now_ms + 60_000, now_ms=now_ms)
    async with store.read() as tx:
        assert await logouts.session_ended(tx, "live")
        assert await logouts.session_ended(tx, "new")
        assert not await logouts.session_ended(tx, "old")  # purged by the later sign-out
        assert not await logouts.session_ended(tx, "never-ended")
        count = await inspect.count(tx, "dashboard_logouts")
    assert count == 2
