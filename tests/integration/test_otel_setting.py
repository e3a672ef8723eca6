"""``CONSENT_RELAY_OTEL``: FastAPI's native OpenTelemetry runs only when asked for.

Off (the default), a request never consults the OpenTelemetry globals (FastAPI would otherwise
look up the providers, environment included, on every request). On, FastAPI's telemetry asks
for the global providers, so a configured OpenTelemetry SDK receives the request's telemetry.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry import trace

from consent_relay.api.app import create_app
from consent_relay.settings import Settings


async def _provider_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, otel: bool | None
) -> int:
    calls = 0
    real = trace.get_tracer_provider

    def counting() -> trace.TracerProvider:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(trace, "get_tracer_provider", counting)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'otel.db'}",
        admin_token="test-admin-token",
    )
    if otel is not None:
        settings = settings.model_copy(update={"otel": otel})
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://relay.test"
        ) as http,
    ):
        before = calls
        for _ in range(3):
            assert (await http.get("/healthz")).status_code == 200
        return calls - before


@pytest.mark.parametrize("otel", [None, False])
async def test_off_by_default_no_lookup_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, otel: bool | None
) -> None:
    assert await _provider_lookups(tmp_path, monkeypatch, otel=otel) == 0


async def test_on_fastapi_telemetry_asks_the_global_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await _provider_lookups(tmp_path, monkeypatch, otel=True) >= 3


def test_the_environment_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_RELAY_OTEL", "true")
    assert Settings().otel is True
