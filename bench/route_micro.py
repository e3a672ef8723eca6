"""CPU a ``POST /v1/consents/events`` costs in the app itself, with no database and no HTTP.

A developer's aid for the request's own layers (middleware, routing, the lean route, pydantic,
the answer): the real app (``create_app``) is called as an ASGI app, in process, with the
event writer and the API-key lookup stubbed, so only what FastAPI and the project do around
the write is timed. ``python -m bench.route_micro [N]`` prints the best of five rounds of N
requests (default 5,000) in CPU microseconds a request. Compare two checkouts in the same
run with ``PYTHONPATH=<checkout>/src:<checkout>``; no figure from it is a bench target.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from starlette.types import Message

from bench import db
from bench.scenarios import _event_body
from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn
from consent_relay.services import ingest, orgs

ROUNDS = 5
WARM_UP = 500


async def measure(count: int) -> tuple[float, set[int]]:
    """Best CPU-us a request over ``ROUNDS`` rounds of ``count``, and the statuses seen."""
    workdir = Path(tempfile.mkdtemp())
    settings = db.settings_for(f"sqlite:///{workdir / 'micro.db'}", workdir, crypto.new_key())
    app = create_app(settings)
    document = {"id": "e1", "user": {"id": "u"}, "consents": {}, "status": "confirmed"}

    async def written(
        _self: ingest.EventWriter, _org: str, _data: EventIn, *, quiet: bool = False
    ) -> dict[str, Any]:
        return document

    async def authenticated(_ctx: Context, _key: str) -> str:
        return "org"

    setattr(ingest.EventWriter, "create", written)  # noqa: B010 (stubs, this process only)
    setattr(orgs, "authenticate", authenticated)  # noqa: B010
    body = _event_body(None, 5, True)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/consents/events",
        "raw_path": b"/v1/consents/events",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"relay.test"),
            (b"authorization", b"Bearer key"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    statuses: set[int] = set()

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    best = float("inf")
    async with app.router.lifespan_context(app):
        for _ in range(WARM_UP):
            await app(dict(scope), receive, send)
        for _ in range(ROUNDS):
            started = time.process_time()
            for _ in range(count):
                await app(dict(scope), receive, send)
            best = min(best, (time.process_time() - started) / count * 1e6)
    return best, statuses


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    count = int(args[0]) if args else 5_000
    best, statuses = uvloop.run(measure(count))
    print(f"POST /v1/consents/events, stubbed: {best:.1f} CPU-us a request (statuses {statuses})")


if __name__ == "__main__":
    main()
