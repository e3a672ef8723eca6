"""Egress, end to end: the source address every outbound connection is bound to, a real HTTP
proxy (tinyproxy) carrying deliveries and token requests, the published egress addresses, and
the SSRF guard at delivery time (refused without connecting)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from consent_relay.api.app import create_app
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from tests.e2e.oauth_peers import (
    Tinyproxy,
    TokenEndpoint,
    attempts,
    delivery_statuses,
    eventually,
    free_port,
    make_webhook,
    oauth,
    post_events,
    running,
    tinyproxy,
    token_endpoint,
    wait_attempts,
    with_settings,
)
from tests.receiver import Receiver

ONLY_EVENTS = {"event_types": ["event.created"]}


@pytest.fixture
async def tokens() -> AsyncIterator[TokenEndpoint]:
    async with token_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Tinyproxy]:
    async with tinyproxy(tmp_path / "tinyproxy") as started:
        yield started


async def _delivered(ctx: Context, count: int) -> bool:
    statuses = await delivery_statuses(ctx)
    return len(statuses) == count and set(statuses) == {"delivered"}


# -- source address ---------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "peer"), [("", "127.0.0.1"), ("127.0.0.2", "127.0.0.2")])
async def test_source_address_binds_deliveries_and_token_requests(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    tokens: TokenEndpoint,
    source: str,
    peer: str,
) -> None:
    await make_webhook(api, receiver.url("/plain"), **ONLY_EVENTS)
    await make_webhook(api, receiver.url("/oauth"), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com", "joe@example.com")
    async with running(with_settings(ctx, egress_source_address=source)):
        await receiver.wait_for(4)
        await eventually(lambda: _delivered(ctx, 4), what="4 delivered")
    assert {item.peer for item in receiver.received} == {peer}
    assert len(receiver.at("/plain")) == 2
    assert len(receiver.at("/oauth")) == 2
    assert [request.peer for request in tokens.requests] == [peer]


# -- proxy ------------------------------------------------------------------------------------


async def test_proxy_carries_deliveries_and_token_requests(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    tokens: TokenEndpoint,
    proxy: Tinyproxy,
) -> None:
    await make_webhook(api, receiver.url("/plain"), **ONLY_EVENTS)
    await make_webhook(api, receiver.url("/oauth"), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com", "joe@example.com")
    async with running(with_settings(ctx, egress_proxy=proxy.url)):
        await receiver.wait_for(4)
        await eventually(lambda: _delivered(ctx, 4), what="4 delivered")
    # Every request came through tinyproxy: it adds its Via header and logs the request.
    for item in receiver.received:
        assert "tinyproxy" in item.headers.get("Via", ""), item.headers
    (token_request,) = tokens.requests
    assert "tinyproxy" in token_request.headers.get("Via", "")
    forwarded = proxy.requests()
    assert forwarded.count(f"POST {receiver.url('/plain')}") == 2
    assert forwarded.count(f"POST {receiver.url('/oauth')}") == 2
    assert forwarded.count(f"POST {tokens.url}") == 1
    # The OAuth deliveries still carried their token through the proxy.
    assert {item.headers["Authorization"] for item in receiver.at("/oauth")} == {"Bearer tok-1"}


@pytest.mark.parametrize("with_oauth", [False, True])
async def test_a_dead_proxy_is_not_bypassed(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    tokens: TokenEndpoint,
    with_oauth: bool,
) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    auth = {"authentication": oauth(tokens.url)} if with_oauth else {}
    await make_webhook(api, receiver.url(), **auth, **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(with_settings(ctx, egress_proxy=dead_proxy)):
        rows = await wait_attempts(ctx, 1)
    assert rows[0].outcome == ("E_AUTH" if with_oauth else "E_CONNECTION")
    assert receiver.received == []
    assert tokens.requests == []


# -- published egress addresses ---------------------------------------------------------------


async def _egress(settings: Settings, ctx: Context) -> httpx.Response:
    app = create_app(settings, with_settings(ctx, egress_ips=settings.egress_ips))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as http:
        return await http.get("/v1/egress")


async def test_egress_lists_the_published_addresses(
    settings: Settings, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_RELAY_EGRESS_IPS", "203.0.113.7, 2001:db8::7 ,198.51.100.1")
    from_env = Settings(data_dir=settings.data_dir, database_url=settings.database_url)
    assert from_env.egress_ips == ["203.0.113.7", "2001:db8::7", "198.51.100.1"]
    response = await _egress(from_env, ctx)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"ip_addresses": ["203.0.113.7", "2001:db8::7", "198.51.100.1"]}


async def test_egress_is_an_empty_list_by_default(settings: Settings, ctx: Context) -> None:
    response = await _egress(settings, ctx)
    assert response.status_code == 200
    assert response.json() == {"ip_addresses": []}


# -- SSRF at delivery time --------------------------------------------------------------------


@pytest.mark.parametrize("allowed", [[], ["10.0.0.0/8"], ["127.0.0.2/32", "::1/128"]])
async def test_receiver_no_longer_allowed_is_refused_without_connecting(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, allowed: list[str]
) -> None:
    # Created while 127.0.0.0/8 was allowed; the worker runs with settings that refuse it.
    await make_webhook(api, receiver.url(), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(with_settings(ctx, allowed_networks=allowed)):
        rows = await wait_attempts(ctx, 2)  # the first attempt, and its retry
    assert {row.outcome for row in rows} == {"E_FORBIDDEN_TARGET"}
    assert rows[0].status_code is None
    assert rows[0].error is not None
    assert "127.0.0.1" in rows[0].error
    assert "loopback" in rows[0].error
    assert receiver.received == []


async def test_a_name_resolving_to_a_refused_address_is_refused_on_connect(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    # "localhost" passes the name check when ::1 is allowed; the address it resolves to and
    # that would be connected to, 127.0.0.1, is not allowed: the resolver refuses it.
    await make_webhook(api, f"http://localhost:{receiver.port}/hook", **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(with_settings(ctx, allowed_networks=["::1/128"])):
        rows = await wait_attempts(ctx, 1)
    assert rows[0].outcome == "E_FORBIDDEN_TARGET"
    assert rows[0].error is not None
    assert "127.0.0.1" in rows[0].error
    assert receiver.received == []


async def test_token_url_no_longer_allowed_is_refused_without_connecting(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    async with token_endpoint(host="127.0.0.3") as forbidden_tokens:
        await make_webhook(
            api,
            receiver.url(),
            authentication=oauth(forbidden_tokens.url),
            **ONLY_EVENTS,
        )
        await post_events(api, "jane@example.com")
        # The receiver (127.0.0.1) stays allowed; the token endpoint (127.0.0.3) does not.
        async with running(with_settings(ctx, allowed_networks=["127.0.0.1/32"])):
            rows = await wait_attempts(ctx, 1)
        assert forbidden_tokens.requests == []
    assert rows[0].outcome == "E_FORBIDDEN_TARGET"
    assert rows[0].error is not None
    assert "token URL" in rows[0].error
    assert "127.0.0.3" in rows[0].error
    assert receiver.received == []


async def test_the_guard_holds_behind_a_proxy(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, proxy: Tinyproxy
) -> None:
    await make_webhook(api, receiver.url(), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    # The proxy (127.0.0.1) is the operator's; the receiver behind it is refused.
    worker_ctx = with_settings(ctx, allowed_networks=["10.0.0.0/8"], egress_proxy=proxy.url)
    async with running(worker_ctx):
        rows = await wait_attempts(ctx, 1)
    assert rows[0].outcome == "E_FORBIDDEN_TARGET"
    assert receiver.received == []
    assert proxy.requests() == []


async def test_allowed_again_delivers(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    await make_webhook(api, receiver.url(), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(with_settings(ctx, allowed_networks=[])):
        await wait_attempts(ctx, 1)
    async with running(ctx):
        await receiver.wait_for(1)
        await eventually(lambda: _delivered(ctx, 1), what="the delivery")
    outcomes = [row.outcome for row in await attempts(ctx)]
    assert outcomes[-1] == "ok"
    assert set(outcomes[:-1]) == {"E_FORBIDDEN_TARGET"}


async def test_require_https_at_delivery_time_refuses_an_http_receiver(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    # Created while http was accepted; the worker now runs with REQUIRE_HTTPS.
    await make_webhook(api, receiver.url(), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(with_settings(ctx, require_https=True)):
        rows = await wait_attempts(ctx, 1)
    assert rows[0].outcome == "E_FORBIDDEN_TARGET"
    assert rows[0].error is not None
    assert "https" in rows[0].error
    assert receiver.received == []


@pytest.mark.parametrize("receiver_scheme", ["http", "https"])
async def test_require_https_at_delivery_time_sends_no_secret_over_http(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    tokens: TokenEndpoint,
    receiver_scheme: str,
) -> None:
    # With REQUIRE_HTTPS on, neither the delivery nor the client secret may go over plain
    # http: an http token URL (accepted when the webhook was created) is refused like an
    # http receiver, before anything is sent to it. (The https receiver is a closed port:
    # it is never reached either way.)
    url = receiver.url() if receiver_scheme == "http" else f"https://127.0.0.1:{free_port()}/h"
    await make_webhook(api, url, authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(with_settings(ctx, require_https=True)):
        rows = await wait_attempts(ctx, 1)
    assert tokens.requests == [], "the client secret was sent to an http token endpoint"
    assert rows[0].outcome == "E_FORBIDDEN_TARGET"
    assert receiver.received == []
