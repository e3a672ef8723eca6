"""Request bodies: over the limit they get 413, and they are read as JSON whatever the
Content-Type says (``curl -d`` sends form encoding by default; the API takes nothing but JSON).
Pure ASGI middleware.

A 413 is answered only after the oversized body has been read and dropped ("drained"): most
clients (urllib, requests, aiohttp) send the whole body before they read anything, and a server
that closes a socket with unread bytes in it makes the kernel send a TCP reset, which throws
away the answer the client had not read yet. The drain is bounded: at most ``drain_bytes``
(16 times the limit, 16 MiB by default) and ``drain_seconds``; past either bound, or when the
client waits for ``100 Continue`` (it has sent no body), the 413 carries ``Connection: close``
and the connection ends.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_relay.api.problems import problem
from consent_relay.errors import FieldError

NUL_MESSAGE = "must not contain NUL (U+0000) characters"
DRAIN_FACTOR = 16  # an oversized body is read and dropped up to this many times the limit
DRAIN_SECONDS = 5.0  # ... and for this long at most


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        *,
        drain_bytes: int | None = None,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = DRAIN_FACTOR * max_bytes if drain_bytes is None else drain_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if await self._nul_in_url(scope, receive, send):
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
        declared = False
        for name, value in headers:
            if name == b"content-length" and value.isdigit():
                declared = True
                if int(value) > self.max_bytes:
                    # Not worth draining past the bound: answer at once, and close.
                    drain = int(value) <= self.drain_bytes and not _expects_continue(scope)
                    await self._refuse(scope, receive, send, drain=drain)
                    return
        if not declared:
            # A chunked body: read it here, up to the limit, so that going over it is a 413
            # (raised inside the framework's body parser it would turn into a 400).
            buffered = await self._read_up_to_limit(receive)
            if isinstance(buffered, int):
                await self._refuse(scope, receive, send, seen=buffered)
                return
            receive = self._replay(buffered, receive)
        if scope["path"].startswith("/v1/"):
            # In place: the router records the matched route in this same scope.
            scope["headers"] = [*headers, (b"content-type", b"application/json")]
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send, seen=seen)

    async def _read_up_to_limit(self, receive: Receive) -> list[Message] | int:
        """The request's body messages, or how many bytes were read when they go over the
        limit (the rest is still to come)."""
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return seen
            if not message.get("more_body", False):
                return messages

    @staticmethod
    def _replay(messages: list[Message], receive: Receive) -> Receive:
        pending = list(messages)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        return replay

    @staticmethod
    async def _nul_in_url(scope: Scope, receive: Receive, send: Send) -> bool:
        """NUL characters cannot be stored (PostgreSQL text): a path holding one names
        nothing (404); a query parameter holding one is invalid (422). True when answered."""
        response = None
        if "\x00" in scope["path"]:
            response = problem(404, "Not found", "No such resource in this organization.")
        else:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
            bad = [FieldError(k, NUL_MESSAGE) for k, v in query if "\x00" in k + v]
            if bad:
                detail = "; ".join(f"{e.field}: {e.message}" for e in bad)
                response = problem(422, "Validation failed", detail, bad)
        if response is None:
            return False
        await response(scope, receive, send)
        return True

    async def _drain(self, receive: Receive, seen: int) -> bool:
        """Read and drop the rest of the body, within the bounds; True when it all came."""
        try:
            async with asyncio.timeout(self.drain_seconds):
                while seen <= self.drain_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return False  # the client went away
                    seen += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return True
        except TimeoutError:
            pass
        return False

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, *, seen: int = 0, drain: bool = True
    ) -> None:
        """413, once the body is drained (see the module docstring); ``seen`` bytes of it
        were read already."""
        drained = drain and await self._drain(receive, seen)
        limit_kib = self.max_bytes // 1024
        response = problem(
            413,
            "Payload too large",
            f"Request bodies are limited to {limit_kib} KiB.",
            headers=None if drained else {"Connection": "close"},
        )
        await response(scope, receive, send)


def _expects_continue(scope: Scope) -> bool:
    """The client sends its body only after ``100 Continue``, which the server writes on the
    first ``receive()``: refusing without one spares it sending the body at all."""
    return any(
        name == b"expect" and value.lower() == b"100-continue"
        for name, value in scope.get("headers", [])
    )
