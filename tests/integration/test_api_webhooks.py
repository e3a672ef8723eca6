"""Webhook configuration through the HTTP API (docs/webhook-rules.md, "Webhook configuration")."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.domain.timefmt import now_ts, parse_ts
from consent_relay.runtime import Context
from consent_relay.security import webhook_secrets
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from consent_relay.storage.store import Store

HOOKS = "/v1/webhooks"
URL = "http://127.0.0.1:9/hook"
PUBLIC_URL = "https://8.8.8.8/consents"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=]{20,}$")
CLIENT_SECRET = "s3cr3t-client-value"
OAUTH: dict[str, Any] = {
    "type": "oauth2_client_credentials",
    "token_url": "https://8.8.4.4/oauth/token",
    "client_id": "relay",
    "client_secret": CLIENT_SECRET,
    "scope": "consents:write",
    "client_auth_method": "client_secret_basic",
    "token_request_headers": {"X-Tenant": "acme"},
}


def _json(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


async def create(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post(HOOKS, json={"url": URL, **fields})
    assert response.status_code == 201, response.text
    return _json(response)


def problem_fields(response: httpx.Response, status: int = 422) -> list[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data = _json(response)
    assert data["status"] == status
    return [error["field"] for error in data.get("errors", [])]


def without_secret(created: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in created.items() if k != "signing_secret"}


async def stored_row(store: Store, webhook_id: str) -> dict[str, Any]:
    async with store.read() as tx:
        rows = await inspect.rows(tx, "webhooks", id=webhook_id)
    assert len(rows) == 1, rows
    return rows[0]


async def client_for(settings: Settings, store: Store, api_key: str) -> httpx.AsyncClient:
    ctx = Context(settings=settings, store=store, box=crypto.SecretBox([settings.secret_key]))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, ctx)),
        base_url="http://relay.test",
        headers={"Authorization": f"Bearer {api_key}"},
    )


@pytest.fixture
async def strict_api(
    settings: Settings, store: Store, org: tuple[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with the SSRF guard's defaults: no network allowed despite it."""
    strict = settings.model_copy(update={"allowed_networks": []})
    async with await client_for(strict, store, org[1]) as http:
        yield http


@pytest.fixture
async def https_api(
    settings: Settings, store: Store, org: tuple[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with CONSENT_RELAY_REQUIRE_HTTPS=true."""
    strict = settings.model_copy(update={"require_https": True})
    async with await client_for(strict, store, org[1]) as http:
        yield http


# -- create, get, list ------------------------------------------------------------------------


async def test_create_webhook_with_defaults(api: httpx.AsyncClient) -> None:
    created = await create(api)
    assert created["id"].startswith("wh_")
    assert SECRET.match(created["signing_secret"])
    assert TIMESTAMP.match(created["created_at"])
    assert created == {
        "id": created["id"],
        "organization_id": "acme",
        "url": URL,
        "enabled": True,
        "status": "ok",
        "status_reason": None,
        "event_types": [],
        "regulations": ["gdpr"],
        "flatten": False,
        "headers": {},
        "authentication": None,
        "description": "",
        "created_at": created["created_at"],
        "updated_at": created["created_at"],
        "rate_limit": None,
        "auto_replay": True,
        "disabled_reason": None,
        "paused_until": None,
        "signing_secret": created["signing_secret"],
    }


async def test_signing_secret_is_shown_once(api: httpx.AsyncClient) -> None:
    created = await create(api, description="prod")
    fetched = await api.get(f"{HOOKS}/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == without_secret(created)
    listed = (await api.get(HOOKS)).json()
    assert listed == {"data": [without_secret(created)], "next_cursor": None}
    patched = await api.patch(f"{HOOKS}/{created['id']}", json={"description": "staging"})
    assert "signing_secret" not in patched.json()
    for response in (fetched, patched, await api.get(HOOKS)):
        assert created["signing_secret"] not in response.text


async def test_create_webhook_with_every_setting(api: httpx.AsyncClient) -> None:
    created = await create(
        api,
        url=PUBLIC_URL,
        enabled=False,
        event_types=["user.updated", "event.created", "user.updated"],
        regulations=["cpra", "gdpr", "cpra"],
        flatten=True,
        headers={"X-Env": "prod", "X-Team": "privacy"},
        description="CRM sync",
        rate_limit=10,
        auto_replay=False,
    )
    assert without_secret(created) == {
        "id": created["id"],
        "organization_id": "acme",
        "url": PUBLIC_URL,
        "enabled": False,
        "status": "ok",
        "status_reason": None,
        "event_types": ["user.updated", "event.created"],
        "regulations": ["cpra", "gdpr"],
        "flatten": True,
        "headers": {"X-Env": "********", "X-Team": "********"},  # values are secrets
        "authentication": None,
        "description": "CRM sync",
        "rate_limit": 10.0,
        "auto_replay": False,
        "disabled_reason": None,
        "paused_until": None,
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    }
    assert (await api.get(f"{HOOKS}/{created['id']}")).json() == without_secret(created)


async def test_list_webhooks_pages(api: httpx.AsyncClient) -> None:
    created = [without_secret(await create(api, description=f"h{i}")) for i in range(3)]
    first = (await api.get(HOOKS, params={"limit": 2})).json()
    assert first["data"] == created[:2]
    second = (await api.get(HOOKS, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert second == {"data": created[2:], "next_cursor": None}
    assert problem_fields(await api.get(HOOKS, params={"limit": 5000})) == ["limit"]
    assert problem_fields(await api.get(HOOKS, params={"cursor": "%%%"})) == ["cursor"]


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://8.8.8.8/hook"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": URL, "event_types": ["user.exploded"]}, "event_types"),
        ({"url": URL, "event_types": "user.created"}, "event_types"),
        ({"url": URL, "regulations": ["gdpr", "moon-law"]}, "regulations[1]"),
        ({"url": URL, "regulations": []}, "regulations"),
        ({"url": URL, "secret": "mine"}, "secret"),
        ({"url": URL, "signing_secret": "whsec_mine"}, "signing_secret"),
        ({"url": URL, "enabled": "sometimes"}, "enabled"),
        ({"url": URL, "headers": {"X Bad": "x"}}, "headers"),
        ({"url": URL, "headers": {"X-Ok": "a\r\nInjected: yes"}}, "headers"),
        ({"url": URL, "headers": {"X-Ok": "a\x00"}}, "headers.X-Ok"),
        ({"url": URL, "headers": {"X-Ok": 3}}, "headers.X-Ok"),
        ({"url": URL, "description": "\x00"}, "description"),
        ({"url": URL, "authentication": {**OAUTH, "type": "basic"}}, "authentication.type"),
        ({"url": URL, "authentication": {**OAUTH, "password": "x"}}, "authentication.password"),
        (
            {"url": URL, "authentication": {**OAUTH, "token_url": "ftp://8.8.8.8/t"}},
            "authentication.token_url",
        ),
        (
            {"url": URL, "authentication": {**OAUTH, "client_auth_method": "jwt"}},
            "authentication.client_auth_method",
        ),
        (
            {"url": URL, "authentication": {k: v for k, v in OAUTH.items() if k != "client_id"}},
            "authentication.client_id",
        ),
        (
            {
                "url": URL,
                "authentication": {k: v for k, v in OAUTH.items() if k != "client_secret"},
            },
            "authentication.client_secret",
        ),
        (
            {"url": URL, "authentication": {**OAUTH, "token_request_headers": {"Host": "x"}}},
            "authentication.token_request_headers",
        ),
    ],
)
async def test_invalid_webhook_is_422_naming_the_field(
    api: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    assert problem_fields(await api.post(HOOKS, json=payload)) == [field]
    assert (await api.get(HOOKS)).json()["data"] == []


@pytest.mark.parametrize(
    "name",
    [
        "Content-Type",
        "Content-Length",
        "Host",
        "User-Agent",
        "webhook-id",
        "Webhook-Timestamp",
        "WEBHOOK-SIGNATURE",
        "Cookie",
        "Transfer-Encoding",
        "Content-Encoding",
        "Keep-Alive",
        "Trailer",
        "Proxy-Connection",
        "Expect",
        "webhook-anything",
    ],
)
async def test_reserved_header_names_are_refused(api: httpx.AsyncClient, name: str) -> None:
    response = await api.post(HOOKS, json={"url": URL, "headers": {name: "x"}})
    assert problem_fields(response) == ["headers"]
    assert name in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.1.10/hook",
        "http://172.16.0.1/hook",
        "http://100.64.0.1/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
async def test_internal_destinations_are_refused(api: httpx.AsyncClient, url: str) -> None:
    response = await api.post(HOOKS, json={"url": url})
    assert problem_fields(response) == ["url"]
    assert response.json()["title"] == "Forbidden target"
    assert "refused" in response.json()["errors"][0]["message"]
    assert (await api.get(HOOKS)).json()["data"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://0x7f000001/hook",
    ],
)
async def test_loopback_is_refused_unless_allowed(
    api: httpx.AsyncClient, strict_api: httpx.AsyncClient, url: str
) -> None:
    assert problem_fields(await strict_api.post(HOOKS, json={"url": url})) == ["url"]
    # The fixture settings allow 127.0.0.0/8 and ::1.
    assert (await api.post(HOOKS, json={"url": url})).status_code == 201


async def test_token_url_is_checked_like_the_url(api: httpx.AsyncClient) -> None:
    response = await api.post(
        HOOKS,
        json={"url": URL, "authentication": {**OAUTH, "token_url": "http://169.254.169.254/t"}},
    )
    assert problem_fields(response) == ["authentication.token_url"]


async def test_require_https_refuses_http(
    https_api: httpx.AsyncClient,
) -> None:
    assert problem_fields(await https_api.post(HOOKS, json={"url": "http://8.8.8.8/h"})) == ["url"]
    assert (await https_api.post(HOOKS, json={"url": PUBLIC_URL})).status_code == 201


# -- OAuth settings and secrets ---------------------------------------------------------------


async def test_oauth_client_secret_is_stored_encrypted_and_never_returned(
    api: httpx.AsyncClient, store: Store, ctx: Context
) -> None:
    created = await create(api, authentication=OAUTH)
    expected_auth = {
        "type": "oauth2_client_credentials",
        "token_url": "https://8.8.4.4/oauth/token",
        "client_id": "relay",
        "scope": "consents:write",
        "audience": None,
        "client_auth_method": "client_secret_basic",
        "token_request_headers": {"X-Tenant": "********"},  # values are secrets
        "client_secret_set": True,
    }
    assert created["authentication"] == expected_auth
    fetched = await api.get(f"{HOOKS}/{created['id']}")
    assert fetched.json()["authentication"] == expected_auth
    for response in (fetched, await api.get(HOOKS)):
        assert CLIENT_SECRET not in response.text
    assert CLIENT_SECRET not in str(created)

    row = await stored_row(store, created["id"])
    for column, value in row.items():
        assert CLIENT_SECRET not in str(value), column
        assert created["signing_secret"] not in str(value), column
    assert ctx.box.decrypt(row["auth_secret"]) == CLIENT_SECRET
    assert ctx.box.decrypt(row["signing_secret"]) == created["signing_secret"]
    assert "client_secret" not in json.loads(row["authentication"])


async def test_patch_oauth_settings(api: httpx.AsyncClient, store: Store, ctx: Context) -> None:
    created = await create(api, authentication=OAUTH)
    hook = f"{HOOKS}/{created['id']}"

    # New settings without a secret keep the stored secret.
    no_secret = {k: v for k, v in OAUTH.items() if k != "client_secret"}
    response = await api.patch(hook, json={"authentication": {**no_secret, "scope": "other"}})
    assert response.status_code == 200, response.text
    assert response.json()["authentication"]["scope"] == "other"
    assert response.json()["authentication"]["client_secret_set"] is True
    assert ctx.box.decrypt((await stored_row(store, created["id"]))["auth_secret"]) == (
        CLIENT_SECRET
    )

    # A new secret replaces it.
    response = await api.patch(
        hook, json={"authentication": {**no_secret, "client_secret": "second-secret"}}
    )
    assert response.status_code == 200
    assert "second-secret" not in response.text
    assert ctx.box.decrypt((await stored_row(store, created["id"]))["auth_secret"]) == (
        "second-secret"
    )

    # null removes OAuth, secret included.
    response = await api.patch(hook, json={"authentication": None})
    assert response.json()["authentication"] is None
    row = await stored_row(store, created["id"])
    assert row["authentication"] is None
    assert row["auth_secret"] is None

    # OAuth again, without any secret to keep: refused.
    response = await api.patch(hook, json={"authentication": no_secret})
    assert problem_fields(response) == ["authentication.client_secret"]
    assert (await api.get(hook)).json()["authentication"] is None


async def test_rotate_secret(api: httpx.AsyncClient, store: Store, ctx: Context) -> None:
    created = await create(api)
    response = await api.post(f"{HOOKS}/{created['id']}/rotate-secret")
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert SECRET.match(rotated["signing_secret"])
    assert rotated["signing_secret"] != created["signing_secret"]
    assert without_secret(rotated) == {
        **without_secret(created),
        "updated_at": rotated["updated_at"],
    }
    assert "signing_secret" not in (await api.get(f"{HOOKS}/{created['id']}")).json()

    row = await stored_row(store, created["id"])
    assert ctx.box.decrypt(row["signing_secret"]) == rotated["signing_secret"]
    assert ctx.box.decrypt(row["previous_signing_secret"]) == created["signing_secret"]
    expires = parse_ts(row["previous_secret_expires_at"])
    expected = datetime.now(UTC) + timedelta(hours=24)
    assert abs((expires - expected).total_seconds()) < 60

    # Both sign during the overlap; only the new one after it.
    async with store.read() as tx:
        hook = await tx.get_webhook("acme", created["id"])
    assert hook is not None
    assert webhook_secrets.signing_secrets(ctx.box, hook, now_ts()) == [
        rotated["signing_secret"],
        created["signing_secret"],
    ]
    later = (expires + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert webhook_secrets.signing_secrets(ctx.box, hook, later) == [rotated["signing_secret"]]

    assert problem_fields(await api.post(f"{HOOKS}/wh_nope/rotate-secret"), 404) == []


# -- patch and delete -------------------------------------------------------------------------


async def test_patch_webhook(api: httpx.AsyncClient) -> None:
    created = await create(api)
    response = await api.patch(
        f"{HOOKS}/{created['id']}",
        json={
            "url": PUBLIC_URL,
            "enabled": False,
            "event_types": ["user.updated", "user.updated"],
            "regulations": ["cpra", "gdpr", "cpra"],
            "flatten": True,
            "headers": {"X-Env": "prod"},
            "description": "moved",
        },
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched == {
        **without_secret(created),
        "url": PUBLIC_URL,
        "enabled": False,
        "event_types": ["user.updated"],
        "regulations": ["cpra", "gdpr"],
        "flatten": True,
        "headers": {"X-Env": "********"},
        "description": "moved",
        "updated_at": patched["updated_at"],
    }
    assert patched["updated_at"] >= created["updated_at"]
    assert (await api.get(f"{HOOKS}/{created['id']}")).json() == patched

    # Fields left out stay as they are.
    again = (await api.patch(f"{HOOKS}/{created['id']}", json={"enabled": True})).json()
    assert again == {**patched, "enabled": True, "updated_at": again["updated_at"]}
    assert (await api.patch(f"{HOOKS}/{created['id']}", json={"event_types": []})).json()[
        "event_types"
    ] == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"url": None}, "url"),
        ({"enabled": None}, "enabled"),
        ({"event_types": None}, "event_types"),
        ({"regulations": None}, "regulations"),
        ({"flatten": None}, "flatten"),
        ({"headers": None}, "headers"),
        ({"url": "ftp://8.8.8.8/x"}, "url"),
        ({"url": "http://10.0.0.1/x"}, "url"),
        ({"url": "http://169.254.169.254/x"}, "url"),
        ({"event_types": ["event.exploded"]}, "event_types"),
        ({"regulations": ["nope"]}, "regulations[0]"),
        ({"regulations": []}, "regulations"),
        ({"headers": {"Authorization": "Bearer x"}, "authentication": OAUTH}, "headers"),
        ({"signing_secret": "whsec_x"}, "signing_secret"),
        ({"id": "wh_other"}, "id"),
    ],
)
async def test_invalid_patch_is_422_and_changes_nothing(
    api: httpx.AsyncClient, patch: dict[str, Any], field: str
) -> None:
    created = await create(api)
    assert problem_fields(await api.patch(f"{HOOKS}/{created['id']}", json=patch)) == [field]
    assert (await api.get(f"{HOOKS}/{created['id']}")).json() == without_secret(created)


async def test_delete_webhook(api: httpx.AsyncClient) -> None:
    kept = await create(api)
    gone = await create(api)
    response = await api.delete(f"{HOOKS}/{gone['id']}")
    assert response.status_code == 204
    assert response.content == b""
    for response in (
        await api.get(f"{HOOKS}/{gone['id']}"),
        await api.delete(f"{HOOKS}/{gone['id']}"),
        await api.patch(f"{HOOKS}/{gone['id']}", json={"enabled": False}),
        await api.post(f"{HOOKS}/{gone['id']}/rotate-secret"),
    ):
        assert problem_fields(response, 404) == []
    assert (await api.get(HOOKS)).json()["data"] == [without_secret(kept)]
