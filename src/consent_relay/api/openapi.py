"""The OpenAPI document, refined after FastAPI builds it.

The resource routes declare their response models (services/views.py). Here the few routes
without one get the shape they have, ``/metrics`` its text format, and the creating answers
get OpenAPI links, so that clients and stateful tests (schemathesis) can follow a
created webhook to its deliveries, an event to its user, and so on.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

JSON = dict[str, Any]


def _object(required: dict[str, JSON], **optional: JSON) -> JSON:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **optional},
    }


TEXT: JSON = {"type": "string"}
TEXT_OR_NULL: JSON = {"type": ["string", "null"]}
RESOURCE = _object({"id": TEXT})
ORGANIZATION = _object({"organization": RESOURCE, "api_key": TEXT})

# (method, path) -> the schema of its success answer, for the routes that declare no
# response model (the resources do: services/views.py); anything else is an object.
SUCCESS: dict[tuple[str, str], JSON] = {
    ("get", "/v1/admin/organizations"): _object({"data": {"type": "array"}}),
    ("post", "/v1/admin/organizations"): ORGANIZATION,
    ("get", "/healthz"): _object({"status": {"const": "ok"}}),
    ("get", "/readyz"): _object({"status": {"const": "ready"}}),
    ("get", "/v1/egress"): _object({"ip_addresses": {"type": "array", "items": TEXT}}),
}

WEBHOOK = "/v1/webhooks/{webhook_id}"
EVENT_PATH = "/v1/consents/events/{event_id}"
USER_PATH = "/v1/consents/users/{user_id}"
_WEBHOOK_TARGETS = [
    ("get", WEBHOOK),
    ("patch", WEBHOOK),
    ("delete", WEBHOOK),
    ("post", WEBHOOK + "/test"),
    ("post", WEBHOOK + "/rotate-secret"),
    ("get", WEBHOOK + "/deliveries"),
    ("post", WEBHOOK + "/dead-letters/replay"),
]
_USER_TARGETS = [("get", USER_PATH), ("patch", USER_PATH), ("delete", USER_PATH)]

# (method, path of the answering operation) -> [(method, path, parameter, expression)]
LINKS: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {
    ("post", "/v1/webhooks"): [
        (m, p, "webhook_id", "$response.body#/id") for m, p in _WEBHOOK_TARGETS
    ],
    ("get", WEBHOOK): [(m, p, "webhook_id", "$response.body#/id") for m, p in _WEBHOOK_TARGETS],
    ("post", WEBHOOK + "/test"): [
        ("get", "/v1/deliveries/{delivery_id}", "delivery_id", "$response.body#/delivery_id")
    ],
    ("get", WEBHOOK + "/deliveries"): [
        ("get", "/v1/deliveries/{delivery_id}", "delivery_id", "$response.body#/data/0/id")
    ],
    ("post", "/v1/consents/events"): [
        ("get", EVENT_PATH, "event_id", "$response.body#/id"),
        ("patch", EVENT_PATH, "event_id", "$response.body#/id"),
        ("delete", EVENT_PATH, "event_id", "$response.body#/id"),
        ("get", "/v1/consents/events", "user_id", "$response.body#/user/id"),
        *[(m, p, "user_id", "$response.body#/user/id") for m, p in _USER_TARGETS],
    ],
    ("post", "/v1/consents/users"): [
        (m, p, "user_id", "$response.body#/id") for m, p in _USER_TARGETS
    ],
}


def _success(operation: JSON) -> tuple[str, JSON] | None:
    for status, answer in operation.get("responses", {}).items():
        if status.startswith("2") and "content" in answer:
            return status, answer
    return None


def refine(document: JSON) -> JSON:
    """Success schemas, the metrics media type and links, in place; returns ``document``."""
    paths: JSON = document.get("paths", {})
    operation_ids = {
        (method, path): operation["operationId"]
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            found = _success(operation)
            if found is None:
                continue
            _status, answer = found
            if (method, path) == ("get", "/metrics"):
                answer["content"] = {"text/plain": {"schema": TEXT}}
                continue
            if (method, path) == ("get", "/readyz"):
                operation["responses"]["503"] = {
                    "description": "The database does not answer.",
                    "content": {"application/problem+json": {"schema": {"type": "object"}}},
                }
            declared = answer["content"].get("application/json", {}).get("schema", {})
            if "$ref" not in declared and "title" not in declared:
                # No response model on the route: the shape a client may rely on.
                schema = SUCCESS.get((method, path), {"type": "object"})
                answer["content"] = {"application/json": {"schema": schema}}
            links = {
                f"{target_method}_{operation_ids[(target_method, target)]}": {
                    "operationId": operation_ids[(target_method, target)],
                    "parameters": {parameter: expression},
                }
                for target_method, target, parameter, expression in LINKS.get((method, path), [])
            }
            if links:
                answer["links"] = links
    return document


def install(app: FastAPI) -> None:
    """Serve the refined document at /openapi.json (built once, on first use)."""
    build = app.openapi

    def openapi() -> JSON:
        if app.openapi_schema is None:
            app.openapi_schema = refine(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
