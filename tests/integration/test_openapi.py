"""The OpenAPI document: every route documents its error answers; inputs carry examples."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.routing import Match

from consent_relay.api.app import create_app
from consent_relay.settings import Settings


async def test_every_api_route_documents_problem_answers(client: httpx.AsyncClient) -> None:
    document: dict[str, Any] = (await client.get("/openapi.json")).json()
    routes = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        if path.startswith("/v1/") and path != "/v1/egress"  # public, never fails
        for method, operation in methods.items()
    ]
    assert len(routes) >= 20
    for path, method, operation in routes:
        for status in ("401", "404", "422", "503"):
            answer = operation["responses"].get(status)
            assert answer is not None, (path, method, status)
            assert "application/problem+json" in answer["content"], (path, method, status)


async def test_inputs_carry_examples(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for name in ("EventIn", "EventPatch", "UserIn", "WebhookIn", "OrganizationIn"):
        assert schemas[name]["examples"], name


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "openapi.json" in response.text


async def test_redoc_and_the_oauth_redirect_are_served(client: httpx.AsyncClient) -> None:
    """The document's routes are added after the API's (api/app.py), all of them."""
    assert (await client.get("/redoc")).status_code == 200
    assert (await client.get("/docs/oauth2-redirect")).status_code == 200


def test_the_ingest_route_is_the_routers_first_match(settings: Settings) -> None:
    """The router tries routes in order; the ingest route's router comes first, before the
    document's routes and every other API router (measured: bench.route_micro)."""
    app = create_app(settings)
    scope = {"type": "http", "method": "POST", "path": "/v1/consents/events", "root_path": ""}
    first = app.router.routes[0]
    assert first.matches(scope)[0] is Match.FULL
