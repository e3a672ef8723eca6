"""A closed-loop HTTP/1.1 load generator light enough not to be the bottleneck.

The ingest scenario drives one API process from the bench process on the same two cores.
aiohttp's client spends about as much CPU a request as the endpoint it measures (measured:
with it, the FastAPI + one-insert ceiling topped out where the client's core was full), so
the ingest figures said more about the client than the server. This generator keeps
``connections`` keep-alive connections, each an ``asyncio.Protocol`` that writes a prebuilt
request and reads the answer's status line and ``Content-Length`` only: a few microseconds a
request. Answers without a ``Content-Length`` (chunked) are counted as errors (status 0);
the API and the ceiling always send one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def requests_for(url: str, bodies: Sequence[bytes], headers: dict[str, str]) -> list[bytes]:
    """Each body as a whole ``POST`` request, bytes ready to write."""
    parts = urlsplit(url)
    head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return [(head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buffer = b""
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        request = self.run.next_request()
        if request is None:
            self.transport.close()
            return
        self.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = _content_length(head)
            if length is None:
                self.run.record(0, self.sent)
                assert self.transport is not None
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.run.record(int(head[9:12]), self.sent)
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sent and self.buffer:
            self.run.record(0, self.sent)
        if not self.closed.done():
            self.closed.set_result(None)


def _content_length(head: bytes) -> int | None:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return None
    start = at + len(b"\r\ncontent-length:")
    stop = lower.find(b"\r\n", start)
    return int(lower[start : stop if stop >= 0 else len(lower)])


class _Run:
    def __init__(self, requests: Sequence[bytes], deadline: float) -> None:
        self.requests = requests
        self.deadline = deadline
        self.counter = 0
        self.tally = Tally()

    def next_request(self) -> bytes | None:
        if time.perf_counter() >= self.deadline:
            return None
        request = self.requests[self.counter % len(self.requests)]
        self.counter += 1
        return request

    def record(self, status: int, sent: float) -> None:
        tally = self.tally
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            tally.ok += 1
            tally.latencies_ms.append((time.perf_counter() - sent) * 1000)
        else:
            tally.errors += 1


async def closed_loop(
    url: str, requests: Sequence[bytes], *, seconds: float, connections: int
) -> Tally:
    """``connections`` clients sending ``requests`` in turn, back to back, for ``seconds``."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    began = time.perf_counter()
    run = _Run(requests, began + seconds)
    opened = await asyncio.gather(
        *(loop.create_connection(lambda: _Connection(run), host, port) for _ in range(connections))
    )
    await asyncio.gather(*(protocol.closed for _, protocol in opened))
    run.tally.seconds = time.perf_counter() - began
    return run.tally
