"""Our own faults and refusals, as one exception tree.

    ConsentRelayError             base; carries an HTTP status and a problem type
    ├── BadRequest (400)          malformed input that is not a field problem
    ├── Unauthorized (401)        missing or unknown API key / admin token
    ├── NotFound (404)            no such resource in this organization
    ├── Conflict (409)            an id that exists, two ids naming two users
    ├── PayloadTooLarge (413)     request body over the limit
    ├── Unprocessable (422)       a field is wrong; ``errors`` lists the fields at fault
    └── StorageUnavailable (503)  the database cannot be reached or is busy; try again

A receiver's failure is not an exception: delivery returns an outcome value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ConsentRelayError(Exception):
    status: int = 500
    title: str = "Internal error"
    default_detail: str = "An unexpected error occurred."

    def __init__(self, detail: str | None = None, errors: list[FieldError] | None = None) -> None:
        self.detail = detail or self.default_detail
        self.errors = errors or []
        super().__init__(self.detail)

    @property
    def type_slug(self) -> str:
        return self.title.lower().replace(" ", "-")


class BadRequest(ConsentRelayError):
    status = 400
    title = "Bad request"
    default_detail = "The request could not be understood."


class Unauthorized(ConsentRelayError):
    status = 401
    title = "Unauthorized"
    default_detail = "Send a valid API key as 'Authorization: Bearer <key>'."


class NotFound(ConsentRelayError):
    status = 404
    title = "Not found"
    default_detail = "No such resource in this organization."


class Conflict(ConsentRelayError):
    status = 409
    title = "Conflict"
    default_detail = "The request conflicts with the current state."


class PayloadTooLarge(ConsentRelayError):
    status = 413
    title = "Payload too large"
    default_detail = "Request bodies are limited to 1 MiB."


class Unprocessable(ConsentRelayError):
    status = 422
    title = "Validation failed"
    default_detail = "Some fields are invalid."


class StorageUnavailable(ConsentRelayError):
    status = 503
    title = "Service unavailable"
    default_detail = "The database is unavailable or busy; retry shortly."


class ForbiddenTarget(Unprocessable):
    """A destination the SSRF guard refuses (loopback, private, metadata...)."""

    title = "Forbidden target"
    default_detail = "That destination is not allowed."
