"""A real HTTP receiver on 127.0.0.1 for tests: records every request, answers as told."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    peer: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


Behaviour = Callable[[Received, int], web.StreamResponse]


@dataclass
class Receiver:
    """``behaviours[path]`` decides the answer from the request and how many came to that
    path before it (0 for the first); the default answers 204."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        item = Received(
            request.path, dict(request.headers), await request.read(), request.remote or ""
        )
        count = len(self.at(item.path))
        self.received.append(item)
        async with self._changed:
            self._changed.notify_all()
        behaviour = self.behaviours.get(item.path)
        return behaviour(item, count) if behaviour else web.Response(status=204)

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 30) -> None:
        """Until ``count`` requests arrived (at ``path``, if given), within ``timeout`` s."""

        def enough() -> bool:
            return len(self.at(path) if path else self.received) >= count

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(enough)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # A real server's listen backlog, as the fault server's (tests/e2e/fault_server.py
        # says why): aiohttp's 128 can drop a SYN when a worker connects 200 at once.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def status_sequence(*statuses: int) -> Behaviour:
    """Answer with these statuses in turn, then 204 for ever."""

    def behave(_item: Received, count: int) -> web.StreamResponse:
        status = statuses[count] if count < len(statuses) else 204
        return web.Response(status=status, text=f"answer {count}")

    return behave
