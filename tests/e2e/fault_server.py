"""A hostile HTTP receiver on 127.0.0.1, for fault-injection tests: raw asyncio streams, so it
can do what a well-behaved server library will not (trickle, reset, lie, redirect, flood).

Every behaviour is chosen by the request's path; the request itself (head and body) is read
in full first, so the client always gets as far as sending. Paths:

    /never...        (any path starting so) reads the request and never answers: holds the
                     connection until the client gives up
    /trickle-head    answers one byte every ``trickle_interval`` s, status line first
    /trickle-body    the head at once, then a 64-byte body one byte every ``trickle_interval`` s
    /reset           resets the connection (RST: SO_LINGER 0) instead of answering
    /split           200 with a 3,000-byte body sent in two parts 0.2 s apart (an honest, if
                     slow, receiver: the whole body is kept)
    /huge            200 with a ``huge_bytes`` body (10 MB by default), streamed in 64 KiB
                     chunks of one shared buffer (the server itself stays small)
    /garbage         bytes that are not HTTP, then closes
    /redirect        302 to ``/target`` on this server (a loopback URL)
    /target          204: the redirect's target, which must never be reached
    /gone            410 Gone
    /impatient       204 on a connection it keeps, then ends it without a word as the next
                     request on it comes in (an idle timeout racing the request, made certain)
    anything else    404
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CHUNK = b"x" * 65536
TRICKLE_BODY = b"y" * 64
SPLIT_BODY = b"z" * 3000
HEAD_LIMIT = 64 * 1024


@dataclass
class FaultServer:
    trickle_interval: float = 1.0
    huge_bytes: int = 10 * 1024 * 1024
    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)  # requests read, per path
    open: Counter[str] = field(default_factory=Counter)  # connections held now, per path
    bytes_sent: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)  # answers sent (/impatient's)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> FaultServer:
        # A listen backlog of a real server's size, not asyncio's 100: a worker opens up to
        # its concurrency's connections at once (200), and a SYN the full backlog drops is
        # sent again a second later, past the tests' 1 s connect timeout.
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def __aenter__(self) -> FaultServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- one connection -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        path = ""
        try:
            path = await self._read_request(reader)
            self.hits[path] += 1
            self.open[path] += 1
            await self._behave(path, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away: that is its right
        finally:
            if path:
                self.open[path] -= 1
            writer.transport.abort()  # no lingering half-closed sockets
            self._handlers.discard(task)

    async def _read_request(self, reader: asyncio.StreamReader) -> str:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _method, target, _version = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        return urlsplit(target).path

    async def _behave(
        self, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if path.startswith("/never"):
            while await reader.read(4096):  # until the client hangs up
                pass
        elif path == "/trickle-head":
            body = b"ok"
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            await self._trickle(path, head + body, reader, writer)
        elif path == "/trickle-body":
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(TRICKLE_BODY)}\r\n\r\n".encode()
            await self._write(path, writer, head)
            await self._trickle(path, TRICKLE_BODY, reader, writer)
        elif path == "/reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif path == "/split":
            # It closes the connection after this answer, as after every one, and says so: an
            # answer without "Connection: close" left aiohttp to pool a connection this server
            # then aborted, and the next request on it, to any path, failed (E_CONNECTION).
            length = f"Content-Length: {len(SPLIT_BODY)}"
            head = f"HTTP/1.1 200 OK\r\n{length}\r\nConnection: close\r\n\r\n".encode()
            await self._write(path, writer, head + SPLIT_BODY[:1000])
            if await self._hung_up(reader, 0.2):
                return
            await self._write(path, writer, SPLIT_BODY[1000:])
        elif path == "/huge":
            await self._huge(path, writer)
        elif path == "/garbage":
            await self._write(path, writer, b"\x00\xff\xfeSSH-2.0-not-http \x01\x02\r\n\r\n")
        elif path == "/redirect":
            await self._answer(path, writer, "302 Found", headers={"Location": self.url("/target")})
        elif path == "/target":
            await self._answer(path, writer, "204 No Content")
        elif path == "/gone":
            await self._answer(path, writer, "410 Gone", b"this webhook is gone")
        elif path == "/impatient":
            await self._write(path, writer, b"HTTP/1.1 204 No Content\r\n\r\n")  # kept
            self.answered[path] += 1
            await self._read_request(reader)  # the next request on it: read, never answered
            self.hits[path] += 1
        else:
            await self._answer(path, writer, "404 Not Found")

    async def _write(self, path: str, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.bytes_sent[path] += len(data)

    async def _answer(
        self,
        path: str,
        writer: asyncio.StreamWriter,
        status: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        await self._write(path, writer, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def _trickle(
        self, path: str, data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One byte, then wait ``trickle_interval`` for the client to hang up, and again."""
        for index in range(len(data)):
            await self._write(path, writer, data[index : index + 1])
            if await self._hung_up(reader, self.trickle_interval):
                return

    @staticmethod
    async def _hung_up(reader: asyncio.StreamReader, within: float) -> bool:
        """Wait up to ``within`` s; True as soon as the client hangs up."""
        with contextlib.suppress(TimeoutError):
            return not await asyncio.wait_for(reader.read(4096), within)
        return False

    async def _huge(self, path: str, writer: asyncio.StreamWriter) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {self.huge_bytes}"
            "\r\n\r\n"
        ).encode()
        await self._write(path, writer, head)
        view = memoryview(CHUNK)
        left = self.huge_bytes
        while left > 0 and not writer.is_closing():
            piece = view[: min(left, len(CHUNK))]
            writer.write(piece)
            await writer.drain()
            self.bytes_sent[path] += len(piece)
            left -= len(piece)
