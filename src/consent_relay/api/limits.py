"""Request bodies: over the limit they get 413 before they are read whole, and they are read
as JSON whatever the Content-Type says (``curl -d`` sends form encoding by default; the API
takes nothing but JSON). Pure ASGI middleware."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_relay.api.problems import problem
from consent_relay.errors import FieldError

NUL_MESSAGE = "must not contain NUL (U+0000) characters"


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
                    await self._refuse(scope, receive, send)
                    return
        if not declared:
            # A chunked body: read it here, up to the limit, so that going over it is a 413
            # (raised inside the framework's body parser it would turn into a 400).
            buffered = await self._read_up_to_limit(receive)
            if buffered is None:
                await self._refuse(scope, receive, send)
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
                await self._refuse(scope, receive, send)

    async def _read_up_to_limit(self, receive: Receive) -> list[Message] | None:
        """The request's body messages, or None when they go over the limit."""
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return None
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

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit_kib = self.max_bytes // 1024
        response = problem(
            413, "Payload too large", f"Request bodies are limited to {limit_kib} KiB."
        )
        await response(scope, receive, send)
