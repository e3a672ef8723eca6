"""The lean route (api/lean.py) answers exactly as FastAPI's own handler does.

``POST /v1/consents/events`` is a ``LeanRoute``. The same endpoint is mounted beside it on a
plain ``APIRoute``, and the same table of requests, valid and not, goes to both: statuses,
problem bodies and headers must match (no 500 among them); a created event has the same
shape."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from consent_relay.api import deps, events
from consent_relay.api.app import create_app
from consent_relay.api.lean import LeanRoute
from consent_relay.runtime import Context
from consent_relay.services.views import EventOut
from consent_relay.settings import Settings

LEAN = "/v1/consents/events"
PLAIN = "/v1/consents/events-plain"
GOOD = b'{"user": {"organization_user_id": "jane@example.com"}, "consents": {}}'

# (name, query, body, content type, authorized)
CASES: list[tuple[str, str, bytes, str | None, bool]] = [
    ("valid", "", GOOD, "application/json", True),
    ("valid, quiet", "?$disable_integrations=true", GOOD, "application/json", True),
    ("valid, not quiet", "?$disable_integrations=0", GOOD, "application/json", True),
    ("valid, text/plain", "", GOOD, "text/plain", True),
    ("valid, no content type", "", GOOD, None, True),
    ("no key", "", GOOD, "application/json", False),
    ("invalid JSON, no key", "", b"{nope", "application/json", False),
    ("invalid JSON", "", b'{"user": ', "application/json", True),
    ("not UTF-8", "", b'{"user": "\xff\xfe"}', "application/json", True),
    ("nested too deep", "", b"[" * 100_000 + b"]" * 100_000, "application/json", True),
    ("empty body", "", b"", "application/json", True),
    ("null", "", b"null", "application/json", True),
    ("a list", "", b"[]", "application/json", True),
    ("a string", "", b'"x"', "application/json", True),
    ("unknown field", "", b'{"user": {"id": "u"}, "colour": 1}', "application/json", True),
    ("no user", "", b'{"consents": {}}', "application/json", True),
    ("bad status", "", b'{"user": {"id": "u"}, "status": "maybe"}', "application/json", True),
    ("NUL", "", b'{"user": {"id": "u\\u0000"}}', "application/json", True),
    ("lone surrogate", "", b'{"user": {"id": "\\ud800"}}', "application/json", True),
    ("NaN", "", b'{"user": {"id": "u"}, "metadata": {"x": NaN}}', "application/json", True),
    ("future", "", b'{"user": {"id": "u"}, "created_at": "2999-01-01T00:00:00Z"}', None, True),
    ("bad flag", "?$disable_integrations=maybe", GOOD, "application/json", True),
    ("bad flag, bad body", "?$disable_integrations=maybe", b"{}", "application/json", True),
    ("bad flag, no key", "?$disable_integrations=maybe", b"{}", "application/json", False),
    ("repeated flag", "?$disable_integrations=no&$disable_integrations=yes", GOOD, None, True),
]


@pytest.fixture
async def both(
    settings: Settings, ctx: Context, org: tuple[str, str]
) -> tuple[httpx.AsyncClient, str]:
    app = create_app(settings, ctx)
    app.router.add_api_route(
        PLAIN,
        events.create_event,
        methods=["POST"],
        status_code=201,
        response_class=deps.JSONOut,
        response_model=EventOut,
    )
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://relay.test"), org[1]


def test_the_ingest_route_is_lean() -> None:
    [route] = [
        r
        for r in events.router.routes
        if isinstance(r, APIRoute) and r.path == LEAN and "POST" in (r.methods or ())
    ]
    assert isinstance(route, LeanRoute)


async def test_lean_answers_as_fastapi_does(both: tuple[httpx.AsyncClient, str]) -> None:
    client, key = both
    differences = []
    async with client:
        for name, query, raw, content_type, authorized in CASES:
            headers = {"Authorization": f"Bearer {key}"} if authorized else {}
            if content_type is not None:
                headers["Content-Type"] = content_type
            lean = await client.post(LEAN + query, content=raw, headers=headers)
            plain = await client.post(PLAIN + query, content=raw, headers=headers)
            if _answer(lean) != _answer(plain) or lean.status_code >= 500:
                differences.append((name, _answer(lean), _answer(plain)))
    assert differences == []


def _answer(response: httpx.Response) -> tuple[Any, ...]:
    """Status, the headers that matter, and the body (a created event: its shape)."""
    body = response.json()
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
        _shape(body) if response.status_code == 201 else body,
    )


def _shape(event: dict[str, Any]) -> dict[str, Any]:
    """What two events created from the same body share (not ids or times)."""
    return {
        "keys": sorted(event),
        "status": event["status"],
        "consents": event["consents"],
        "user": event["user"].get("organization_user_id"),
    }


# -- routes a lean route refuses when it is built --------------------------------------------


async def _path(item_id: str) -> deps.JSONOut:
    return deps.JSONOut({"id": item_id})


def _sync(ctx: deps.Ctx) -> deps.JSONOut:
    return deps.JSONOut({})


async def _foreign(value: Annotated[str, Depends(lambda: "x")]) -> deps.JSONOut:
    return deps.JSONOut({"value": value})


@pytest.mark.parametrize(
    ("path", "endpoint", "refusal"),
    [
        ("/items/{item_id}", _path, "query parameters and a body only"),
        ("/sync", _sync, "async function"),
        ("/foreign", _foreign, "no lean resolver"),
    ],
)
def test_a_lean_route_refuses_what_it_cannot_solve(path: str, endpoint: Any, refusal: str) -> None:
    router = APIRouter()
    with pytest.raises(TypeError, match=refusal):
        router.add_api_route(path, endpoint, route_class_override=deps.LeanRoute)
    FastAPI().router.add_api_route(path, endpoint)  # FastAPI's own route takes each
