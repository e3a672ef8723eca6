"""The FastAPI application: routers merged in one place, problems, limits, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from consent_relay import __version__, crypto, gctune, runner
from consent_relay.api import (
    admin,
    deliveries,
    events,
    ledger,
    openapi,
    problems,
    system,
    users,
    webhooks,
)
from consent_relay.api.limits import BodyLimit
from consent_relay.api.observe import RequestMetrics
from consent_relay.dashboard import routes as dashboard
from consent_relay.runtime import Context, build_context
from consent_relay.settings import Settings

STATIC = Path(dashboard.__file__).parent / "static"


STARTUP_PATIENCE = 60.0  # seconds `serve` waits for its database before giving up


def create_app(
    settings: Settings,
    context: Context | None = None,
    *,
    workers: bool = False,
    own_process: bool = False,
    worker_processes: int = 1,
) -> FastAPI:
    """The API; with ``workers`` the delivery workers run in the same process (``serve``),
    one of ``worker_processes`` worker processes (``serve --worker-processes``).
    Pass ``context`` to share one with tests. ``own_process``: the app is the process's whole
    life (``serve``, ``api``), so the garbage collector is tuned for it once started
    (``gctune``); tests build many apps in one process and leave it alone."""
    ctx = context or build_context(settings)
    token, _ = crypto.admin_token(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await ctx.store.migrate_when_ready(give_up_after=STARTUP_PATIENCE)
        stop = asyncio.Event()
        background = (
            [asyncio.create_task(runner.run(ctx, stop, processes=worker_processes))]
            if workers
            else []
        )
        if own_process:
            gctune.settle()
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            if context is None:
                await ctx.store.close()

    app = FastAPI(
        title="Consent Relay",
        version=__version__,
        description="Consent events and users API with reliable webhook delivery.",
        lifespan=lifespan,
        # Off unless asked for: FastAPI otherwise asks the OpenTelemetry globals (environment
        # lookups) on every request, ~5 CPU-us a consent event for nothing without a provider.
        telemetry={"tracing": settings.otel, "metrics": settings.otel, "logs": settings.otel},
        openapi_url=None,  # the document's routes are added last (below)
    )
    app.state.context = ctx
    app.state.admin_token = token
    problems.install(app)
    errors_doc = problems.documented_errors()
    # The router tries its routes in order: the ingest route's router goes first (the admin
    # routes before it cost 5-12 CPU-us a consent event to skip: python -m bench.route_micro).
    for module in (events, users, webhooks, deliveries, ledger, admin):
        app.include_router(module.router, responses=errors_doc)
    app.include_router(system.router)
    app.include_router(dashboard.router)
    # FastAPI adds /openapi.json, /docs and /redoc when built, so before every API route:
    # added after them instead, the ingest route is the router's first match (3 CPU-us an
    # event, bench.route_micro). Same routes, same document.
    app.openapi_url = "/openapi.json"
    app.setup()
    openapi.install(app)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app


def create_app_from_env() -> FastAPI:
    """The API without workers, its settings from the environment: what each process of
    ``consent-relay api --processes N`` builds (uvicorn imports this factory by name in
    every process it starts). A process whose parent vanished stops (``processes``)."""
    from consent_relay import logs, processes

    processes.stop_with_parent()
    settings = Settings()
    logs.configure(settings)
    return create_app(settings, own_process=True)
