"""Hostile input through the HTTP API and the dashboard (SQLite and PostgreSQL): lone
surrogates and NULs in any string, bad custom headers, events dated in the future. Each gets a
4xx problem naming the field, never a 500, and nothing is stored."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from consent_relay.runtime import Context
from consent_relay.schemas import WebhookIn
from consent_relay.services import webhooks

EVENTS = "/v1/consents/events"
USERS = "/v1/consents/users"
HOOKS = "/v1/webhooks"
URL = "http://127.0.0.1:9/hook"
OAUTH = {
    "token_url": "http://127.0.0.1:9/token",
    "client_id": "relay",
    "client_secret": "s3cret",
}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def problem_fields(response: httpx.Response, status: int = 422) -> list[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data: dict[str, Any] = response.json()
    assert data["status"] == status
    return [error["field"] for error in data.get("errors", [])]


async def count(api: httpx.AsyncClient, path: str) -> int:
    response = await api.get(path)
    assert response.status_code == 200, response.text
    return len(response.json()["data"])


async def create_hook(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post(HOOKS, json={"url": URL, **fields})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


# -- lone surrogates and NULs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            b'{"user": {"id": "u"}, "consents": {"purposes": [{"id": "p", '
            b'"values": {"x": {"value": "\\ud800"}}}]}}',
            "consents.purposes[0].values.x.value",
        ),
        (b'{"user": {"id": "u\\udfff"}}', "user.id"),
        (b'{"user": {"id": "u"}, "consents": {"tcfcs": "\\ud800"}}', "consents.tcfcs"),
        (b'{"user": {"id": "u"}, "regulation": "\\ud800"}', "regulation"),
        (b'{"user": {"id": "u"}, "\\ud800": 1}', "\\ud800"),
        (b'{"user": {"id": "u"}, "proofs_id": ["a", "\\ud800"]}', "proofs_id[1]"),
    ],
)
async def test_lone_surrogates_in_events_are_422(
    api: httpx.AsyncClient, raw: bytes, field: str
) -> None:
    assert problem_fields(await api.post(EVENTS, content=raw)) == [field]
    assert await count(api, EVENTS) == 0


async def test_lone_surrogates_and_nul_in_users_are_422(api: httpx.AsyncClient) -> None:
    raw = b'{"organization_user_id": "\\ud800"}'
    assert problem_fields(await api.post(USERS, content=raw)) == ["organization_user_id"]
    assert problem_fields(await api.post(USERS, json={"country": "F\x00"})) == ["country"]
    assert await count(api, USERS) == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"url": "%s", "headers": {"X-A": "\\ud800"}}', "headers.X-A"),
        (b'{"url": "%s", "headers": {"X-\\ud800": "v"}}', "headers.X-\\ud800"),
        (b'{"url": "%s", "description": "\\udfff"}', "description"),
        (b'{"url": "%s\\ud800"}', "url"),
    ],
)
async def test_lone_surrogates_in_webhooks_are_422(
    api: httpx.AsyncClient, raw: bytes, field: str
) -> None:
    body = raw.replace(b"%s", URL.encode())
    assert problem_fields(await api.post(HOOKS, content=body)) == [field]
    assert await count(api, HOOKS) == 0
    hook = await create_hook(api)
    patch = body.replace(b'"url": "' + URL.encode() + b'", ', b"")
    if patch != body:
        response = await api.patch(f"{HOOKS}/{hook['id']}", content=patch)
        assert problem_fields(response) == [field]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"delivery_ids": ["dlv_1", "\\ud800"]}', "delivery_ids[1]"),
        (b'{"delivery_ids": ["dlv_\\u0000"]}', "delivery_ids[0]"),
        (b'{"since": "\\ud800"}', "since"),
        (b'{"until": "2026-01-01T00:00:00\\u0000"}', "until"),
        (b'{"since": "not a time"}', "since"),
    ],
)
async def test_hostile_replay_bodies_are_422(
    api: httpx.AsyncClient, raw: bytes, field: str
) -> None:
    hook = await create_hook(api)
    response = await api.post(f"{HOOKS}/{hook['id']}/dead-letters/replay", content=raw)
    assert problem_fields(response) == [field]


async def test_replay_by_time_range_still_works(api: httpx.AsyncClient) -> None:
    hook = await create_hook(api)
    response = await api.post(
        f"{HOOKS}/{hook['id']}/dead-letters/replay",
        json={"since": "2026-01-01T00:00:00Z", "until": "2026-01-02T00:00:00+02:00"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"replayed": 0}


async def sign_in(client: httpx.AsyncClient, api_key: str) -> str:
    """Signs ``client`` in to the dashboard; the session's CSRF token."""
    login = await client.get("/dashboard/login")
    signed = await client.post(
        "/dashboard/login",
        data={"csrf_token": CSRF.findall(login.text)[0], "api_key": api_key},
    )
    assert signed.status_code == 303
    return str(CSRF.findall((await client.get("/dashboard")).text)[0])


async def test_nul_in_the_dashboard_replay_form_is_422(
    client: httpx.AsyncClient, org: tuple[str, str], ctx: Context
) -> None:
    hook = await webhooks.create_webhook(ctx, "acme", WebhookIn.model_validate({"url": URL}))
    csrf = await sign_in(client, org[1])
    response = await client.post(
        f"/dashboard/webhooks/{hook['id']}/replay",
        data={"csrf_token": csrf, "delivery_id": "dlv_\x00x"},
    )
    assert response.status_code == 422, response.text
    assert "delivery_id" in response.text
    assert "NUL" in response.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"description": "a\x00b"}, "description"),
        ({"header_name": ["X-Env"], "header_value": ["a\x00"]}, "headers"),
        ({"header_name": ["X-Env"], "header_value": ["bell\x07"]}, "headers"),
        ({"header_name": ["Keep-Alive"], "header_value": ["x"]}, "headers"),
    ],
)
async def test_hostile_dashboard_webhook_forms_are_422(
    client: httpx.AsyncClient, org: tuple[str, str], fields: dict[str, Any], field: str
) -> None:
    csrf = await sign_in(client, org[1])
    form = {"csrf_token": csrf, "url": URL, "regulations": ["gdpr"], **fields}
    response = await client.post("/dashboard/webhooks", data=form)
    assert response.status_code == 422, response.text
    assert f'data-testid="error-{field}"' in response.text
    api = await client.get(HOOKS, headers={"Authorization": f"Bearer {org[1]}"})
    assert api.json()["data"] == []


# -- custom headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A\n": "v"},
        {"X-A": "bell\x07"},
        {"X-A": "caf\u00e9"},
        {"Content-Length": "0"},
        {"Transfer-Encoding": "chunked"},
        {"Content-Encoding": "gzip"},
        {"Keep-Alive": "timeout=5"},
        {"Trailer": "X-A"},
        {"webhook-extra": "x"},
        {f"X-{i}": "v" * 4096 for i in range(50)},
    ],
)
async def test_bad_custom_headers_are_422(api: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await api.post(HOOKS, json={"url": URL, "headers": headers})
    assert problem_fields(response) == ["headers"]
    hook = await create_hook(api)
    patched = await api.patch(f"{HOOKS}/{hook['id']}", json={"headers": headers})
    assert problem_fields(patched) == ["headers"]
    token = {**OAUTH, "token_request_headers": headers}
    oauth = await api.post(HOOKS, json={"url": URL, "authentication": token})
    assert problem_fields(oauth) == ["authentication.token_request_headers"]


async def test_authorization_header_only_without_oauth(api: httpx.AsyncClient) -> None:
    static = {"Authorization": "Bearer static-token"}
    hook = await create_hook(api, headers=static)
    assert list(hook["headers"]) == ["Authorization"]
    both = await api.post(HOOKS, json={"url": URL, "headers": static, "authentication": OAUTH})
    assert problem_fields(both) == ["headers"]
    patch = await api.patch(
        f"{HOOKS}/{hook['id']}", json={"headers": static, "authentication": OAUTH}
    )
    assert problem_fields(patch) == ["headers"]


async def test_a_patch_is_checked_against_the_stored_webhook(api: httpx.AsyncClient) -> None:
    """Only headers to a webhook with OAuth, or only OAuth to one with an Authorization
    header: each half alone is fine, together with what is stored they are not."""
    static = {"Authorization": "Bearer static-token"}
    with_header = await create_hook(api, headers=static)
    oauth_only = await api.patch(f"{HOOKS}/{with_header['id']}", json={"authentication": OAUTH})
    assert problem_fields(oauth_only) == ["authentication"]
    with_oauth = (await api.post(HOOKS, json={"url": URL, "authentication": OAUTH})).json()
    headers_only = await api.patch(f"{HOOKS}/{with_oauth['id']}", json={"headers": static})
    assert problem_fields(headers_only) == ["headers"]
    # Nothing was changed by the refused patches.
    assert (await api.get(f"{HOOKS}/{with_header['id']}")).json()["authentication"] is None
    assert (await api.get(f"{HOOKS}/{with_oauth['id']}")).json()["headers"] == {}
    # Dropping OAuth and adding the header in one patch is fine.
    swapped = await api.patch(
        f"{HOOKS}/{with_oauth['id']}", json={"headers": static, "authentication": None}
    )
    assert swapped.status_code == 200, swapped.text


# -- created_at -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created_at", "status"),
    [
        ("2099-01-01T00:00:00Z", 422),
        (timedelta(minutes=6), 422),  # from now, when the request is made
        (timedelta(minutes=4), 201),
        ("2024-01-01T00:00:00Z", 201),
    ],
)
async def test_created_at_in_the_future_is_422(
    api: httpx.AsyncClient, created_at: str | timedelta, status: int
) -> None:
    if isinstance(created_at, timedelta):
        created_at = (datetime.now(UTC) + created_at).isoformat()
    response = await api.post(EVENTS, json={"user": {"id": "u"}, "created_at": created_at})
    if status == 422:
        assert problem_fields(response) == ["created_at"]
        assert await count(api, EVENTS) == 0
    else:
        assert response.status_code == 201, response.text


async def test_a_future_event_cannot_freeze_consent(api: httpx.AsyncClient) -> None:
    """The finding: an event dated 2099 sorted after every later withdrawal. It is refused,
    so the withdrawal sent now decides the user's consent."""
    consent = {"purposes": [{"id": "marketing", "enabled": True}]}
    future = {"user": {"id": "u"}, "consents": consent, "created_at": "2099-01-01T00:00:00Z"}
    assert problem_fields(await api.post(EVENTS, json=future)) == ["created_at"]
    withdraw = {
        "user": {"id": "u"},
        "consents": {"purposes": [{"id": "marketing", "enabled": False}]},
    }
    assert (await api.post(EVENTS, json=withdraw)).status_code == 201
    user = (await api.get(f"{USERS}/u")).json()
    assert "enabled" in str(user["consents"])
    assert user["consents"]["purposes"][0]["enabled"] is False
