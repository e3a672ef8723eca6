"""One HTTP attempt: one shared client, keep-alive, hard deadline, no redirects, no cookies.

The POST goes through ``http1.Pool`` (asyncio and llhttp: aiohttp's lower layer, a seventh of
its CPU a request) when the worker has one, else through aiohttp's session, which also
serves OAuth token requests and deliveries through an egress proxy. Both come to the same
``Outcome`` for the same answer (tests/integration/test_http1_client.py).

``send()`` never raises for the receiver's faults: it returns an ``Outcome``. The deadline
covers everything from connect to the last byte kept, so a receiver that trickles bytes
cannot stretch it. It is ``deadlines``' (one timer for every request in flight, cancelling
the requests past theirs), not aiohttp's ``total`` timeout, which costs a timer and its
objects a request (an ``asyncio.timeout`` around the request costs about 10 CPU-us more
again, measured). Only the first 4 KiB of a body are read; a longer body closes the
connection instead of being drained.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Mapping

import aiohttp

from consent_relay import __version__, errors
from consent_relay.delivery import deadlines, http1, outcome
from consent_relay.delivery.outcome import Outcome
from consent_relay.security import targets
from consent_relay.settings import Settings

USER_AGENT = f"consent-relay/{__version__}"


def _local_addr(settings: Settings) -> tuple[str, int] | None:
    """The egress source address every outbound connection is bound to, if any."""
    return (settings.egress_source_address, 0) if settings.egress_source_address else None


def make_session(settings: Settings, *, limit: int) -> aiohttp.ClientSession:
    """The shared client session: SSRF-guarded resolver, optional egress source address, no
    cookies kept."""
    local_addr = _local_addr(settings)
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        ttl_dns_cache=10,
        keepalive_timeout=30,
        resolver=targets.GuardedResolver(targets.parse_networks(settings.allowed_networks)),
        local_addr=local_addr,
        # aiohttp rounds timeouts of 5 s or more up to a whole second; a deadline is a deadline.
        timeout_ceil_threshold=math.inf,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout),
        auto_decompress=False,
        # Deliveries are stateless: a receiver's Set-Cookie is never kept nor sent back. The
        # session serves every organization, so a kept cookie would go to another's webhook
        # on the same host, and a receiver could fill the jar.
        cookie_jar=aiohttp.DummyCookieJar(),
        # No skip_auto_headers here: a delivery's headers always carry our User-Agent, and a
        # session-wide skip list cost every request a copy of its headers (about 7 CPU-us,
        # py-spy). The token request, which has none, skips aiohttp's itself (oauth).
        trust_env=False,
    )


def classify(exc: BaseException) -> tuple[str, str]:
    """An exception raised while sending -> (outcome code, short description)."""
    # An exception's text can quote what the receiver sent (a status line, a header), odd
    # bytes and all: made storable here, as every text from outside is.
    text = outcome.storable(f"{type(exc).__name__}: {exc}"[:500])
    if isinstance(exc, errors.ForbiddenTarget):
        return outcome.E_FORBIDDEN_TARGET, outcome.storable(exc.detail)
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return outcome.E_TIMEOUT, text
    if isinstance(exc, aiohttp.ClientConnectorDNSError | http1.DNSFailure):
        return outcome.E_DNS, text
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return outcome.E_TLS, text
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ssl.SSLError):
        return outcome.E_TLS, text
    return outcome.E_CONNECTION, text


def make_pool(settings: Settings, *, limit: int) -> http1.Pool | None:
    """The worker's direct connections for delivery POSTs, unless settings say aiohttp (or
    an egress proxy, which only aiohttp's session speaks to). In the running loop."""
    if settings.delivery_client != "direct" or settings.egress_proxy:
        return None
    return http1.Pool(
        limit=limit,
        allowed=targets.parse_networks(settings.allowed_networks),
        connect_timeout=settings.connect_timeout,
        local_addr=_local_addr(settings),
    )


async def _read_kept(content: aiohttp.StreamReader) -> bytes:
    """The body up to its end or just past what is kept, whichever comes first (a read
    returns what has arrived so far, so read until one or the other; the caller's deadline
    bounds a body that trickles)."""
    limit = outcome.MAX_KEPT_BODY + 1
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    proxy: str | None,
) -> http1.Answer:
    """The POST through aiohttp's session, read as ``http1.Pool.post`` reads it."""
    async with session.post(
        url, data=body, headers=headers, allow_redirects=False, proxy=proxy
    ) as response:
        raw = await _read_kept(response.content)
        complete = response.content.at_eof()
        if not complete:
            response.close()  # do not drain a large body: drop the connection
        return http1.Answer(
            response.status,
            raw,
            complete,
            response.content_length,
            response.headers.get("Retry-After"),
        )


async def send(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deadline: float,
    proxy: str | None = None,
    pool: http1.Pool | None = None,
) -> Outcome:
    """POST ``body`` to ``url`` (through ``pool`` when given and no proxy is); success is
    any 2xx within ``deadline`` seconds. The caller has checked ``url`` (``attempt.run``);
    every address resolved is checked on the way (the pool's or the session's resolver)."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    # The session's timeout (connect only) applies; the deadline is the guard's.
    guard = deadlines.start(deadline)
    try:
        if pool is not None and proxy is None:
            answer = await pool.post(url, body, headers)
        else:
            answer = await _post(session, url, body, headers, proxy)
    except asyncio.CancelledError:
        if not guard.expired_here():
            raise  # cancelled by someone else (shutdown): not the receiver's doing
        code, description = classify(TimeoutError())
        return Outcome(code, elapsed(), error=description)
    except Exception as exc:  # the receiver's fault, as a value
        code, description = classify(exc)
        return Outcome(code, elapsed(), error=description)
    finally:
        guard.finish()
    kept, size = outcome.keep_body(answer.body)
    # The body's size: exact when read to its end; when cut, what the receiver declared
    # (None when it declared nothing: more than 4 KiB, how much more unknown).
    response_bytes = size if answer.complete else answer.content_length
    status = answer.status
    if 200 <= status < 300:
        return Outcome(outcome.OK, elapsed(), status, kept, response_bytes=response_bytes)
    return Outcome(
        outcome.E_HTTP,
        elapsed(),
        status,
        kept,
        error=f"HTTP {status}",
        # Only parsed (retry.parse_retry_after), never stored: any bytes will do.
        retry_after=answer.retry_after if status in (429, 503) else None,
        response_bytes=response_bytes,
    )
