"""A small, fast webhook receiver on 127.0.0.1, run in its own process.

A raw ``asyncio.Protocol`` on uvloop: it finds request boundaries by ``Content-Length``
and answers ``HTTP/1.1 204`` with keep-alive. What a path does depends on its prefix:

- ``/hang...``: the request is counted and never answered (the connection is held open);
- ``/rec...``: answered 204, and the arrival time (``time.time()``) and body are recorded;
- ``/_stats``, ``/_records``, ``/_reset``: the control endpoints, answered with JSON;
- anything else: counted and answered 204.

Run as ``python -m bench.receiver``; it prints ``PORT <n>`` and serves until its stdin
closes, SIGTERM, or ``--max-seconds`` pass. :class:`ReceiverProcess` starts and drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import aiohttp
import orjson

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\ncontent-length:"
MAX_HEAD = 64 * 1024


class State:
    """What the receiver saw since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.first = 0.0
        self.last = 0.0
        self.records: list[tuple[float, bytes]] = []
        self.hanging = 0

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "paths": dict(self.counts),
            "first": self.first,
            "last": self.last,
            "hanging": self.hanging,
            "recorded": len(self.records),
        }


class Handler(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.hung = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.hung:
            self.state.hanging = max(0, self.state.hanging - 1)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.hung:
            return  # a held request: whatever follows is ignored until the client gives up
        buffer = self.buffer + data if self.buffer else data
        start = 0
        size = len(buffer)
        replies: list[bytes] = []
        while start < size:
            end = buffer.find(HEADER_END, start)
            if end < 0:
                if size - start > MAX_HEAD:
                    self._close()
                    return
                break
            head = buffer[start:end]
            length = _content_length(head)
            body_start = end + 4
            body_end = body_start + length
            if body_end > size:
                break
            path = _path(head)
            reply = self._handle(path, buffer[body_start:body_end])
            start = body_end
            if reply is None:
                self.hung = True
                self.state.hanging += 1
                break
            replies.append(reply)
        self.buffer = buffer[start:] if start < size else b""
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies) if len(replies) > 1 else replies[0])

    def _handle(self, path: str, body: bytes) -> bytes | None:
        state = self.state
        if path.startswith("/_"):
            return self._control(path)
        now = time.time()
        state.total += 1
        state.counts[path] += 1
        if state.first == 0.0:
            state.first = now
        state.last = now
        if path.startswith("/hang"):
            return None
        if path.startswith("/rec"):
            state.records.append((now, body))
        return NO_CONTENT

    def _control(self, path: str) -> bytes:
        state = self.state
        if path == "/_stats":
            payload = orjson.dumps(state.stats())
        elif path == "/_records":
            payload = orjson.dumps([[t, body.decode()] for t, body in state.records])
        elif path == "/_reset":
            state.reset()
            payload = b"{}"
        else:
            payload = b'{"error":"unknown control path"}'
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _content_length(head: bytes) -> int:
    at = head.find(b"\nContent-Length:")
    if at < 0:
        lowered = head.lower()
        at = lowered.find(CONTENT_LENGTH)
        if at < 0:
            return 0
    stop = head.find(b"\r", at + 16)
    return int(head[at + 16 : stop if stop >= 0 else len(head)].strip() or 0)


def _path(head: bytes) -> str:
    line_end = head.find(b"\r\n")
    line = head if line_end < 0 else head[:line_end]
    parts = line.split(b" ", 2)
    if len(parts) < 2:
        return "/"
    return parts[1].split(b"?", 1)[0].decode("latin-1")


async def serve(port: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    state = State()
    stop = asyncio.Event()
    server = await loop.create_server(
        lambda: Handler(state), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Parent gone (stdin closed) -> stop.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        while await reader.read(4096):
            pass
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    sockets = server.sockets
    bound = sockets[0].getsockname()[1] if sockets else port
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    watcher.cancel()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=3 * 3600)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.port, args.max_seconds))


class ReceiverProcess:
    """Starts ``python -m bench.receiver`` and talks to its control endpoints."""

    def __init__(self, log: Path, max_seconds: float = 3 * 3600) -> None:
        self.log = log
        self.max_seconds = max_seconds
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> ReceiverProcess:
        with self.log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.receiver",
                "--max-seconds",
                str(self.max_seconds),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 30)
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.port = int(line.split()[1])
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=4)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await asyncio.wait_for(proc.wait(), 5)

    async def _get(self, path: str) -> Any:
        assert self._session is not None
        async with self._session.get(self.url(path)) as response:
            return orjson.loads(await response.read())

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._get("/_stats")
        return result

    async def reset(self) -> None:
        await self._get("/_reset")

    async def records(self) -> list[tuple[float, str]]:
        return [(float(t), str(body)) for t, body in await self._get("/_records")]

    async def count(self, prefix: str = "") -> int:
        stats = await self.stats()
        if not prefix:
            return int(stats["total"])
        paths: Mapping[str, int] = stats["paths"]
        return sum(n for path, n in paths.items() if path.startswith(prefix))

    async def wait_for(
        self, count: int, prefix: str = "", within: float = 60.0, interval: float = 0.02
    ) -> float | None:
        """Poll until ``count`` requests arrived (under ``prefix``); the time it happened
        (``time.time()``), or None after ``within`` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await self.count(prefix) >= count:
                return time.time()
            await asyncio.sleep(interval)
        return None


if __name__ == "__main__":
    main()
