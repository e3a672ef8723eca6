"""Authentication, organizations, isolation between them, and the system endpoints."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.runtime import Context
from consent_relay.services import orgs
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from consent_relay.storage.store import Store

ADMIN = "test-admin-token"
ORGS = "/v1/admin/organizations"
EVENTS = "/v1/consents/events"
USERS = "/v1/consents/users"
HOOKS = "/v1/webhooks"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _json(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data = _json(response)
    assert data["status"] == status
    assert data["title"]
    assert data["detail"]
    return data


def assert_unauthorized(response: httpx.Response) -> None:
    data = assert_problem(response, 401)
    assert data["title"] == "Unauthorized"
    assert data["type"] == "https://consent-relay.dev/problems/unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def new_org(client: httpx.AsyncClient, org_id: str, name: str = "") -> str:
    payload = {"id": org_id, "name": name} if name else {"id": org_id}
    response = await client.post(ORGS, json=payload, headers=bearer(ADMIN))
    assert response.status_code == 201, response.text
    return str(response.json()["api_key"])


# -- API keys ---------------------------------------------------------------------------------

PROTECTED = [
    ("GET", EVENTS),
    ("POST", EVENTS),
    ("GET", f"{EVENTS}/some-id"),
    ("PATCH", f"{EVENTS}/some-id"),
    ("DELETE", f"{EVENTS}/some-id"),
    ("GET", USERS),
    ("POST", USERS),
    ("GET", f"{USERS}/some-id"),
    ("PATCH", f"{USERS}/some-id"),
    ("DELETE", f"{USERS}/some-id"),
    ("GET", HOOKS),
    ("POST", HOOKS),
    ("GET", f"{HOOKS}/wh_x"),
    ("PATCH", f"{HOOKS}/wh_x"),
    ("DELETE", f"{HOOKS}/wh_x"),
    ("POST", f"{HOOKS}/wh_x/rotate-secret"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_missing_key_is_401(
    client: httpx.AsyncClient, org: tuple[str, str], method: str, path: str
) -> None:
    body = {"user": {"id": "u"}} if method in ("POST", "PATCH") else None
    assert_unauthorized(await client.request(method, path, json=body))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer crk_not-a-key",
        "Bearer ",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Token {key}",
        "{key}",
        "Bearer {key}x",
        f"Bearer {ADMIN}",
    ],
)
async def test_wrong_key_is_401(
    client: httpx.AsyncClient, org: tuple[str, str], store: Store, authorization: str
) -> None:
    headers = {"Authorization": authorization.format(key=org[1])}
    assert_unauthorized(await client.get(EVENTS, headers=headers))
    assert_unauthorized(await client.post(EVENTS, json={"user": {"id": "u"}}, headers=headers))
    async with store.read() as tx:
        assert await tx.count_rows("events") == 0


async def test_valid_key_works_with_any_scheme_case(
    client: httpx.AsyncClient, org: tuple[str, str]
) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = await client.get(EVENTS, headers={"Authorization": f"{scheme} {org[1]}"})
        assert response.status_code == 200, response.text


# -- organizations (admin) --------------------------------------------------------------------


async def test_create_organization_returns_a_working_key(
    client: httpx.AsyncClient, store: Store
) -> None:
    response = await client.post(
        ORGS, json={"id": "beta", "name": "Beta Corp"}, headers=bearer(ADMIN)
    )
    assert response.status_code == 201, response.text
    data = response.json()
    assert set(data) == {"organization", "api_key"}
    assert data["organization"] == {
        "id": "beta",
        "name": "Beta Corp",
        "created_at": data["organization"]["created_at"],
    }
    assert TIMESTAMP.match(data["organization"]["created_at"])
    key = data["api_key"]
    assert key.startswith("crk_")
    assert len(key) > 30

    works = await client.get(HOOKS, headers=bearer(key))
    assert works.status_code == 200
    assert works.json() == {"data": [], "next_cursor": None}
    event = await client.post(EVENTS, json={"user": {"id": "u1"}}, headers=bearer(key))
    assert event.status_code == 201
    assert event.json()["organization_id"] == "beta"

    # Only a hash of the key is stored.
    async with store.read() as tx:
        rows = await inspect.rows(tx, "api_keys")
    assert [row["organization_id"] for row in rows] == ["beta"]
    assert key not in str(dict(rows[0]))
    assert rows[0]["key_hash"] == crypto.hash_key(key)


async def test_organization_name_defaults_to_its_id(client: httpx.AsyncClient) -> None:
    response = await client.post(ORGS, json={"id": "gamma"}, headers=bearer(ADMIN))
    assert response.status_code == 201
    assert response.json()["organization"]["name"] == "gamma"


async def test_duplicate_organization_is_409(
    client: httpx.AsyncClient, org: tuple[str, str]
) -> None:
    response = await client.post(ORGS, json={"id": "acme"}, headers=bearer(ADMIN))
    data = assert_problem(response, 409)
    assert [error["field"] for error in data["errors"]] == ["id"]
    # The first key still works, and no second key was made.
    assert (await client.get(EVENTS, headers=bearer(org[1]))).status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "id"),
        ({"id": ""}, "id"),
        ({"id": "Has Spaces"}, "id"),
        ({"id": "-leading"}, "id"),
        ({"id": "a" * 65}, "id"),
        ({"id": "ok", "plan": "gold"}, "plan"),
        ({"id": "ok", "name": "\x00"}, "name"),
    ],
)
async def test_invalid_organization_is_422(
    client: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    data = assert_problem(await client.post(ORGS, json=payload, headers=bearer(ADMIN)), 422)
    assert [error["field"] for error in data["errors"]] == [field]


async def test_admin_routes_need_the_admin_token(
    client: httpx.AsyncClient, org: tuple[str, str]
) -> None:
    for headers in ({}, bearer(org[1]), bearer("wrong"), bearer(ADMIN + "x")):
        assert_unauthorized(await client.post(ORGS, json={"id": "beta"}, headers=headers))
        assert_unauthorized(await client.get(ORGS, headers=headers))
    # Nothing was created by the refused requests.
    listed = await client.get(ORGS, headers=bearer(ADMIN))
    assert listed.status_code == 200
    assert [o["id"] for o in listed.json()["data"]] == ["acme"]
    assert listed.json()["next_cursor"] is None


async def test_list_organizations(client: httpx.AsyncClient, org: tuple[str, str]) -> None:
    await new_org(client, "beta", "Beta")
    listed = (await client.get(ORGS, headers=bearer(ADMIN))).json()
    assert [(o["id"], o["name"]) for o in listed["data"]] == [("acme", "Acme"), ("beta", "Beta")]
    assert "api_key" not in str(listed)


# -- isolation between organizations ----------------------------------------------------------


async def test_another_organizations_ids_answer_404(
    api: httpx.AsyncClient, client: httpx.AsyncClient, store: Store
) -> None:
    event = (
        await api.post(EVENTS, json={"id": "evt-1", "user": {"organization_user_id": "jane"}})
    ).json()
    user = (await api.get(f"{USERS}/{event['user']['id']}")).json()
    hook = (await api.post(HOOKS, json={"url": "http://127.0.0.1:9/acme"})).json()
    hook.pop("signing_secret")

    beta = bearer(await new_org(client, "beta"))
    for method, path, body in (
        ("GET", f"{EVENTS}/evt-1", None),
        ("PATCH", f"{EVENTS}/evt-1", {"metadata": {"x": 1}}),
        ("DELETE", f"{EVENTS}/evt-1", None),
        ("GET", f"{USERS}/{user['id']}", None),
        ("PATCH", f"{USERS}/{user['id']}", {"metadata": {"x": 1}}),
        ("DELETE", f"{USERS}/{user['id']}", None),
        ("GET", f"{HOOKS}/{hook['id']}", None),
        ("PATCH", f"{HOOKS}/{hook['id']}", {"enabled": False}),
        ("DELETE", f"{HOOKS}/{hook['id']}", None),
        ("POST", f"{HOOKS}/{hook['id']}/rotate-secret", None),
    ):
        response = await client.request(method, path, json=body, headers=beta)
        assert_problem(response, 404)

    empty: dict[str, Any] = {"data": [], "next_cursor": None}
    assert (await client.get(EVENTS, headers=beta)).json() == empty
    assert (await client.get(EVENTS, params={"user_id": user["id"]}, headers=beta)).json() == (
        empty
    )
    assert (
        await client.get(EVENTS, params={"organization_user_id": "jane"}, headers=beta)
    ).json() == empty
    assert (await client.get(USERS, headers=beta)).json() == empty
    assert (await client.get(HOOKS, headers=beta)).json() == empty

    # acme's data is untouched.
    assert (await api.get(f"{EVENTS}/evt-1")).json() == event
    assert (await api.get(f"{USERS}/{user['id']}")).json() == user
    assert (await api.get(f"{HOOKS}/{hook['id']}")).json() == hook


async def test_organizations_have_their_own_id_spaces(
    api: httpx.AsyncClient, client: httpx.AsyncClient, store: Store
) -> None:
    acme_hook = (await api.post(HOOKS, json={"url": "http://127.0.0.1:9/acme"})).json()["id"]
    acme_event = (
        await api.post(
            EVENTS, json={"id": "evt-1", "user": {"id": "u1", "organization_user_id": "jane"}}
        )
    ).json()

    beta = bearer(await new_org(client, "beta"))
    beta_hook = (
        await client.post(HOOKS, json={"url": "http://127.0.0.1:9/beta"}, headers=beta)
    ).json()["id"]
    response = await client.post(
        EVENTS,
        json={"id": "evt-1", "user": {"id": "u1", "organization_user_id": "jane"}},
        headers=beta,
    )
    assert response.status_code == 201, response.text
    beta_event = response.json()
    assert beta_event["organization_id"] == "beta"
    assert beta_event["user"]["id"] == "u1"
    assert (await client.get(f"{USERS}/u1", headers=beta)).json()["organization_id"] == "beta"
    assert (await api.get(f"{EVENTS}/evt-1")).json() == acme_event

    # Each organization's changes reach only its own webhooks.
    async with store.read() as tx:
        rows = await inspect.rows(tx, "deliveries")
    by_org = {(row["organization_id"], row["webhook_id"]) for row in rows}
    assert by_org == {("acme", acme_hook), ("beta", beta_hook)}
    assert len(rows) == 4


# -- system endpoints -------------------------------------------------------------------------


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_egress_addresses(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/egress")
    assert response.status_code == 200
    assert response.json() == {"ip_addresses": []}


async def test_egress_addresses_are_the_published_ones(settings: Settings, store: Store) -> None:
    published = settings.model_copy(update={"egress_ips": ["203.0.113.7", "2001:db8::7"]})
    ctx = Context(settings=published, store=store, box=crypto.SecretBox([published.secret_key]))
    transport = httpx.ASGITransport(app=create_app(published, ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://relay.test") as http:
        response = await http.get("/v1/egress")
    assert response.json() == {"ip_addresses": ["203.0.113.7", "2001:db8::7"]}


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Consent Relay"
    paths = document["paths"]
    for path, methods in {
        "/v1/admin/organizations": {"post"},
        "/v1/consents/events": {"get", "post"},
        "/v1/consents/events/{event_id}": {"get", "patch", "delete"},
        "/v1/consents/users": {"get", "post"},
        "/v1/consents/users/{user_id}": {"get", "patch", "delete"},
        "/v1/webhooks": {"get", "post"},
        "/v1/webhooks/{webhook_id}": {"get", "patch", "delete"},
        "/v1/webhooks/{webhook_id}/rotate-secret": {"post"},
        "/v1/egress": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    parameters = paths["/v1/consents/events"]["post"]["parameters"]
    assert "$disable_integrations" in {p["name"] for p in parameters}


async def test_unknown_route_and_method_are_problems(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v1/nothing-here"), 404)
    assert_problem(await api.put(EVENTS, json={}), 405)


async def test_a_revoked_key_stops_at_once_despite_the_key_cache(
    api: httpx.AsyncClient, ctx: Context, org: tuple[str, str]
) -> None:
    assert (await api.get("/v1/webhooks")).status_code == 200  # the key is now cached
    [key] = await orgs.list_keys(ctx, org[0])
    await orgs.revoke_key(ctx, key["id"])
    response = await api.get("/v1/webhooks")
    assert response.status_code == 401
