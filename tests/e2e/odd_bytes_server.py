"""A receiver that answers raw bytes of the test's choosing, byte for byte: NUL, invalid
UTF-8 and encoded surrogates in a body, a status line or a header, which a server library
would refuse to send. Raw asyncio streams, as in ``fault_server``; each path has one fixed
answer (``answers``), unknown paths get a 404.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def response(status_line: bytes, body: bytes = b"", headers: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer: ``status_line`` (e.g. ``b"500 Oops"``), extra header lines
    (each ending in CRLF), the body."""
    head = b"HTTP/1.1 " + status_line + b"\r\n" + headers
    head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    return head + body


@dataclass
class OddBytesServer:
    answers: dict[str, bytes]
    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)  # requests read, per path
    _server: asyncio.Server | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> OddBytesServer:
        # A real server's listen backlog (fault_server.py says why).
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            path = await self._read_request(reader)
            self.hits[path] += 1
            writer.write(self.answers.get(path, response(b"404 Not Found")))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away
        finally:
            writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> str:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        return urlsplit(target).path
