"""API request metrics by route template (pure ASGI middleware, so it sees every answer)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_relay import metrics


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            metrics.api_requests.labels(_route(scope), scope["method"], str(status)).inc()


def _route(scope: Scope) -> str:
    """The matched route's template (``/v1/consents/events/{event_id}``), set in the scope by
    the router; never the raw path, so ids do not explode the label set."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
