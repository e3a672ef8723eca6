"""The /dashboard pages, server side: sign-in and sessions, CSRF, forms and their errors, the
webhook pages, deliveries with attempts, replay, samples, events and users (SQLite and
PostgreSQL). The browser walk-through is in tests/browser."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from consent_relay import crypto
from consent_relay.dashboard import forms, health
from consent_relay.dashboard.session import SESSION_COOKIE, Sessions, derive_key
from consent_relay.domain import samples
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn, WebhookIn
from consent_relay.services import orgs
from consent_relay.services import webhooks as webhook_service
from consent_relay.settings import Settings
from consent_relay.storage import batches, inspect, tamper
from tests.queues import result_of
from tests.receiver import Received, Receiver, status_sequence
from tests.workers import running

D = "/dashboard"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")
CLIENT_SECRET = "client-secret-never-shown"


# -- helpers ---------------------------------------------------------------------------------


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, api_key: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    form = await client.get(f"{D}/login")
    assert form.status_code == 200
    response = await client.post(
        f"{D}/login", data={"csrf_token": csrf_of(form), "api_key": api_key}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == D
    page = await client.get(D)
    assert page.status_code == 200
    return csrf_of(page)


@pytest.fixture
async def web_client(client: httpx.AsyncClient, org: tuple[str, str]) -> httpx.AsyncClient:
    """The client, without an Authorization header (a browser), not signed in yet."""
    return client


@pytest.fixture
async def signed_in(client: httpx.AsyncClient, org: tuple[str, str]) -> str:
    """Signs ``client`` in as ``acme``; the CSRF token."""
    return await sign_in(client, org[1])


def hook_form(url: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "url": url,
        "description": "",
        "enabled": "on",
        "regulations": ["gdpr"],
        "header_name": ["X-Env", ""],
        "header_value": ["test", ""],
    }
    data.update(fields)
    return data


def oauth_fields(token_url: str, **fields: Any) -> dict[str, Any]:
    return {
        "oauth": "on",
        "token_url": token_url,
        "client_id": "relay-client",
        "client_secret": CLIENT_SECRET,
        "scope": "consents:write",
        "audience": "",
        "client_auth_method": "client_secret_post",
        "token_header_name": ["X-Tenant"],
        "token_header_value": ["acme"],
        **fields,
    }


def errors_on(page: httpx.Response, name: str) -> str:
    """The text of the error list shown next to field ``name``."""
    found = re.search(rf'data-testid="error-{re.escape(name)}">(.*?)</ul>', page.text, re.S)
    assert found, f"no error shown for {name}"
    return html.unescape(re.sub(r"<[^>]+>", " ", found.group(1)))


async def create_via_form(client: httpx.AsyncClient, csrf: str, **fields: Any) -> str:
    """Create a webhook through the form; returns its id."""
    response = await client.post(f"{D}/webhooks", data={"csrf_token": csrf, **fields})
    assert response.status_code == 200, response.text
    found = re.search(r'data-testid="webhook-id">(wh_[^<]+)<', response.text)
    assert found
    return found.group(1)


async def wait_status(ctx: Context, delivery_id: str, status: str) -> None:
    for _ in range(400):
        async with ctx.store.read() as tx:
            found = await inspect.delivery_status(tx, delivery_id)
        if found == status:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"delivery {delivery_id} never became {status}")


def token_endpoint(_item: Received, count: int) -> web.StreamResponse:
    return web.json_response(
        {"access_token": f"token-{count}", "token_type": "Bearer", "expires_in": 3600}
    )


# -- sign-in and sessions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/webhooks/new",
        "/webhooks/wh_x",
        "/webhooks/wh_x/edit",
        "/deliveries/dlv_x",
        "/events",
        "/users",
        "/samples/user.updated",
    ],
)
async def test_pages_need_a_session(web_client: httpx.AsyncClient, path: str) -> None:
    response = await web_client.get(D + path)
    assert response.status_code == 303
    assert response.headers["location"] == f"{D}/login"


async def test_sign_in_with_a_bad_key_fails_with_a_message(web_client: httpx.AsyncClient) -> None:
    form = await web_client.get(f"{D}/login")
    response = await web_client.post(
        f"{D}/login", data={"csrf_token": csrf_of(form), "api_key": "crk_not-a-key"}
    )
    assert response.status_code == 401
    assert 'data-testid="login-error"' in response.text
    assert "unknown or has been revoked" in response.text
    assert SESSION_COOKIE not in response.cookies
    assert (await web_client.get(D)).status_code == 303

    empty = await web_client.post(
        f"{D}/login", data={"csrf_token": csrf_of(response), "api_key": "  "}
    )
    assert empty.status_code == 422
    assert "Enter an API key." in empty.text


async def test_sign_in_form_needs_its_csrf_token(
    web_client: httpx.AsyncClient, org: tuple[str, str]
) -> None:
    form = await web_client.get(f"{D}/login")
    token = csrf_of(form)
    for data in ({"api_key": org[1]}, {"api_key": org[1], "csrf_token": token + "x"}):
        refused = await web_client.post(f"{D}/login", data=data)
        assert refused.status_code == 403
        assert SESSION_COOKIE not in refused.cookies
    # A token without the cookie it came with (another site's form) is refused too.
    web_client.cookies.clear()
    refused = await web_client.post(f"{D}/login", data={"api_key": org[1], "csrf_token": token})
    assert refused.status_code == 403
    assert (await web_client.get(D)).status_code == 303


async def test_session_cookie_is_httponly_strict_and_scoped(
    web_client: httpx.AsyncClient, org: tuple[str, str]
) -> None:
    form = await web_client.get(f"{D}/login")
    response = await web_client.post(
        f"{D}/login", data={"csrf_token": csrf_of(form), "api_key": org[1]}
    )
    assert response.status_code == 303
    headers = [
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "=")
    ]
    assert len(headers) == 1
    cookie = SimpleCookie()
    cookie.load(headers[0])
    morsel = cookie[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/dashboard"
    assert org[1] not in headers[0]  # the key itself is never in the cookie
    page = await web_client.get(D)
    assert page.status_code == 200
    assert 'data-testid="organization">acme<' in page.text
    assert "Content-Security-Policy" in page.headers
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"


async def test_sign_out(web_client: httpx.AsyncClient, signed_in: str) -> None:
    refused = await web_client.post(f"{D}/logout")
    assert refused.status_code == 403
    assert (await web_client.get(D)).status_code == 200
    response = await web_client.post(f"{D}/logout", data={"csrf_token": signed_in})
    assert response.status_code == 303
    assert response.headers["location"].startswith(f"{D}/login")
    assert (await web_client.get(D)).status_code == 303


async def test_revoking_the_api_key_ends_the_session(
    web_client: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    assert (await web_client.get(D)).status_code == 200
    (key,) = await orgs.list_keys(ctx, "acme")
    await orgs.revoke_key(ctx, key["id"])
    response = await web_client.get(D)
    assert response.status_code == 303
    assert response.headers["location"] == f"{D}/login"


async def test_forged_or_foreign_cookies_are_not_sessions(
    web_client: httpx.AsyncClient, ctx: Context, org: tuple[str, str], settings: Settings
) -> None:
    key_hash = crypto.hash_key(org[1])
    other = Sessions(settings.model_copy(update={"secret_key": crypto.new_key()}))
    _session, foreign = other.issue("acme", key_hash)
    web_client.cookies.set(SESSION_COOKIE, foreign, domain="relay.test", path="/dashboard")
    assert (await web_client.get(D)).status_code == 303
    # A signed session whose key hash belongs to another organization is no session either.
    await orgs.create_organization(ctx, OrganizationIn(id="other"))
    _session, mismatched = Sessions(settings).issue("other", key_hash)
    web_client.cookies.set(SESSION_COOKIE, mismatched, domain="relay.test", path="/dashboard")
    assert (await web_client.get(D)).status_code == 303
    _session, good = Sessions(settings).issue("acme", key_hash)
    web_client.cookies.set(SESSION_COOKIE, good, domain="relay.test", path="/dashboard")
    assert (await web_client.get(D)).status_code == 200
    web_client.cookies.set(SESSION_COOKIE, good[:-2] + "xx", domain="relay.test", path="/dashboard")
    assert (await web_client.get(D)).status_code == 303


def test_session_key_comes_from_the_secret_key_file_when_unset(settings: Settings) -> None:
    from_file = settings.model_copy(update={"secret_key": ""})
    key = derive_key(from_file)  # creates DATA_DIR/secret.key like the secret box does
    assert (settings.data_dir / "secret.key").exists()
    assert derive_key(from_file) == key
    box_key = (settings.data_dir / "secret.key").read_text().strip()
    assert derive_key(settings.model_copy(update={"secret_key": box_key})) == key
    assert derive_key(settings) != key
    assert box_key.encode() not in key


# -- CSRF on every POST ----------------------------------------------------------------------


async def test_posts_without_the_csrf_token_are_refused(
    api: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    hook = (await api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h"})).json()
    before = await webhook_service.get_webhook(ctx, "acme", hook["id"])
    targets = [
        ("/webhooks", hook_form("http://127.0.0.1:9/new")),
        (f"/webhooks/{hook['id']}/edit", hook_form("http://127.0.0.1:9/changed")),
        (f"/webhooks/{hook['id']}/test", {"type": "user.updated"}),
        (f"/webhooks/{hook['id']}/rotate-secret", {}),
        (f"/webhooks/{hook['id']}/replay", {}),
        (f"/webhooks/{hook['id']}/delete", {}),
        ("/logout", {}),
    ]
    for path, data in targets:
        for token in (None, "wrong-token", ""):
            sent = dict(data) if token is None else {**data, "csrf_token": token}
            response = await api.post(D + path, data=sent)
            assert response.status_code == 403, (path, token, response.text)
            assert 'data-testid="error-title">Form refused<' in response.text
    async with ctx.store.read() as tx:
        assert await tx.count_rows("webhooks") == 1
        assert await tx.count_rows("deliveries") == 0
    assert await webhook_service.get_webhook(ctx, "acme", hook["id"]) == before
    assert (await api.get(D)).status_code == 200  # still signed in


async def test_csrf_token_of_another_session_is_refused(
    client: httpx.AsyncClient, org: tuple[str, str], settings: Settings
) -> None:
    first = await sign_in(client, org[1])
    assert (await client.get(f"{D}/login")).status_code == 303  # signed in already
    client.cookies.clear()
    second = await sign_in(client, org[1])  # a new session, a new token
    assert first != second
    stale = await client.post(f"{D}/webhooks", data={"csrf_token": first, **hook_form("x")})
    assert stale.status_code == 403


# -- the webhook form ------------------------------------------------------------------------


async def test_form_validation_errors_are_shown_next_to_the_fields(
    web_client: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    data = {
        "csrf_token": signed_in,
        "url": "not a url",
        "description": "",
        "header_name": ["Authorization", "", "X-Ok"],
        "header_value": ["Bearer x", "orphan", "fine"],
        **oauth_fields("ftp://auth.example/token", client_id="", client_secret=""),
        "event_types": ["user.updated", "user.exploded"],
    }
    response = await web_client.post(f"{D}/webhooks", data=data)
    assert response.status_code == 422
    assert 'data-testid="form-errors"' in response.text
    assert "URL" in errors_on(response, "url")
    assert "has a value but no header name" in errors_on(response, "headers")
    assert "regulation" in errors_on(response, "regulations")
    assert "user.exploded" in errors_on(response, "event_types")
    assert "URL" in errors_on(response, "authentication.token_url")
    assert errors_on(response, "authentication.client_id")
    assert 'aria-invalid="true"' in response.text
    # What was typed comes back, the secret does not.
    assert 'value="not a url"' in response.text
    assert 'value="X-Ok"' in response.text
    async with ctx.store.read() as tx:
        assert await tx.count_rows("webhooks") == 0

    reserved = await web_client.post(
        f"{D}/webhooks",
        data={
            "csrf_token": signed_in,
            **hook_form("http://127.0.0.1:9/h", header_name=["User-Agent"]),
            "header_value": ["x"],
        },
    )
    assert reserved.status_code == 422
    assert "set by Consent Relay" in errors_on(reserved, "headers")


async def test_missing_client_secret_and_forbidden_targets_are_field_errors(
    web_client: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    response = await web_client.post(
        f"{D}/webhooks",
        data={
            "csrf_token": signed_in,
            **hook_form("http://127.0.0.1:9/h"),
            **oauth_fields("http://127.0.0.1:9/token", client_secret=""),
        },
    )
    assert response.status_code == 422
    assert "required" in errors_on(response, "authentication.client_secret")

    response = await web_client.post(
        f"{D}/webhooks",
        data={"csrf_token": signed_in, **hook_form("http://169.254.169.254/latest/")},
    )
    assert response.status_code == 422
    assert errors_on(response, "url")
    response = await web_client.post(
        f"{D}/webhooks",
        data={
            "csrf_token": signed_in,
            **hook_form("http://127.0.0.1:9/h"),
            **oauth_fields("http://10.1.2.3/token"),
        },
    )
    assert response.status_code == 422
    assert errors_on(response, "authentication.token_url")
    assert CLIENT_SECRET not in response.text
    async with ctx.store.read() as tx:
        assert await tx.count_rows("webhooks") == 0


async def test_create_webhook_with_oauth_shows_the_signing_secret_once(
    web_client: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    data = {
        "csrf_token": signed_in,
        **hook_form(
            "http://127.0.0.1:9/hook",
            description="CRM",
            flatten="on",
            event_types=["user.created", "user.updated"],
            regulations=["gdpr", "ccpa"],
        ),
        **oauth_fields("http://127.0.0.1:9/token", client_auth_method="client_secret_basic"),
    }
    response = await web_client.post(f"{D}/webhooks", data=data)
    assert response.status_code == 200, response.text
    secrets = SECRET.findall(response.text)
    assert len(set(secrets)) == 1
    assert CLIENT_SECRET not in response.text
    hook_id = re.search(r'data-testid="webhook-id">(wh_[^<]+)<', response.text)
    assert hook_id
    hook = await webhook_service.get_webhook(ctx, "acme", hook_id.group(1))
    assert hook["url"] == "http://127.0.0.1:9/hook"
    assert hook["description"] == "CRM"
    assert hook["flatten"] is True
    assert hook["enabled"] is True
    assert hook["event_types"] == ["user.created", "user.updated"]
    assert hook["regulations"] == ["gdpr", "ccpa"]
    assert hook["headers"] == {"X-Env": "********"}  # values are secrets
    assert hook["authentication"] == {
        "type": "oauth2_client_credentials",
        "token_url": "http://127.0.0.1:9/token",
        "client_id": "relay-client",
        "scope": "consents:write",
        "audience": None,
        "client_auth_method": "client_secret_basic",
        "token_request_headers": {"X-Tenant": "********"},
        "client_secret_set": True,
    }
    async with ctx.store.read() as tx:
        record = await tx.get_webhook("acme", hook["id"])
    assert record is not None
    assert record.auth_secret is not None
    assert ctx.box.decrypt(record.auth_secret) == CLIENT_SECRET
    assert ctx.box.decrypt(record.signing_secret) == secrets[0]

    detail = await web_client.get(f"{D}/webhooks/{hook['id']}")
    assert detail.status_code == 200
    assert not SECRET.search(detail.text)
    listing = await web_client.get(D)
    assert hook["id"] in listing.text
    assert "http://127.0.0.1:9/hook" in listing.text
    edit = await web_client.get(f"{D}/webhooks/{hook['id']}/edit")
    assert CLIENT_SECRET not in edit.text
    assert "A secret is stored; leave blank to keep it." in edit.text


async def test_edit_keeps_the_client_secret_and_can_drop_oauth(
    web_client: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    hook_id = await create_via_form(
        web_client,
        signed_in,
        **hook_form("http://127.0.0.1:9/hook"),
        **oauth_fields("http://127.0.0.1:9/token"),
    )
    edit = await web_client.post(
        f"{D}/webhooks/{hook_id}/edit",
        data={
            "csrf_token": signed_in,
            **hook_form("http://127.0.0.1:9/other", header_name=[], header_value=[]),
            **oauth_fields("http://127.0.0.1:9/token2", client_secret="", scope=""),
        },
    )
    assert edit.status_code == 303, edit.text
    assert edit.headers["location"] == f"{D}/webhooks/{hook_id}?notice=saved"
    hook = await webhook_service.get_webhook(ctx, "acme", hook_id)
    assert hook["url"] == "http://127.0.0.1:9/other"
    assert hook["headers"] == {}
    assert hook["flatten"] is False
    assert hook["authentication"] is not None
    assert hook["authentication"]["token_url"] == "http://127.0.0.1:9/token2"
    assert hook["authentication"]["scope"] is None
    assert hook["authentication"]["client_secret_set"] is True
    async with ctx.store.read() as tx:
        record = await tx.get_webhook("acme", hook_id)
    assert record is not None
    assert record.auth_secret is not None
    assert ctx.box.decrypt(record.auth_secret) == CLIENT_SECRET
    saved = await web_client.get(edit.headers["location"])
    assert 'data-testid="notice">Webhook saved.' in saved.text

    invalid = await web_client.post(
        f"{D}/webhooks/{hook_id}/edit",
        data={"csrf_token": signed_in, **hook_form("", regulations=[])},
    )
    assert invalid.status_code == 422
    assert errors_on(invalid, "url")
    assert errors_on(invalid, "regulations")
    assert (await webhook_service.get_webhook(ctx, "acme", hook_id))["url"].endswith("/other")

    unticked = hook_form("http://127.0.0.1:9/other")
    del unticked["enabled"]  # browsers send only ticked checkboxes
    dropped = await web_client.post(
        f"{D}/webhooks/{hook_id}/edit", data={"csrf_token": signed_in, **unticked}
    )
    assert dropped.status_code == 303
    hook = await webhook_service.get_webhook(ctx, "acme", hook_id)
    assert hook["authentication"] is None
    assert hook["enabled"] is False


def test_form_field_names_from_pydantic_locations() -> None:
    assert forms.field_name(("url",)) == "url"
    assert forms.field_name(("regulations", 0)) == "regulations"
    assert forms.field_name(("authentication", "token_url")) == "authentication.token_url"
    assert forms.field_name(("headers", "function-after[_check_headers]")) == "headers"
    assert forms.field_name(()) == ""


# -- the webhook page ------------------------------------------------------------------------


async def test_rotate_secret_shows_the_new_secret_once(
    web_client: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    created = await web_client.post(
        f"{D}/webhooks", data={"csrf_token": signed_in, **hook_form("http://127.0.0.1:9/h")}
    )
    first = SECRET.search(created.text)
    hook_id = re.search(r'data-testid="webhook-id">(wh_[^<]+)<', created.text)
    assert first
    assert hook_id
    rotated = await web_client.post(
        f"{D}/webhooks/{hook_id.group(1)}/rotate-secret", data={"csrf_token": signed_in}
    )
    assert rotated.status_code == 200
    second = SECRET.search(rotated.text)
    assert second
    assert second.group(0) != first.group(0)
    assert "keeps signing beside it for 24 hours" in rotated.text
    async with ctx.store.read() as tx:
        record = await tx.get_webhook("acme", hook_id.group(1))
    assert record is not None
    assert ctx.box.decrypt(record.signing_secret) == second.group(0)
    again = await web_client.get(f"{D}/webhooks/{hook_id.group(1)}")
    assert not SECRET.search(again.text)


async def test_test_event_delivered_with_oauth_and_shown_with_its_attempts(
    web_client: httpx.AsyncClient, ctx: Context, receiver: Receiver, signed_in: str
) -> None:
    receiver.behaviours["/token"] = token_endpoint
    receiver.behaviours["/hook"] = status_sequence(500)
    hook_id = await create_via_form(
        web_client,
        signed_in,
        **hook_form(receiver.url("/hook")),
        **oauth_fields(receiver.url("/token")),
    )
    sent = await web_client.post(
        f"{D}/webhooks/{hook_id}/test", data={"csrf_token": signed_in, "type": "event.created"}
    )
    assert sent.status_code == 303
    location = sent.headers["location"]
    assert location.startswith(f"{D}/webhooks/{hook_id}?notice=test-sent&delivery=dlv_")
    delivery_id = location.rsplit("=", 1)[1]
    queued = await web_client.get(location)
    assert f"{D}/deliveries/{delivery_id}" in queued.text
    pending = await web_client.get(f"{D}/deliveries/{delivery_id}")
    assert pending.status_code == 200
    assert 'name="consent-relay-refresh"' in pending.text
    assert 'data-testid="no-attempts"' in pending.text

    async with running(ctx):
        await wait_status(ctx, delivery_id, "delivered")
    token_request = receiver.at("/token")[0]
    assert b"client_secret=" + CLIENT_SECRET.encode() in token_request.body
    assert receiver.at("/hook")[-1].headers["Authorization"] == "Bearer token-0"

    page = await web_client.get(f"{D}/deliveries/{delivery_id}")
    assert page.status_code == 200
    assert 'name="consent-relay-refresh"' not in page.text
    text = html.unescape(page.text)
    assert text.count('data-testid="attempt"') == 2
    assert 'data-outcome="E_HTTP"' in text
    assert 'data-outcome="ok"' in text
    assert "answer 0" in text  # the failed attempt's response body
    assert "[redacted]" in text  # the Authorization header as sent, redacted
    assert "webhook-signature" in text
    assert "X-Env" in text
    body = samples.sample_parameters("event.created")
    assert body["entity"]["id"] in text
    assert '"type": "event.created"' in text
    assert re.search(r'data-testid="attempt-duration">\d+', page.text)

    detail = await web_client.get(f"{D}/webhooks/{hook_id}")
    assert 'data-testid="success-rate">50.0' in detail.text
    assert "E_HTTP 500" in detail.text  # the last failure
    assert 'data-testid="queue-depth">0<' in detail.text


async def test_dead_letters_replayed_one_or_all(
    web_client: httpx.AsyncClient, ctx: Context, receiver: Receiver, signed_in: str
) -> None:
    failing = {"on": True}

    def behave(_item: Received, count: int) -> web.StreamResponse:
        return web.Response(status=503 if failing["on"] else 204, text=f"answer {count}")

    receiver.behaviours["/d"] = behave
    hook_id = await create_via_form(web_client, signed_in, **hook_form(receiver.url("/d")))
    ids = []
    for kind in ("user.created", "user.updated"):
        sent = await web_client.post(
            f"{D}/webhooks/{hook_id}/test", data={"csrf_token": signed_in, "type": kind}
        )
        ids.append(sent.headers["location"].rsplit("=", 1)[1])
    async with running(ctx):
        for delivery_id in ids:
            await wait_status(ctx, delivery_id, "dead")
        page = await web_client.get(f"{D}/webhooks/{hook_id}")
        assert page.text.count('data-testid="dead-row"') == 2
        assert 'data-testid="dead-count">2<' in page.text
        listing = await web_client.get(D)
        assert 'data-testid="dead-count">2<' in listing.text
        assert "failing" in listing.text
        failing["on"] = False

        one = await web_client.post(
            f"{D}/webhooks/{hook_id}/replay", data={"csrf_token": signed_in, "delivery_id": ids[0]}
        )
        assert one.status_code == 303
        assert one.headers["location"] == f"{D}/webhooks/{hook_id}?notice=replayed&count=1"
        async with ctx.store.read() as tx:
            replay_id = await inspect.replayed_by(tx, ids[0])
        assert replay_id is not None
        await wait_status(ctx, replay_id, "delivered")
        dead_page = await web_client.get(f"{D}/deliveries/{ids[0]}")
        assert f'href="{D}/deliveries/{replay_id}" data-testid="replayed-by"' in dead_page.text
        assert 'data-testid="replay-delivery"' not in dead_page.text

        rest = await web_client.post(
            f"{D}/webhooks/{hook_id}/replay", data={"csrf_token": signed_in}
        )
        assert rest.headers["location"].endswith("count=1")
        page = await web_client.get(rest.headers["location"])
        assert 'data-testid="replayed-count">1<' in page.text
        async with ctx.store.read() as tx:
            second = await inspect.replayed_by(tx, ids[1])
        assert second is not None
        await wait_status(ctx, second, "delivered")
    page = await web_client.get(f"{D}/webhooks/{hook_id}")
    assert 'data-testid="no-dead-letters"' in page.text
    bad = await web_client.post(
        f"{D}/webhooks/{hook_id}/replay", data={"csrf_token": signed_in, "delivery_id": ids[0]}
    )
    assert bad.status_code == 303  # a stale page's button: not sent a second time
    assert bad.headers["location"] == f"{D}/webhooks/{hook_id}?notice=already-replayed"
    async with ctx.store.read() as tx:
        assert await tx.count_rows("deliveries") == 4


async def test_health_counts_queue_dead_letters_and_failures(ctx: Context) -> None:
    hook = await webhook_service.create_webhook(
        ctx, "acme", WebhookIn.model_validate({"url": "http://127.0.0.1:9/h"})
    )
    empty = await health.webhook_health(ctx, hook["id"])
    assert (empty.attempts, empty.queue_depth, empty.dead_letters) == (0, 0, 0)
    assert empty.status == "idle"
    assert empty.success_rate is None
    queued = [
        (await webhook_service.send_test(ctx, "acme", hook["id"], "user.updated"))["delivery_id"]
        for _ in range(3)
    ]
    now = now_ts()
    # The first becomes a dead letter as the worker makes one (its queue moves on), its last
    # attempt a 502; the other two stay pending, leased.
    now_ms = ctx.clock_ms()
    claimed = await batches.claim(ctx.store, limit=10, now_ms=now_ms, lease="t", lease_ms=60_000)
    first = next(item for item in claimed if item.id == queued[0])
    dead = result_of(first, "dead", outcome="E_HTTP", status_code=502, started_at=now)
    await batches.record(ctx.store, [dead], now_ms=now_ms, now=now)
    async with ctx.store.write() as tx:
        await tamper.insert_attempts(
            tx,
            [
                {"id": f"atm_{n}", "delivery_id": queued[0], "attempt_number": n,
                 "started_at": now if n < 3 else "2000-01-01T00:00:00.000Z",
                 "duration_ms": 5, "outcome": outcome, "status_code": code,
                 "response_body": None, "request_headers": None, "error": None}
                for n, outcome, code in ((2, "ok", 200), (3, "E_TIMEOUT", None))
            ],
        )  # fmt: skip
        oldest = (await inspect.rows(tx, "deliveries", id=queued[1]))[0]["created_at"]
    found = await health.webhook_health(ctx, hook["id"], now=datetime.now(UTC))
    assert found.attempts == 2  # the attempt of 2000 is outside the window
    assert found.succeeded == 1
    assert found.success_rate == 50.0
    assert found.queue_depth == 2
    assert found.oldest_waiting == oldest
    assert found.dead_letters == 1
    assert found.last_failure is not None
    assert (found.last_failure.outcome, found.last_failure.status_code) == ("E_HTTP", 502)
    assert found.last_failure.delivery_id == queued[0]
    assert found.status == "degraded"


async def test_samples_download_as_attachments(
    web_client: httpx.AsyncClient, signed_in: str
) -> None:
    for kind in ("event.created", "user.updated", "user.deleted"):
        for flatten in (False, True):
            response = await web_client.get(
                f"{D}/samples/{kind}", params={"flatten": "1"} if flatten else {}
            )
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            name = f"{kind}.flattened.json" if flatten else f"{kind}.json"
            assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
            assert orjson.loads(response.content) == samples.sample_body(kind, flatten=flatten)
    missing = await web_client.get(f"{D}/samples/user.exploded")
    assert missing.status_code == 404
    assert 'data-testid="error-title"' in missing.text


async def test_events_and_users_pages(api: httpx.AsyncClient, ctx: Context, signed_in: str) -> None:
    for n in range(3):
        created = await api.post(
            "/v1/consents/events",
            json={
                "user": {"organization_user_id": f"user{n}@example.com", "country": "FR"},
                "consents": {"purposes": [{"id": "analytics", "enabled": n % 2 == 0}]},
            },
        )
        assert created.status_code == 201
    events = await api.get(f"{D}/events")
    assert events.status_code == 200
    assert events.text.count('data-testid="event-row"') == 3
    assert events.text.index("user2@example.com") < events.text.index("user0@example.com")
    users = await api.get(f"{D}/users")
    assert users.text.count('data-testid="user-row"') == 3
    assert "analytics ✓" in users.text
    assert "analytics ✗" in users.text
    user_id = re.search(r'/dashboard/events\?user_id=([^"]+)"', users.text)
    assert user_id
    one = await api.get(f"{D}/events", params={"user_id": user_id.group(1)})
    assert one.text.count('data-testid="event-row"') == 1
    bad = await api.get(f"{D}/events", params={"before": "x"})
    assert bad.status_code == 400


async def test_paging_events_newest_first(api: httpx.AsyncClient, ctx: Context) -> None:
    for n in range(5):
        await api.post(
            "/v1/consents/events", json={"user": {"organization_user_id": f"p{n}@example.com"}}
        )
    first = await health.recent_events(ctx, "acme", limit=2)
    assert [e["user"]["organization_user_id"] for e in first.items] == [
        "p4@example.com",
        "p3@example.com",
    ]
    assert first.older is not None
    rest = await health.recent_events(ctx, "acme", before=first.older, limit=10)
    assert len(rest.items) == 3
    assert rest.older is None
    users = await health.recent_users(ctx, "acme", limit=4)
    assert len(users.items) == 4
    assert users.older is not None
    assert users.items[0]["organization_user_id"] == "p4@example.com"


async def test_another_organizations_webhook_is_not_found(
    web_client: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    await orgs.create_organization(ctx, OrganizationIn(id="other"))
    theirs = await webhook_service.create_webhook(
        ctx, "other", WebhookIn.model_validate({"url": "http://127.0.0.1:9/h"})
    )
    sent = await webhook_service.send_test(ctx, "other", theirs["id"], "user.updated")
    for path in (f"/webhooks/{theirs['id']}", f"/webhooks/{theirs['id']}/edit"):
        response = await web_client.get(D + path)
        assert response.status_code == 404
        assert theirs["url"] not in response.text
    assert (await web_client.get(f"{D}/deliveries/{sent['delivery_id']}")).status_code == 404
    for action in ("test", "rotate-secret", "replay", "delete"):
        response = await web_client.post(
            f"{D}/webhooks/{theirs['id']}/{action}",
            data={"csrf_token": signed_in, "type": "user.updated"},
        )
        assert response.status_code == 404, action
    assert (await webhook_service.get_webhook(ctx, "other", theirs["id"]))["id"] == theirs["id"]


async def test_delete_webhook(web_client: httpx.AsyncClient, ctx: Context, signed_in: str) -> None:
    hook_id = await create_via_form(web_client, signed_in, **hook_form("http://127.0.0.1:9/h"))
    response = await web_client.post(
        f"{D}/webhooks/{hook_id}/delete", data={"csrf_token": signed_in}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"{D}?notice=deleted"
    async with ctx.store.read() as tx:
        assert await tx.count_rows("webhooks") == 0
    assert (await web_client.get(f"{D}/webhooks/{hook_id}")).status_code == 404


async def test_static_files_are_ours(web_client: httpx.AsyncClient) -> None:
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "javascript")):
        response = await web_client.get(f"{D}/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    page = await web_client.get(f"{D}/login")
    assert re.findall(r'<script[^>]*src="([^"]+)"', page.text) == [
        f"{D}/static/dashboard.js?v=0.1.0"
    ]
    assert "<script>" not in page.text
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))
