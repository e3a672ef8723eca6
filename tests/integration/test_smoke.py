from __future__ import annotations

import httpx


async def test_create_event_queues_nothing_without_webhooks(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/consents/events", json={"user": {"organization_user_id": "jane@example.com"}}
    )
    assert response.status_code == 201, response.text
    assert response.json()["user"]["organization_user_id"] == "jane@example.com"
