"""OAuth 2.0 client credentials toward the receiver, end to end: a real authorization server
(oauth2-mock-server) whose JWT the receiver checks against the server's JWKS, and a counting
token endpoint for the one-token-per-webhook and refresh-on-401 rules."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import jwt
import pytest
from aiohttp import web

from consent_relay.runtime import Context
from tests.e2e.oauth_peers import (
    OAuthServer,
    TokenEndpoint,
    TokenRequest,
    accept_tokens,
    attempts,
    bearer,
    delivery_statuses,
    eventually,
    free_port,
    issue,
    make_webhook,
    oauth,
    oauth_server,
    post_events,
    running,
    token_endpoint,
    wait_attempts,
)
from tests.receiver import Receiver

ONLY_EVENTS = {"event_types": ["event.created"]}  # one delivery per consent event


@pytest.fixture
async def authz(tmp_path: Path) -> AsyncIterator[OAuthServer]:
    async with oauth_server(tmp_path) as server:
        yield server


@pytest.fixture
async def tokens() -> AsyncIterator[TokenEndpoint]:
    async with token_endpoint() as endpoint:
        yield endpoint


async def verified_claims(server: OAuthServer, token: str) -> dict[str, Any]:
    """The JWT's claims, its signature checked against the server's published JWKS."""
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(server.jwks_url)
    assert response.status_code == 200
    keys = {key["kid"]: key for key in response.json()["keys"]}
    header = jwt.get_unverified_header(token)
    assert header["kid"] in keys
    key = jwt.PyJWK.from_dict(keys[header["kid"]])
    claims: dict[str, Any] = jwt.decode(
        token,
        key=key,
        algorithms=["RS256"],
        issuer=server.issuer,
        options={"verify_aud": False, "require": ["iss", "exp", "iat"]},
    )
    # The check is real: the same signature over other claims does not pass.
    head, _, signature = token.split(".")
    forged = base64.urlsafe_b64encode(b'{"iss":"%s","scope":"admin"}' % server.issuer.encode())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{head}.{forged.decode().rstrip('=')}.{signature}",
            key=key,
            algorithms=["RS256"],
            options={"verify_aud": False},
        )
    return claims


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_receiver_gets_a_jwt_of_the_real_server_it_can_verify(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    authz: OAuthServer,
    method: str,
) -> None:
    scope = "consents:write consents:read"
    hook = await make_webhook(
        api,
        receiver.url(),
        authentication=oauth(authz.token_url, scope=scope, client_auth_method=method),
        **ONLY_EVENTS,
    )
    await post_events(api, "jane@example.com", "joe@example.com")
    async with running(ctx) as worker:
        await receiver.wait_for(2)
        await eventually(
            lambda: _all_delivered(ctx, 2), what="both deliveries recorded as delivered"
        )
    assert worker.token_fetches == 1
    sent = {bearer(item) for item in receiver.received}
    assert len(sent) == 1
    (token,) = sent
    assert token is not None
    claims = await verified_claims(authz, token)
    assert claims["scope"] == scope  # verbatim
    assert claims["iss"] == authz.issuer
    assert claims["exp"] > claims["iat"]
    # The token is sent, never stored: the recorded request headers are redacted.
    for row in await attempts(ctx):
        assert row.outcome == "ok"
        assert row.request_headers is not None
        assert row.request_headers["Authorization"] == "[redacted]"
    shown = (await api.get(f"/v1/webhooks/{hook['id']}")).json()
    assert "client_secret" not in shown["authentication"]
    assert shown["authentication"]["client_secret_set"] is True
    assert shown["authentication"]["scope"] == scope


async def _all_delivered(ctx: Context, count: int) -> bool:
    statuses = await delivery_statuses(ctx)
    return len(statuses) == count and set(statuses) == {"delivered"}


async def test_token_request_on_the_wire_client_secret_post(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    scope = "consents:write  https://api.example.com/consents.write"
    await make_webhook(
        api,
        receiver.url(),
        authentication=oauth(
            tokens.url,
            client_id="relay-client",
            client_secret="s3cret+/=&%",
            scope=scope,
            audience="https://receiver.example.com/",
            token_request_headers={"X-Tenant": "acme", "X-Api-Version": "2"},
        ),
        **ONLY_EVENTS,
    )
    await post_events(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1)
        await eventually(lambda: _all_delivered(ctx, 1), what="the delivery")
    (seen,) = tokens.requests
    assert seen.form == {
        "grant_type": "client_credentials",
        "client_id": "relay-client",
        "client_secret": "s3cret+/=&%",
        "scope": scope,
        "audience": "https://receiver.example.com/",
    }
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["X-Tenant"] == "acme"
    assert seen.headers["X-Api-Version"] == "2"
    assert "Authorization" not in seen.headers
    assert receiver.received[0].headers["Authorization"] == "Bearer tok-1"


async def test_token_request_on_the_wire_client_secret_basic(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    await make_webhook(
        api,
        receiver.url(),
        authentication=oauth(
            tokens.url,
            client_id="relay:client",
            client_secret="p@ss w+rd:€",
            client_auth_method="client_secret_basic",
        ),
        **ONLY_EVENTS,
    )
    await post_events(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1)
        await eventually(lambda: _all_delivered(ctx, 1), what="the delivery")
    (seen,) = tokens.requests
    assert seen.form == {"grant_type": "client_credentials"}  # no scope given: none sent
    assert _basic(seen) == ("relay:client", "p@ss w+rd:€")


def _basic(seen: TokenRequest) -> tuple[str, str]:
    """What a token server makes of the Basic header (RFC 6749 §2.3.1)."""
    scheme, _, encoded = seen.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    client_id, _, secret = base64.b64decode(encoded).decode("ascii").partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


async def test_hundred_deliveries_cost_one_token_request(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    receiver.behaviours["/hook"] = accept_tokens("tok-1")
    await make_webhook(api, receiver.url(), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, *(f"user{n}@example.com" for n in range(100)))
    async with running(ctx) as worker:
        await receiver.wait_for(100)
        await eventually(lambda: _all_delivered(ctx, 100), what="100 delivered")
    assert len(tokens.requests) == 1
    assert worker.token_fetches == 1
    assert len(receiver.received) == 100
    assert {bearer(item) for item in receiver.received} == {"tok-1"}
    assert {row.attempt_number for row in await attempts(ctx)} == {1}


async def test_a_burst_of_401s_costs_exactly_one_more_token(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    # The receiver has revoked tok-1: every delivery holding it is refused once, drops it,
    # and is sent again at once, within the same attempt, with tok-2.
    receiver.behaviours["/hook"] = accept_tokens("tok-2")
    await make_webhook(api, receiver.url(), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, *(f"user{n}@example.com" for n in range(30)))
    async with running(ctx) as worker:
        await eventually(lambda: _all_delivered(ctx, 30), what="30 delivered")
        assert len(tokens.requests) == 2
        assert worker.token_fetches == 2
        # Later deliveries keep the fresh token.
        await post_events(api, "late@example.com")
        await eventually(lambda: _all_delivered(ctx, 31), what="the late one delivered")
    assert len(tokens.requests) == 2
    rows = await attempts(ctx)
    assert len(rows) == 31
    assert {(row.attempt_number, row.outcome, row.status_code) for row in rows} == {(1, "ok", 204)}
    by_token = [bearer(item) for item in receiver.received]
    assert by_token.count("tok-2") == 31
    assert set(by_token) <= {"tok-1", "tok-2"}


async def test_a_receiver_refusing_the_fresh_token_too_fails_after_one_retry(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    receiver.behaviours["/hook"] = accept_tokens()  # refuses every token
    hook = await make_webhook(api, receiver.url(), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(ctx):
        await eventually(
            lambda: _has_status(ctx, "dead"), what="the delivery to die after 6 attempts"
        )
    rows = await attempts(ctx)
    assert [(r.attempt_number, r.outcome, r.status_code) for r in rows] == [
        (n, "E_HTTP", 401) for n in range(1, 7)
    ]
    assert rows[0].response_body == "invalid token"
    # Each attempt: the cached token, refused; one fresh token, refused; no third request.
    assert len(receiver.received) == 12
    tokens_sent = [bearer(item) for item in receiver.received]
    assert tokens_sent[:4] == ["tok-1", "tok-2", "tok-2", "tok-3"]
    assert len(tokens.requests) == 7
    detail = await _only_delivery(api, hook["id"])
    assert detail["attempts"][0]["request_headers"]["Authorization"] == "[redacted]"


async def _has_status(ctx: Context, status: str) -> bool:
    return status in await delivery_statuses(ctx)


async def _only_delivery(api: httpx.AsyncClient, webhook_id: str) -> dict[str, Any]:
    listed = (await api.get(f"/v1/webhooks/{webhook_id}/deliveries")).json()["data"]
    assert len(listed) == 1
    detail: dict[str, Any] = (await api.get(f"/v1/deliveries/{listed[0]['id']}")).json()
    return detail


@pytest.mark.parametrize(
    ("status", "body", "content_type", "message"),
    [
        (503, "token service down", "text/plain", "HTTP 503"),
        (401, '{"error":"invalid_client"}', "application/json", "HTTP 401"),
        (200, "<html>login page</html>", "text/html", "not JSON"),
        (200, '{"token_type":"Bearer","expires_in":60}', "application/json", "no access_token"),
        (200, '{"access_token":"t","token_type":"mac"}', "application/json", "token_type"),
    ],
)
async def test_failing_token_endpoint_fails_the_attempt_with_its_answer(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    tokens: TokenEndpoint,
    status: int,
    body: str,
    content_type: str,
    message: str,
) -> None:
    good = issue()

    def first_fails(request: TokenRequest, n: int) -> web.Response:
        if n == 0:
            return web.Response(status=status, text=body, content_type=content_type)
        return good(request, n)

    tokens.answer = first_fails
    hook = await make_webhook(api, receiver.url(), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1)  # the retry, once the token endpoint works again
        await eventually(lambda: _has_status(ctx, "delivered"), what="the retry to succeed")
    detail = await _only_delivery(api, hook["id"])
    first, second = detail["attempts"]
    assert first["outcome"] == "E_AUTH"
    assert first["status_code"] == status  # the token server's answer, kept
    assert first["response_body"] == body
    assert message in first["error"]
    assert second["outcome"] == "ok"
    assert len(receiver.received) == 1  # the failed attempt never reached the receiver
    assert receiver.received[0].headers["Authorization"] == "Bearer tok-2"


async def test_unreachable_token_endpoint_is_e_auth(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/token"
    await make_webhook(api, receiver.url(), authentication=oauth(closed), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(ctx):
        rows = await wait_attempts(ctx, 1)
    assert rows[0].outcome == "E_AUTH"
    assert rows[0].status_code is None
    assert rows[0].error is not None
    assert "token endpoint" in rows[0].error
    assert receiver.received == []


async def test_a_token_lasting_zero_seconds_is_fetched_for_every_delivery(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    tokens.answer = issue(expires_in=0)
    await make_webhook(api, receiver.url(), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com", "jane@example.com", "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(3)
        await eventually(lambda: _all_delivered(ctx, 3), what="3 delivered")
    # One user: one queue, delivered one after another, each with a token of its own.
    assert [bearer(item) for item in receiver.received] == ["tok-1", "tok-2", "tok-3"]
    assert len(tokens.requests) == 3


async def test_a_token_endpoint_that_never_answers_fails_the_attempt_within_its_deadline(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    # The attempt's single deadline (request_timeout, 2 s here) covers the token request too:
    # a token server that accepts the connection and never answers must not hold the
    # delivery (and, through the token lock, every delivery of the webhook) for ever.
    tokens.hold = asyncio.Event()
    await make_webhook(api, receiver.url(), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    deadline = ctx.settings.request_timeout
    async with running(ctx):
        started = time.monotonic()
        rows = await wait_attempts(ctx, 1, within=deadline + 3)
        took = time.monotonic() - started
    assert rows[0].outcome in ("E_AUTH", "E_TIMEOUT")
    assert took < deadline + 3
    assert len(tokens.requests) >= 1
    assert receiver.received == []


async def test_a_graceful_stop_right_after_the_receiver_answered_records_the_attempt(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, tokens: TokenEndpoint
) -> None:
    # The worker is told to stop the moment the receiver has the request: the attempt is
    # in flight, so it finishes and is recorded; it is not handed back as unsent (which
    # would send it again later, with a second token).
    await make_webhook(api, receiver.url(), authentication=oauth(tokens.url), **ONLY_EVENTS)
    await post_events(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1)
    rows = await attempts(ctx)
    assert [(row.attempt_number, row.outcome) for row in rows] == [(1, "ok")]
    assert await delivery_statuses(ctx) == ["delivered"]
