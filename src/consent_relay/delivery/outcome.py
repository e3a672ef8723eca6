"""What an attempt came to, as a value. A receiver's failure is not our exception.

``ok`` or one code of a closed set:

    E_TIMEOUT           no complete answer within the deadline (connect 5 s, total 10 s)
    E_CONNECTION        refused, reset, closed early, or not HTTP
    E_DNS               the host name does not resolve
    E_TLS               certificate or handshake failure
    E_HTTP              an answer that is not 2xx (3xx included: redirects are not followed)
    E_AUTH              the receiver's OAuth token endpoint failed or answered garbage
    E_FORBIDDEN_TARGET  the destination is refused by the SSRF guard
"""

from __future__ import annotations

from dataclasses import dataclass

OK = "ok"
E_TIMEOUT = "E_TIMEOUT"
E_CONNECTION = "E_CONNECTION"
E_DNS = "E_DNS"
E_TLS = "E_TLS"
E_HTTP = "E_HTTP"
E_AUTH = "E_AUTH"
E_FORBIDDEN_TARGET = "E_FORBIDDEN_TARGET"
CODES = (OK, E_TIMEOUT, E_CONNECTION, E_DNS, E_TLS, E_HTTP, E_AUTH, E_FORBIDDEN_TARGET)

MAX_KEPT_BODY = 4096


@dataclass(frozen=True)
class Outcome:
    code: str
    duration_ms: int
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry_after: str | None = None  # the raw Retry-After header of a 429 or 503

    @property
    def ok(self) -> bool:
        return self.code == OK


def keep_body(raw: bytes) -> str:
    """At most 4 KiB of a response body, as text."""
    return raw[:MAX_KEPT_BODY].decode("utf-8", errors="replace")
