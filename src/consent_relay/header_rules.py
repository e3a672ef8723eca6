"""Which custom headers a webhook (and its OAuth token request) may carry.

Custom headers are sent on every delivery to a receiver we do not control, through an HTTP
client that frames the message itself. The rules:

- a name is an RFC 9110 token (``!#$%&'*+-.^_`|~``, digits, letters), matched whole;
- a value is visible ASCII and spaces only: no control characters (CR/LF would split the
  header, NUL or DEL confuse parsers), no non-ASCII (no single agreed encoding on the wire);
- at most ``MAX_HEADERS`` headers and ``MAX_HEADER_BYTES`` in all (names plus values), so a
  webhook cannot make every delivery carry a huge header block;
- refused names, case-insensitively:
  - hop-by-hop headers (RFC 9110 §7.6.1): ``Connection``, ``Keep-Alive``, ``TE``,
    ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, and any ``Proxy-*`` (``Proxy-Connection``,
    ``Proxy-Authorization``...): they are about one connection, not the message;
  - framing and representation of our body: ``Content-Length``, ``Content-Encoding``,
    ``Content-Type`` (ours is ``application/json``), ``Content-Range``: a wrong one makes the
    receiver misread the body (request smuggling through a proxy on the way);
  - routing and exchange: ``Host`` (virtual-host confusion past the SSRF guard), ``Expect``
    (``100-continue`` changes how the exchange runs);
  - ours: ``User-Agent``, ``Cookie`` (deliveries carry none: ``sender.make_session``) and
    every name starting with ``webhook-`` (the Standard Webhooks signature headers, present
    and future);
  - ``Authorization`` only when OAuth is configured (the token goes there); without OAuth it
    is allowed, as receivers with a static bearer token authenticate that way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_HEADERS = 20
MAX_HEADER_BYTES = 8 * 1024
TOKEN_PATTERN = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"
VALUE_PATTERN = r"^[ -~]*$"  # visible ASCII (0x21-0x7E) and space (0x20)
_TOKEN = re.compile(TOKEN_PATTERN[1:-1])
_VALUE = re.compile(VALUE_PATTERN[1:-1])

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
FRAMING = frozenset({"content-length", "content-encoding", "content-type", "content-range"})
ROUTING = frozenset({"host", "expect"})
OURS = frozenset({"user-agent", "cookie"})
REFUSED_PREFIXES = ("proxy-", "webhook-")


def refusal(name: str) -> str | None:
    """Why header ``name`` cannot be configured (Authorization aside), or None."""
    lower = name.lower()
    if lower in HOP_BY_HOP or lower.startswith("proxy-"):
        return f"header {name!r} is a hop-by-hop header, about one connection only"
    if lower in FRAMING:
        return f"header {name!r} frames the body and is set by Consent Relay"
    if lower in ROUTING:
        return f"header {name!r} changes where or how the request goes and cannot be configured"
    if lower in OURS or lower.startswith("webhook-"):
        return f"header {name!r} is set by Consent Relay and cannot be configured"
    return None


def header_problems(headers: Mapping[str, str]) -> list[str]:
    """Every rule ``headers`` breaks (empty when they are fine); see the module docstring."""
    problems: list[str] = []
    if len(headers) > MAX_HEADERS:
        problems.append(f"at most {MAX_HEADERS} headers (got {len(headers)})")
    seen: set[str] = set()
    for name, value in headers.items():
        shown = ascii(name)
        if not _TOKEN.fullmatch(name):
            problems.append(f"{shown} is not a valid header name (an RFC 9110 token)")
            continue
        if name.lower() in seen:
            problems.append(f"header {shown} is listed twice (names are case-insensitive)")
        seen.add(name.lower())
        reason = refusal(name)
        if reason is not None:
            problems.append(reason)
        if not _VALUE.fullmatch(value):
            problems.append(
                f"header {shown} has an invalid value: visible ASCII characters and spaces "
                "only (no control characters, no non-ASCII)"
            )
    total = sum(len(name) + len(value) for name, value in headers.items())
    if total > MAX_HEADER_BYTES:
        problems.append(f"headers hold {total} bytes; at most {MAX_HEADER_BYTES} in all")
    return problems


def check_authorization_header(headers: Mapping[str, str], has_oauth: bool) -> None:
    """Refuse a custom ``Authorization`` header when OAuth is configured: the access token is
    sent there, and two sources for one header is a receiver guessing which one counts.
    Raises ValueError. (A PATCH must also check against the stored webhook: new headers with a
    stored OAuth, or new OAuth with stored headers.)"""
    if has_oauth and any(name.lower() == "authorization" for name in headers):
        raise ValueError(
            "header 'Authorization' cannot be configured when OAuth authentication is set "
            "(the access token is sent in it)"
        )
