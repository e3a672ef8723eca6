"""Health, readiness and the published egress addresses."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from consent_relay import errors, metrics
from consent_relay.api.deps import Ctx, JSONOut
from consent_relay.api.problems import problem

router = APIRouter(tags=["system"])


@router.get("/healthz", response_class=JSONOut)
async def healthz() -> JSONOut:
    """The process is up."""
    return JSONOut({"status": "ok"})


@router.get("/readyz", response_class=JSONOut, response_model=None)
async def readyz(ctx: Ctx) -> object:
    """The database answers."""
    if await ctx.store.ping():
        return JSONOut({"status": "ready"})
    return problem(503, "Service unavailable", "The database does not answer.")


@router.get("/metrics", include_in_schema=True, response_model=None)
async def metrics_endpoint(ctx: Ctx) -> Response:
    """Prometheus metrics of this process, plus per-webhook queue figures from the database."""
    with contextlib.suppress(errors.StorageUnavailable):
        await metrics.refresh_queue_gauges(ctx.store, ctx.clock_ms(), ctx.box)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/egress", response_class=JSONOut)
async def egress(ctx: Ctx) -> JSONOut:
    """The addresses deliveries come from, for receivers' allow-lists."""
    return JSONOut({"ip_addresses": ctx.settings.egress_ips})
