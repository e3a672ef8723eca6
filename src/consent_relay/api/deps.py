"""Request plumbing shared by the routers: the context, the caller's organization, JSON out."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Query, Request
from pydantic import AfterValidator
from starlette.responses import JSONResponse

from consent_relay import errors
from consent_relay.api import lean
from consent_relay.runtime import Context
from consent_relay.services import orgs, pagination


class JSONOut(JSONResponse):
    """JSON encoded by orjson. (A JSONResponse, so that FastAPI documents the route's
    response model; handlers return it built, so nothing is validated on the way out.)"""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def context(request: Request) -> Context:
    # async: FastAPI runs a plain-def dependency in its thread pool (measured: 5% of a request)
    ctx: Context = request.app.state.context
    return ctx


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized()
    return token.strip()


async def organization(request: Request, ctx: Annotated[Context, Depends(context)]) -> str:
    """The organization of the API key in ``Authorization: Bearer``."""
    return await orgs.authenticate(ctx, _bearer(request))


async def admin(request: Request) -> None:
    token = _bearer(request)
    if not secrets.compare_digest(token.encode(), request.app.state.admin_token.encode()):
        raise errors.Unauthorized("the admin token is required")


async def _organization_of(request: Request) -> str:
    return await organization(request, request.app.state.context)


# How a lean route (api/lean.py) resolves each dependency it may declare: from the request
# alone, as the dependency itself would.
LEAN_RESOLVERS: dict[Callable[..., Any], Callable[[Request], Awaitable[Any]]] = {
    context: context,
    organization: _organization_of,
}


class LeanRoute(lean.LeanRoute):
    resolvers = LEAN_RESOLVERS


Ctx = Annotated[Context, Depends(context)]
Org = Annotated[str, Depends(organization)]
Quiet = Annotated[
    bool,
    Query(alias="$disable_integrations", description="When true, no webhook fires for this write."),
]


def _cursor(value: str | None) -> str | None:
    """A cursor this API could have returned (decodable, a position the database can hold)."""
    if value is not None:
        try:
            position = pagination.decode(value)
        except errors.Unprocessable:
            raise ValueError("not a cursor this API returned") from None
        if not 0 <= position < 2**63:
            raise ValueError("not a cursor this API returned")
    return value


Cursor = Annotated[
    str | None, Query(description="next_cursor of the previous page"), AfterValidator(_cursor)
]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (default 100, at most 1000)")]
