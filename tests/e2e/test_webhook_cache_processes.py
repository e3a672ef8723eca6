"""The webhook cache across real processes: two ``consent-relay api`` processes on one
PostgreSQL, each with its own port. Process A takes the writes (users on the outbox path,
consent events on the write path) and so keeps the organization's webhooks in memory;
process B creates, changes and deletes webhooks. Each write A answers after B's change fans
out exactly to the webhooks as they are after it (deliveries read through storage)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs
from consent_relay.settings import Settings
from consent_relay.storage import deliveries
from tests.conftest import _session_database_url
from tests.e2e.helpers import Process, free_port, process_env, wait_healthy


@pytest.fixture(params=["postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only: SQLite serves one process."""
    return _session_database_url()


@contextlib.asynccontextmanager
async def api_process(
    settings: Settings, tmp_path: Path, name: str, key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """One API process on a port of its own, and a client signed in to it."""
    port = free_port()
    server = Process(
        ["api", "--host", "127.0.0.1", "--port", str(port)],
        process_env(settings),
        tmp_path / f"{name}.log",
    ).start()
    try:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
            await wait_healthy(http, server)
            yield http
    finally:
        if server.alive():
            await server.terminate(within=30)


async def _call(http: httpx.AsyncClient, method: str, path: str, **json: Any) -> Any:
    response = await http.request(method, path, json=json or None)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


async def test_a_process_fans_out_per_webhook_changes_made_by_another(
    settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    key = (await orgs.create_organization(ctx, OrganizationIn(id="acme", name="Acme")))["api_key"]
    seen: list[str] = []  # every webhook ever created

    async def fanned_out_to(user_id: str) -> set[str]:
        found = set()
        async with ctx.store.read() as tx:
            for hook_id in seen:
                rows = await deliveries.list_for_webhook(
                    tx, hook_id, status=None, after_pk=0, limit=1000
                )
                if any(row.user_id == user_id for row in rows):
                    found.add(hook_id)
        return found

    async with (
        api_process(settings, tmp_path, "a", key) as a,
        api_process(settings, tmp_path, "b", key) as b,
    ):

        async def step(n: int, expected: set[str]) -> None:
            await _call(a, "POST", "/v1/consents/users", id=f"user{n}")
            event = {"user": {"id": f"ev{n}"}, "consents": {"purposes": [{"id": "ads"}]}}
            await _call(a, "POST", "/v1/consents/events", **event)
            assert await fanned_out_to(f"user{n}") == expected, "outbox path"
            assert await fanned_out_to(f"ev{n}") == expected, "write path"

        async def create(n: int) -> str:
            hook_id: str = (await _call(b, "POST", "/v1/webhooks", url=f"http://127.0.0.1:9/{n}"))[
                "id"
            ]
            seen.append(hook_id)
            return hook_id

        await step(0, set())  # A keeps the organization's (empty) list
        first = await create(1)
        await step(1, {first})
        second = await create(2)
        await step(2, {first, second})
        await _call(b, "PATCH", f"/v1/webhooks/{first}", regulations=["ccpa"])
        await step(3, {second})
        await _call(b, "DELETE", f"/v1/webhooks/{second}")
        await step(4, set())
        await _call(b, "PATCH", f"/v1/webhooks/{first}", regulations=["gdpr"])
        await step(5, {first})
