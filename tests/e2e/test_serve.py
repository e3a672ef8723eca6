"""``consent-relay serve`` as a real process: API and in-process worker deliver an event
end to end; SIGTERM stops it cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from consent_relay import crypto
from consent_relay.settings import Settings
from tests.e2e.helpers import (
    Process,
    consent_event,
    free_port,
    process_env,
    wait_healthy,
)
from tests.receiver import Receiver

ADMIN_TOKEN = "e2e-admin-token"


async def test_serve_delivers_and_stops_on_sigterm(tmp_path: Path, receiver: Receiver) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'serve.db'}",
        admin_token=ADMIN_TOKEN,
        secret_key=crypto.new_key(),
    )
    port = free_port()
    server = Process(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        process_env(settings, CONSENT_RELAY_LOG_LEVEL="INFO"),
        tmp_path / "serve.log",
    ).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            await wait_healthy(http, server)
            assert (await http.get("/healthz")).json() == {"status": "ok"}

            refused = await http.post(
                "/v1/admin/organizations",
                json={"id": "acme", "name": "Acme"},
                headers={"Authorization": "Bearer not-the-token"},
            )
            assert refused.status_code == 401
            response = await http.post(
                "/v1/admin/organizations",
                json={"id": "acme", "name": "Acme"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert response.status_code == 201, response.text
            http.headers["Authorization"] = f"Bearer {response.json()['api_key']}"

            response = await http.post("/v1/webhooks", json={"url": receiver.url("/serve")})
            assert response.status_code == 201, response.text
            secret = response.json()["signing_secret"]
            response = await http.post(
                "/v1/consents/events", json=consent_event("serve@example.com", "email", True)
            )
            assert response.status_code == 201, response.text
            event = response.json()

            await receiver.wait_for(2, path="/serve", timeout=30)

        received = receiver.at("/serve")
        assert [item.json["type"] for item in received] == ["event.created", "user.created"]
        assert received[0].json["parameters"]["entity"] == event
        for item in received:
            Webhook(secret).verify(item.body, item.headers)

        stopping = time.monotonic()
        code = await server.terminate(within=10)
        assert time.monotonic() - stopping < 10
        assert "Application shutdown complete" in server.output()  # graceful: lifespan ran
        assert code == 0, f"exit status {code}:\n{server.output()}"
    finally:
        if server.alive():
            await server.kill()
