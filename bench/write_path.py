"""The write path alone: consent events recorded through the service (group commit, the
outbox, both webhooks' deliveries), in this process, with no HTTP in front.

``python -m bench.write_path [--db postgres|sqlite] [--seconds 8] [--clients 64]`` prints
events/s and CPU-µs an event. Beside the ingest scenario (the same events through the API)
it tells the service's share of an event from FastAPI's and uvicorn's (docs/write-path.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path

import orjson
import uvloop

from bench import db
from bench.scenarios import _event_body
from consent_relay import crypto, gctune
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, OrganizationIn, WebhookIn
from consent_relay.services import events, orgs, webhooks
from consent_relay.storage.store import Store


async def measure(kind: str, seconds: float, clients: int, workdir: Path) -> tuple[float, float]:
    """(events a second, CPU-µs an event) with ``clients`` concurrent creators."""
    async with db.database(kind, "write_path") as url:
        settings = db.settings_for(url, workdir, crypto.new_key())
        store = Store(settings.resolved_database_url)
        try:
            await store.migrate()
            ctx = Context(
                settings=settings, store=store, box=crypto.SecretBox([settings.secret_key])
            )
            await orgs.create_organization(ctx, OrganizationIn(id="bench", name="bench"))
            for n in range(2):
                hook = WebhookIn.model_validate({"url": f"http://127.0.0.1:9/in{n}"})
                await webhooks.create_webhook(ctx, "bench", hook)
            rng = random.Random(7)
            bodies = [
                EventIn.model_validate(
                    orjson.loads(_event_body(None, rng.randrange(20_000), rng.random() < 0.5))
                )
                for _ in range(4096)
            ]
            gctune.settle()  # as an API process does once started
            done = 0
            stop = time.monotonic() + seconds

            async def client(first: int) -> None:
                nonlocal done
                index = first
                while time.monotonic() < stop:
                    await events.create_event(ctx, "bench", bodies[index % len(bodies)])
                    done += 1
                    index += clients

            cpu, began = time.process_time(), time.monotonic()
            await asyncio.gather(*(client(n) for n in range(clients)))
            cpu, wall = time.process_time() - cpu, time.monotonic() - began
        finally:
            await store.close()
    return done / wall, cpu / max(done, 1) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args(argv)
    workdir = Path("/tmp") / f"bench-write-path-{time.time_ns()}"
    # uvloop, as the API runs
    per_s, cpu_us = uvloop.run(measure(args.db, args.seconds, args.clients, workdir))
    print(f"write path, {args.db}, {args.clients} clients: {per_s:.0f} events/s, "
          f"{cpu_us:.0f} CPU-us an event (service only, in-process, no HTTP)")  # fmt: skip


if __name__ == "__main__":
    main()
