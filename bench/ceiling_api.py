"""The ingest ceiling (docs/benchmarks.md): FastAPI + uvicorn (uvloop, httptools), one process, that
pydantic-validates a ~1 KB consent event, inserts one row with asyncpg and answers 201.

It is measured in the same run, with the same load, as the real ingest endpoint, so the
ingest figure has a same-machine reference. ``python -m bench.ceiling_api`` reads
``BENCH_CEILING_DATABASE`` (a PostgreSQL URL) and ``BENCH_CEILING_PORT``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from starlette.responses import Response


class UserIn(BaseModel):
    organization_user_id: str
    country: str | None = None


class EventIn(BaseModel):
    user: UserIn
    consents: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


def create_app(database_url: str) -> FastAPI:
    pool: Any = None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(database_url, min_size=10, max_size=20)
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS ceiling_events "
            "(pk bigserial PRIMARY KEY, user_id text NOT NULL, document jsonb NOT NULL)"
        )
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/consents/events", status_code=201)
    async def create_event(body: EventIn, _request: Request) -> Response:
        document = body.model_dump(mode="json")
        pk = await pool.fetchval(
            "INSERT INTO ceiling_events (user_id, document) VALUES ($1, $2) RETURNING pk",
            body.user.organization_user_id,
            orjson.dumps(document).decode(),
        )
        return Response(
            orjson.dumps({"pk": pk, **document}), status_code=201, media_type="application/json"
        )

    return app


def main() -> None:
    import uvicorn

    uvicorn.run(
        create_app(os.environ["BENCH_CEILING_DATABASE"]),
        host="127.0.0.1",
        port=int(os.environ["BENCH_CEILING_PORT"]),
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
