"""OAuth 2.0 client credentials (RFC 6749 §4.4): the pure request/response parts, and one
TokenSource against a real local token endpoint (concurrency, caching, invalidation)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import orjson
import pytest
from aiohttp import web

from consent_relay import errors
from consent_relay.delivery import oauth
from consent_relay.delivery.oauth import Credentials, TokenError, TokenSource

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


def creds(**overrides: Any) -> Credentials:
    fields: dict[str, Any] = {
        "token_url": "http://127.0.0.1:9/token",
        "client_id": "relay",
        "client_secret": "s3cret",
        **overrides,
    }
    return Credentials(**fields)


def basic_pair(headers: dict[str, str]) -> tuple[str, str]:
    """What a token server makes of the Basic header (RFC 6749 §2.3.1): base64-decode,
    split on the first colon, form-urldecode each part."""
    scheme, _, encoded = headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    raw = base64.b64decode(encoded, validate=True).decode("ascii")
    client_id, sep, secret = raw.partition(":")
    assert sep == ":"
    return unquote_plus(client_id), unquote_plus(secret)


# -- token_request --------------------------------------------------------------------------


def test_post_puts_the_client_in_the_form() -> None:
    form, headers = oauth.token_request(creds())
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "relay",
        "client_secret": "s3cret",
    }
    assert headers == {"Accept": "application/json"}


def test_scope_is_sent_verbatim_and_audience_when_given() -> None:
    scope = "consents:write  consents:read openid"
    form, _ = oauth.token_request(creds(scope=scope, audience="https://api.example.com/"))
    assert form["scope"] == scope
    assert form["audience"] == "https://api.example.com/"


@pytest.mark.parametrize("empty", [None, ""])
def test_no_scope_or_audience_means_no_field(empty: str | None) -> None:
    form, _ = oauth.token_request(creds(scope=empty, audience=empty))
    assert "scope" not in form
    assert "audience" not in form


def test_basic_moves_the_client_to_the_authorization_header() -> None:
    form, headers = oauth.token_request(creds(client_auth_method="client_secret_basic"))
    assert form == {"grant_type": "client_credentials"}
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"relay:s3cret").decode()
    assert headers["Accept"] == "application/json"


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        ("relay:prod", "p@ss:w/rd"),  # a colon in the id would otherwise split wrongly
        ("client with spaces", "a+b=c&d%e"),  # '+' must not come back as a space
        ("clïent-é", "s€cret~*._-"),  # non-ASCII: UTF-8, then percent-encoded
    ],
)
def test_basic_form_urlencodes_each_part_first(client_id: str, secret: str) -> None:
    _, headers = oauth.token_request(
        creds(client_id=client_id, client_secret=secret, client_auth_method="client_secret_basic")
    )
    raw = base64.b64decode(headers["Authorization"].split(" ", 1)[1]).decode("ascii")
    assert raw.count(":") == 1  # the separator only: colons inside are encoded
    assert basic_pair(headers) == (client_id, secret)


def test_extra_token_request_headers_are_sent() -> None:
    extra = (("X-Tenant", "acme"), ("X-Api-Version", "2"))
    _, headers = oauth.token_request(creds(token_request_headers=extra))
    assert headers["X-Tenant"] == "acme"
    assert headers["X-Api-Version"] == "2"
    assert headers["Accept"] == "application/json"


def test_credentials_from_stored_settings() -> None:
    stored = {
        "type": "oauth2_client_credentials",
        "token_url": "http://127.0.0.1:9/token",
        "client_id": "relay",
        "scope": "a b",
        "audience": None,
        "client_auth_method": "client_secret_basic",
        "token_request_headers": {"X-B": "2", "X-A": "1"},
    }
    made = Credentials.from_settings(stored, "s3cret")
    assert made == Credentials(
        token_url="http://127.0.0.1:9/token",
        client_id="relay",
        client_secret="s3cret",
        scope="a b",
        audience=None,
        client_auth_method="client_secret_basic",
        token_request_headers=(("X-A", "1"), ("X-B", "2")),
    )
    # The same settings in another order are the same credentials (the token stays cached).
    reordered = {**stored, "token_request_headers": {"X-A": "1", "X-B": "2"}}
    assert Credentials.from_settings(reordered, "s3cret") == made
    assert Credentials.from_settings(
        {**stored, "client_auth_method": None}, "s"
    ).client_auth_method == ("client_secret_post")


def test_credentials_repr_does_not_show_the_secret() -> None:
    made = creds(client_secret="canary-do-not-log")
    assert "canary-do-not-log" not in repr(made)
    assert "canary-do-not-log" not in str(made)


# -- parse_token ----------------------------------------------------------------------------


def js(value: Any) -> bytes:
    return orjson.dumps(value)


@pytest.mark.parametrize(
    ("raw", "token", "expires_in"),
    [
        (js({"access_token": "t", "token_type": "Bearer", "expires_in": 120}), "t", 120.0),
        (js({"access_token": "t", "token_type": "bearer", "expires_in": 5}), "t", 5.0),
        (js({"access_token": "t", "token_type": "BEARER"}), "t", 3600.0),
        (js({"access_token": "t"}), "t", 3600.0),  # token_type missing: lenient
        (js({"access_token": "t", "expires_in": "90"}), "t", 90.0),
        (js({"access_token": "t", "expires_in": 1.5}), "t", 1.5),
        (js({"access_token": "t", "expires_in": "soon"}), "t", 3600.0),
        (js({"access_token": "t", "expires_in": None}), "t", 3600.0),
        (js({"access_token": "t", "expires_in": -30}), "t", 0.0),
        (js({"access_token": "t", "expires_in": 0}), "t", 0.0),
        (js({"access_token": "t", "scope": "a b", "refresh_token": "r"}), "t", 3600.0),
    ],
)
def test_parse_token_accepts(raw: bytes, token: str, expires_in: float) -> None:
    assert oauth.parse_token(200, raw) == (token, expires_in)


@pytest.mark.parametrize("status", [200, 201, 299])
def test_parse_token_any_2xx(status: int) -> None:
    assert oauth.parse_token(status, js({"access_token": "t"}))[0] == "t"


@pytest.mark.parametrize(
    ("status", "raw", "message"),
    [
        (200, b"<html>gateway</html>", "not JSON"),
        (200, b"", "not JSON"),
        (200, b"\xff\xfe garbage", "not JSON"),
        (200, js(["access_token", "t"]), "no access_token"),
        (200, js("t"), "no access_token"),
        (200, js(None), "no access_token"),
        (200, js({"token_type": "Bearer", "expires_in": 60}), "no access_token"),
        (200, js({"access_token": ""}), "no access_token"),
        (200, js({"access_token": 42}), "no access_token"),
        (200, js({"access_token": None}), "no access_token"),
        (200, js({"access_token": "t", "token_type": "mac"}), "unsupported token_type"),
        (200, js({"access_token": "t", "token_type": "DPoP"}), "unsupported token_type"),
        (200, js({"access_token": "t", "token_type": 1}), "unsupported token_type"),
        (400, js({"error": "invalid_client"}), "HTTP 400"),
        (401, js({"error": "invalid_client"}), "HTTP 401"),
        (500, b"internal error", "HTTP 500"),
        (503, js({"access_token": "t"}), "HTTP 503"),  # a token in a failure is no token
        (302, b"", "HTTP 302"),  # redirects are not followed
    ],
)
def test_parse_token_refuses(status: int, raw: bytes, message: str) -> None:
    with pytest.raises(TokenError) as caught:
        oauth.parse_token(status, raw)
    assert message in caught.value.message
    assert caught.value.status_code == status
    assert caught.value.body == raw.decode("utf-8", errors="replace")


def test_parse_token_error_keeps_at_most_4_kib_of_the_body() -> None:
    with pytest.raises(TokenError) as caught:
        oauth.parse_token(502, b"x" * 10_000)
    assert caught.value.body == "x" * 4096


@pytest.mark.parametrize(
    ("expires_in", "margin"),
    [(3600.0, 60.0), (600.0, 60.0), (601.0, 60.0), (300.0, 30.0), (10.0, 1.0), (0.0, 0.0)],
)
def test_refresh_margin(expires_in: float, margin: float) -> None:
    assert oauth.refresh_margin(expires_in) == pytest.approx(margin)
    assert 0 <= oauth.refresh_margin(expires_in) <= expires_in


# -- TokenSource against a real local token endpoint ------------------------------------------


@dataclass
class Seen:
    form: dict[str, str]
    headers: dict[str, str]


Answer = Callable[[int], web.Response]


def tokens(expires_in: float = 3600) -> Answer:
    def answer(n: int) -> web.Response:
        body = {"access_token": f"tok-{n + 1}", "token_type": "Bearer", "expires_in": expires_in}
        return web.json_response(body)

    return answer


@dataclass
class Endpoint:
    """A token endpoint on 127.0.0.1 that counts requests. ``gate``, when set, holds every
    answer until it opens, so that concurrent callers really pile up."""

    answer: Answer = field(default_factory=tokens)
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.seen.append(Seen(form, dict(request.headers)))
        self.arrived.set()
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 10)
        return self.answer(len(self.seen) - 1)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    found = Endpoint()
    app = web.Application()
    app.router.add_post("/token", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    found.url = f"http://127.0.0.1:{port}/token"
    yield found
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def source_for(endpoint: Endpoint, clock: Clock | None = None, **overrides: Any) -> TokenSource:
    return TokenSource(
        creds(token_url=endpoint.url, **overrides),
        allowed=LOOPBACK,
        clock=clock or Clock(),
    )


async def test_fifty_concurrent_callers_cost_one_request(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    endpoint.gate = asyncio.Event()
    source = source_for(endpoint)
    callers = [asyncio.create_task(source.token(session)) for _ in range(50)]
    await asyncio.wait_for(endpoint.arrived.wait(), 10)
    # Let every caller reach the lock while the one request is held open.
    for _ in range(5):
        await asyncio.sleep(0)
    assert not any(task.done() for task in callers)
    endpoint.gate.set()
    got = await asyncio.wait_for(asyncio.gather(*callers), 10)
    assert got == ["tok-1"] * 50
    assert len(endpoint.seen) == 1
    assert source.fetches == 1
    assert await source.token(session) == "tok-1"  # and it stays cached
    assert len(endpoint.seen) == 1


async def test_request_on_the_wire(endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
    source = source_for(
        endpoint,
        scope="consents:write consents:read",
        audience="urn:receiver",
        token_request_headers=(("X-Tenant", "acme"),),
    )
    assert await source.token(session) == "tok-1"
    (seen,) = endpoint.seen
    assert seen.form == {
        "grant_type": "client_credentials",
        "client_id": "relay",
        "client_secret": "s3cret",
        "scope": "consents:write consents:read",
        "audience": "urn:receiver",
    }
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["X-Tenant"] == "acme"
    assert "Authorization" not in seen.headers


async def test_basic_on_the_wire(endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
    source = source_for(
        endpoint,
        client_id="relay:prod",
        client_secret="p@ss w+rd:€",
        client_auth_method="client_secret_basic",
    )
    await source.token(session)
    (seen,) = endpoint.seen
    assert seen.form == {"grant_type": "client_credentials"}
    assert basic_pair(seen.headers) == ("relay:prod", "p@ss w+rd:€")


async def test_cached_until_the_refresh_margin(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    endpoint.answer = tokens(expires_in=300)  # margin: 30 s, so valid for 270 s
    clock = Clock()
    source = source_for(endpoint, clock)
    assert await source.token(session) == "tok-1"
    clock.now += 269.9
    assert source.cached() == "tok-1"
    assert await source.token(session) == "tok-1"
    assert len(endpoint.seen) == 1
    clock.now += 0.1
    assert source.cached() is None
    assert await source.token(session) == "tok-2"
    assert len(endpoint.seen) == 2


async def test_no_expires_in_means_an_hour(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    endpoint.answer = lambda n: web.json_response({"access_token": f"tok-{n + 1}"})
    clock = Clock()
    source = source_for(endpoint, clock)
    await source.token(session)
    clock.now += 3600 - 60 - 0.01
    assert await source.token(session) == "tok-1"
    clock.now += 0.01
    assert await source.token(session) == "tok-2"


async def test_zero_lifetime_is_never_cached(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    endpoint.answer = tokens(expires_in=0)
    source = source_for(endpoint)
    assert [await source.token(session) for _ in range(3)] == ["tok-1", "tok-2", "tok-3"]


async def test_invalidate_drops_the_refused_token(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    source = source_for(endpoint)
    first = await source.token(session)
    source.invalidate(first)
    assert source.cached() is None
    assert await source.token(session) == "tok-2"
    assert len(endpoint.seen) == 2


async def test_invalidate_of_a_replaced_token_keeps_the_new_one(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    source = source_for(endpoint)
    old = await source.token(session)
    source.invalidate(old)
    new = await source.token(session)
    for _ in range(10):  # a burst of late 401s for the old token
        source.invalidate(old)
    assert source.cached() == new
    assert await source.token(session) == new
    assert len(endpoint.seen) == 2
    source.invalidate("never-issued")
    assert source.cached() == new


async def test_burst_of_401s_costs_one_new_token(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    source = source_for(endpoint)
    refused = await source.token(session)

    async def retry_after_401() -> str:
        source.invalidate(refused)
        return await source.token(session)

    fresh = await asyncio.gather(*(retry_after_401() for _ in range(30)))
    assert set(fresh) == {"tok-2"}
    assert len(endpoint.seen) == 2


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (503, "token service down", "text/plain"),
        (401, '{"error":"invalid_client"}', "application/json"),
        (200, "<html>not a token</html>", "text/html"),
        (200, '{"token_type":"Bearer"}', "application/json"),
    ],
)
async def test_failing_endpoint_raises_with_its_answer_and_caches_nothing(
    endpoint: Endpoint,
    session: aiohttp.ClientSession,
    status: int,
    body: str,
    content_type: str,
) -> None:
    good = tokens()
    endpoint.answer = lambda n: (
        web.Response(status=status, text=body, content_type=content_type) if n == 0 else good(n)
    )
    source = source_for(endpoint)
    with pytest.raises(TokenError) as caught:
        await source.token(session)
    assert caught.value.status_code == status
    assert caught.value.body == body
    assert source.cached() is None
    assert await source.token(session) == "tok-2"  # the next attempt asks again


async def test_forbidden_token_url_is_refused_without_connecting(
    endpoint: Endpoint, session: aiohttp.ClientSession
) -> None:
    source = TokenSource(creds(token_url=endpoint.url), allowed=[])
    with pytest.raises(errors.ForbiddenTarget):
        await source.token(session)
    assert endpoint.seen == []
    assert source.cached() is None
