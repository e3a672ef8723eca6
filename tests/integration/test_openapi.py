"""The OpenAPI document: every route documents its error answers; inputs carry examples."""

from __future__ import annotations

from typing import Any

import httpx


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
