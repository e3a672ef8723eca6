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

import re
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


@dataclass(slots=True)  # one an attempt: not frozen (see storage.queue.Claimed)
class Outcome:
    code: str
    duration_ms: int
    status_code: int | None = None
    response_body: str | None = None
    error: str | None = None
    retry_after: str | None = None  # the raw Retry-After header of a 429 or 503
    response_bytes: int | None = None  # the body's size as sent (see ``keep_body``)

    @property
    def ok(self) -> bool:
        return self.code == OK


REPLACEMENT = "\ufffd"
# What no column of ours can take: NUL (PostgreSQL's text and jsonb refuse it) and lone
# surrogates (no UTF-8 encoding: orjson, asyncpg and PostgreSQL refuse them; aiohttp turns
# the undecodable bytes of a header or status line into them, "surrogateescape").
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as every database takes it: NUL and lone surrogates become U+FFFD.

    A receiver chooses the bytes of its answer; one NUL in a body once made PostgreSQL
    refuse a whole batch of attempts (and every delivery of the batch went out again).
    Ordinary text pays two C-speed scans: ASCII with no NUL is returned as it is; other
    text is returned as it is when it has no NUL and encodes to UTF-8 (no surrogate).
    """
    if text.isascii():
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    if "\x00" not in text:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def keep_body(raw: bytes) -> tuple[str, int]:
    """At most 4 KiB of a response body, as storable text, and how many bytes it came from.

    Invalid UTF-8 becomes U+FFFD in the decoding; NUL (valid UTF-8) in ``storable``. The
    text's length no longer tells the body's, hence the byte count beside it.
    """
    kept = raw[:MAX_KEPT_BODY]
    return storable(kept.decode("utf-8", errors="replace")), len(raw)
