"""``LeanRoute``: a FastAPI route whose request handler resolves its few parameters itself.

FastAPI's request handler solves a route's dependency tree anew for each request, in a
general way: cache keys, callable classification, exit stacks, a nested solve for each
dependency. For ``POST /v1/consents/events``, the ingest path, that solving cost as much as the
body's validation (py-spy: a third of the request outside the database work). A lean route
is declared like any other: the endpoint's signature, its models and the OpenAPI document
are unchanged. Only its handler differs, and it does what FastAPI's does, in FastAPI's order,
with FastAPI's own functions for the parts that decide the answers:

1. the body is read and decoded as JSON (invalid JSON: 400, before anything else);
2. the dependencies run, each through the resolver ``api.deps.LEAN_RESOLVERS`` gives its
   callable (an unknown dependency is refused when the route is built, not at request time);
3. the query parameters and the body are validated by FastAPI's ``request_params_to_args``
   and ``request_body_to_args``; their errors together are one ``RequestValidationError``;
4. the endpoint is awaited and must return a ``Response``.

Routes with path, header or cookie parameters, several body parameters or a synchronous
endpoint are refused when built. ``tests/integration/test_lean_route.py`` sends the same
table of requests, valid and not, to a lean route and to FastAPI's own and compares answers.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.routing import APIRoute
from pydantic_core import PydanticUndefined
from starlette.requests import Request
from starlette.responses import Response

Resolver = Callable[[Request], Awaitable[Any]]
JSON_TYPES = ("application/json",)


class LeanRoute(APIRoute):
    """See the module docstring; ``resolvers`` maps each dependency callable the route may
    use to a function of the request alone."""

    resolvers: Mapping[Callable[..., Any], Resolver] = {}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        where = f"{sorted(self.methods or ())} {self.path}"
        if dependant.path_params or dependant.header_params or dependant.cookie_params:
            raise TypeError(f"{where}: a lean route takes query parameters and a body only")
        if len(dependant.body_params) > 1 or any(
            getattr(field.field_info, "embed", False) for field in dependant.body_params
        ):
            raise TypeError(f"{where}: a lean route takes one body, not embedded")
        resolvers: list[tuple[str, Resolver]] = []
        for sub in dependant.dependencies:
            resolver = self.resolvers.get(sub.call) if sub.call is not None else None
            if resolver is None or sub.name is None:
                raise TypeError(f"{where}: no lean resolver for the dependency {sub.call!r}")
            resolvers.append((sub.name, resolver))
        endpoint = dependant.call
        if endpoint is None or not _is_async(endpoint):
            raise TypeError(f"{where}: a lean route's endpoint is an async function")
        query_fields = dependant.query_params
        body_fields = dependant.body_params
        request_name = dependant.request_param_name

        async def handler(request: Request) -> Response:
            body = await _json_body(request) if body_fields else PydanticUndefined
            values: dict[str, Any] = {}
            for name, resolve in resolvers:
                values[name] = await resolve(request)
            query_values, errors = request_params_to_args(query_fields, request.query_params)
            values.update(query_values)
            if body_fields:
                body_values, body_errors = await request_body_to_args(
                    body_fields, body, embed_body_fields=False
                )
                errors += body_errors
                values.update(body_values)
            if errors:
                raise RequestValidationError(errors, body=body)
            if request_name is not None:
                values[request_name] = request
            response = await endpoint(**values)
            if not isinstance(response, Response):
                raise TypeError(f"{where}: a lean route's endpoint returns a Response")
            return response

        return handler


async def _json_body(request: Request) -> Any:
    """The body as FastAPI reads it for a JSON body parameter: undefined (missing) when empty,
    decoded when the content type is JSON, else the bytes; invalid JSON is FastAPI's
    'json_invalid'."""
    try:
        raw = await request.body()
        if not raw:
            return PydanticUndefined
        if not _is_json(request.headers.get("content-type")):
            return raw
        return json.loads(raw)
    except json.JSONDecodeError as e:
        error = {
            "type": "json_invalid",
            "loc": ("body", e.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": e.msg},
        }
        raise RequestValidationError([error], body=e.doc) from e
    except HTTPException:
        raise
    except Exception as e:  # undecodable bytes, nesting too deep for json: as FastAPI says
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from e


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test: application/json or application/*+json (parameters ignored)."""
    if content_type is None:
        return False
    if content_type in JSON_TYPES:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _is_async(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call)
