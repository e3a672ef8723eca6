"""The delivery POST on asyncio's transports and llhttp (``httptools``): aiohttp's lower layer.

Why: aiohttp's client spends about 100 CPU-us a request on this machine's 1 KB signed POST
(the bench's bare client), most of a worker's CPU a delivery; the same exchange written on a
keep-alive ``asyncio.Protocol`` with llhttp parsing the answer (the parser aiohttp itself is
built on) costs 12-23 (docs/performance-log.md, "twenty-ninth session"). A delivery is
always the same exchange: one POST with a known body and headers, one answer of which at
most ``MAX_KEPT_BODY`` bytes are kept. This module does that exchange and nothing else;
every other request (OAuth token requests, deliveries through an egress proxy, and all of
them with ``CONSENT_RELAY_DELIVERY_CLIENT=aiohttp``) goes through aiohttp (``sender``), and
the tests hold the two to the same outcomes (tests/integration/test_http1_client.py).

What it keeps from aiohttp's connector, as ``sender.make_session`` configures it:

- every address a host name resolves to is checked by the SSRF guard
  (``targets.GuardedResolver``) and connected to as checked (no second lookup: DNS
  rebinding cannot pass); an IP-literal host is checked too; lookups are kept 10 s;
- the addresses are raced as aiohttp's connector races them (``aiohappyeyeballs``, RFC 8305
  "happy eyeballs": in the resolver's order, the families interleaved, the next started
  0.25 s after the one before, the first connected wins), all within the connect timeout,
  TLS handshake included; TLS with the system's trust store and host name check; the
  egress source address;
- idle connections are kept (30 s, most recent first) per scheme, host and port, at most
  ``limit`` of them; an answer that says ``Connection: close``, an HTTP/1.0 answer, an
  unfinished body or anything odd closes the connection instead;
- no redirects, no cookies, no decompression;
- a POST is sent a second time in one case only: a kept connection that ends before a byte
  of an answer arrives (a receiver's idle timeout, 2-5 s in gunicorn, uvicorn, Node and
  Apache, racing the request on the way) is left for a new one, once. aiohttp repeats only
  idempotent methods there, and the delivery would fail with E_CONNECTION and wait for its
  schedule's next try (5 s, its user's later deliveries held back meanwhile). A webhook's
  request is idempotent by its ``webhook-id`` (Standard Webhooks: receivers deduplicate on
  it; delivery is at least once), as a request with an idempotency key is to Go's
  ``net/http``, which retries it on the same condition. A new connection that ends
  unanswered, or any answer cut short, is a failed attempt as before;
- an answer's head is bounded (``MAX_FIELD``, ``MAX_HEADERS``, ``MAX_HEAD``): a receiver
  cannot make us buffer more.

The caller's deadline (``sender.send``) covers the whole exchange; cancelled, the connection
is closed. Errors are raised as ``sender.classify`` reads them: ``DNSFailure`` (E_DNS),
``ssl.SSLError`` (E_TLS), ``TimeoutError`` (E_TIMEOUT), ``ForbiddenTarget``
(E_FORBIDDEN_TARGET), anything else (E_CONNECTION).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import aiohappyeyeballs
import httptools
from aiohttp.abc import AbstractResolver
from yarl import URL

from consent_relay.delivery import outcome
from consent_relay.security import targets

# An answer's head: aiohttp's bounds (a header's name and value together, or the reason,
# at most 8190 bytes; at most 128 headers), and at most MAX_HEAD bytes in all, read or still
# coming (aiohttp's bounds alone allow 1 MiB; 200 connections' worth is a worker's memory).
MAX_FIELD = 8190
MAX_HEADERS = 128
MAX_HEAD = 256 * 1024
KEEPALIVE = 30.0  # seconds an idle connection is kept (aiohttp's keepalive_timeout here)
DNS_TTL = 10.0  # seconds a lookup is kept (aiohttp's ttl_dns_cache here)
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address is tried (aiohttp's default)
_KEPT = outcome.MAX_KEPT_BODY + 1  # bytes read of a body: one more tells "longer than kept"


def _addr_info(address: Mapping[str, Any], port: int) -> aiohappyeyeballs.AddrInfoType:
    """A resolved address as ``socket.getaddrinfo`` gives it (what ``aiohappyeyeballs``
    connects to)."""
    family = address["family"]
    host = address["host"]
    sockaddr = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)


class DNSFailure(OSError):
    """The host name did not resolve."""


class ProtocolFailure(Exception):
    """What came back is not an HTTP/1.x answer we accept."""


class Disconnected(ConnectionError):
    """The connection ended before the answer did (``unanswered``: before any of it)."""

    def __init__(self, message: str, *, unanswered: bool) -> None:
        super().__init__(message)
        self.unanswered = unanswered


@dataclass(frozen=True, slots=True)
class Target:
    """A URL as the exchange needs it, worked out once per URL."""

    key: tuple[str, str, int]  # (scheme, host, port): which idle connections serve it
    host: str  # to resolve and, with TLS, to check the certificate against
    port: int
    tls: bool
    head: bytes  # the request line and Host header


@functools.lru_cache(maxsize=4096)
def target(url: str) -> Target:
    """``url`` worked out for the exchange (the caller has checked it: ``targets``)."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    host = parsed.raw_host.rstrip(".")
    port = parsed.port
    assert port is not None  # http and https have a default
    head = f"POST {parsed.raw_path_qs or '/'} HTTP/1.1\r\nHost: {parsed.host_port_subcomponent}\r\n"
    _check_lines(head, 2)
    key = (parsed.scheme, host, port)
    return Target(key, host, port, parsed.scheme == "https", head.encode())


def _check_lines(text: str, lines: int) -> None:
    """``text`` is ``lines`` lines, each ended by CRLF, with no other CR, LF or NUL: no value
    in it can add a header or a request of its own (aiohttp refuses the same)."""
    if text.count("\r") != lines or text.count("\n") != lines or "\0" in text:
        raise ValueError("a request line or header holds CR, LF or NUL")


def request_bytes(tgt: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request's head: request line, Host, ``headers`` as given, Content-Length.

    ``headers`` are the webhook's (checked when it was saved: ``header_rules``), ours and an
    OAuth token (the token server's text), checked here all the same (``_check_lines``)."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    _check_lines(lines, len(headers))
    return b"%s%sContent-Length: %d\r\n\r\n" % (tgt.head, lines.encode(), len(body))


@dataclass(slots=True)
class Answer:
    """What ``Pool.post`` read: the status, at most ``MAX_KEPT_BODY + 1`` bytes of the body,
    whether that is the whole body, the declared length and the Retry-After header."""

    status: int
    body: bytes
    complete: bool
    content_length: int | None
    retry_after: str | None


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time."""

    def __init__(self, pool: Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.open = False  # connected, and usable for another exchange once this one ends
        self.answered = False  # a byte of an answer to this exchange has arrived
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.head_bytes = 0  # fed to the parser before the head was complete
        self.head_size = 0  # the head's headers, as parsed
        self.header_count = 0
        self.status = 0
        self.headers_done = False
        self.interim = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.content_length: int | None = None
        self.chunked = False
        self.retry_after: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: this connection is not ours
            self.close()
            return
        self.answered = True
        if not self.headers_done:
            self.head_bytes += len(data)  # (one read's worth at most is parsed past the bound)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(complete=True, reuse=False)  # 101 Switching Protocols: not a 2xx
        except httptools.HttpParserCallbackError as exc:
            self._fail(exc.__context__ or exc)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolFailure(f"invalid HTTP answer: {exc}"))
        else:
            if not self.headers_done and self.head_bytes > MAX_HEAD:
                self._fail(ProtocolFailure(f"the answer's head is over {MAX_HEAD} bytes"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.pool._forget(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        ends_with_connection = not self.chunked and self.content_length is None
        if self.headers_done and not self.interim and ends_with_connection:
            self._finish(complete=True, reuse=False)  # a body delimited by the connection's end
            return
        self._fail(
            Disconnected(
                f"the connection ended before the answer did ({exc or 'EOF'})",
                unanswered=not self.answered,
            )
        )

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None or self.waiter.done():  # a second answer to one request
            raise ProtocolFailure("more than one answer to one request")
        self._reset()

    def on_status(self, reason: bytes) -> None:
        if len(reason) > MAX_FIELD:
            raise ProtocolFailure(f"the answer's reason phrase is over {MAX_FIELD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:  # (the same bound as data_received's, counted exactly)
            raise ProtocolFailure(f"the answer's head is over {MAX_HEAD} bytes")
        if self.header_count > MAX_HEADERS:
            raise ProtocolFailure(f"the answer has more than {MAX_HEADERS} headers")
        if len(name) + len(value) > MAX_FIELD:
            raise ProtocolFailure(f"a header of the answer is over {MAX_FIELD} bytes")
        lowered = name.lower()
        if lowered == b"content-length":
            self.content_length = int(value)  # llhttp has checked its form
        elif lowered == b"transfer-encoding":
            self.chunked = True
        elif lowered == b"retry-after" and self.retry_after is None:
            self.retry_after = value.decode("utf-8", "surrogateescape")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        self.interim = 100 <= self.status < 200 and self.status != 101

    def on_body(self, body: bytes) -> None:
        if self.interim:
            return
        room = _KEPT - self.size
        if len(body) >= room:  # as much as is kept, and more: the rest is not read
            self.chunks.append(body[:room])
            self.size += room
            self._finish(complete=False, reuse=False)
            raise _Enough
        self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if self.interim:  # 100 Continue, 103 Early Hints: the answer is still to come
            self.headers_done = False
            self.head_bytes = 0
            return
        self._finish(complete=True, reuse=self.parser.should_keep_alive())

    # -- the exchange ------------------------------------------------------------------------

    def _finish(self, *, complete: bool, reuse: bool) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        body = b"".join(self.chunks)
        declared = self.content_length
        waiter.set_result(Answer(self.status, body, complete, declared, self.retry_after))
        if not reuse:
            self.open = False

    def _fail(self, exc: BaseException) -> None:
        self.open = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()

    async def exchange(self, request: bytes, body: bytes) -> Answer:
        assert self.transport is not None
        waiter = self.waiter = self.pool.loop.create_future()
        # Nothing of the last answer on this connection may stand for this one's: a kept
        # connection that ended unanswered after a 204 (no length: ended by the close) was
        # once taken for an answer, the last one's, and the delivery for delivered.
        self._reset()
        self.answered = False
        self.transport.writelines((request, body))
        try:
            answer: Answer = await waiter
            return answer
        finally:
            self.waiter = None


class _Enough(Exception):
    """Raised from ``on_body`` to stop llhttp: what is kept has been read."""


class Pool:
    """A worker's connections for delivery POSTs (see the module's docstring)."""

    def __init__(
        self,
        *,
        limit: int,
        allowed: Sequence[targets.Network] = (),
        connect_timeout: float = 5.0,
        local_addr: tuple[str, int] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.local_addr = local_addr
        self._local_infos = aiohappyeyeballs.addr_to_addr_infos(local_addr)
        # ``resolver``: the lookups under the guard (aiohttp's default resolver if None).
        self.resolver = targets.GuardedResolver(allowed, inner=resolver)
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], collections.deque[_Connection]] = {}
        self._idle_count = 0
        self._all: set[_Connection] = set()
        self._lookups: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    @property
    def idle(self) -> int:
        """Connections kept for the next POST."""
        return self._idle_count

    @property
    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # what aiohttp verifies with
        return self._ssl

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` with ``headers`` to ``url``: the answer, or an exception."""
        tgt = target(url)
        request = request_bytes(tgt, headers, body)
        connection = self._idle_one(tgt.key)
        kept = connection is not None
        while True:
            if connection is None:
                connection = await self._connect(tgt)
            try:
                answer = await connection.exchange(request, body)
                break
            except BaseException as exc:
                connection.close()
                # A kept connection the receiver ended as the request went out, before a byte
                # of an answer (its idle timeout): once more, on a new connection.
                if not (kept and isinstance(exc, Disconnected) and exc.unanswered):
                    raise
                connection, kept = None, False
        if connection.open and not self.closed:
            self._release(connection)
        else:
            connection.close()
        return answer

    # -- idle connections ----------------------------------------------------------------

    def _idle_one(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.open and self.loop.time() - connection.idle_since < KEEPALIVE:
                return connection
            connection.close()
        return None

    def _release(self, connection: _Connection) -> None:
        if self._idle_count >= self.limit:  # as many kept as may be in flight: not this one
            connection.close()
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.key, collections.deque()).append(connection)
        self._idle_count += 1
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(KEEPALIVE, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``KEEPALIVE``."""
        self._sweeper = None
        now = self.loop.time()
        for key, idle in list(self._idle.items()):
            while idle and now - idle[0].idle_since >= KEEPALIVE:
                idle.popleft().close()
                self._idle_count -= 1
            if not idle:
                del self._idle[key]
        if self._idle_count:
            self._sweeper = self.loop.call_later(KEEPALIVE / 2, self._sweep)

    def _forget(self, connection: _Connection) -> None:
        """A connection ended (either side): not kept any more."""
        self._all.discard(connection)
        idle = self._idle.get(connection.key)
        if idle is not None and connection in idle:  # ended while idle: the receiver's doing
            idle.remove(connection)
            self._idle_count -= 1

    # -- new connections -----------------------------------------------------------------

    async def _addresses(self, host: str, port: int) -> list[dict[str, Any]]:
        """The checked addresses of ``host``, looked up at most every ``DNS_TTL`` s."""
        now = self.loop.time()
        kept = self._lookups.get(host)
        if kept is not None and now < kept[0]:
            return kept[1]
        # The guard checks an IP-literal host as it checks every address a name resolves to.
        try:
            found = [
                dict(r) for r in await self.resolver.resolve(host, port, family=socket.AF_UNSPEC)
            ]
        except OSError as exc:
            raise DNSFailure(f"cannot resolve {host!r}: {exc}") from exc
        if len(self._lookups) > 4096:
            self._lookups.clear()
        self._lookups[host] = (now + DNS_TTL, found)
        return found

    async def _connect(self, tgt: Target) -> _Connection:
        connection = _Connection(self, tgt.key)
        async with asyncio.timeout(self.connect_timeout):
            addresses = await self._addresses(tgt.host, tgt.port)
            if not addresses:
                raise DNSFailure(f"{tgt.host!r} resolves to no address")
            # Raced as aiohttp's connector races them: one that never answers (an IPv6 route
            # to nowhere) holds the next back 0.25 s, not the connect timeout. Each is
            # connected to as the guard checked it (a numeric address: no second lookup).
            sock = await aiohappyeyeballs.start_connection(
                [_addr_info(address, tgt.port) for address in addresses],
                local_addr_infos=self._local_infos,
                happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
                interleave=1,
            )
            # The transport owns the socket from here: a failed handshake closes it (uvloop
            # a turn later), as aiohttp's connector leaves it to; not closed here twice.
            await self.loop.create_connection(
                lambda: connection,
                sock=sock,
                ssl=self.ssl_context if tgt.tls else None,
                server_hostname=tgt.host if tgt.tls else None,
            )
        self._all.add(connection)
        return connection

    async def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
        self._idle_count = 0
        await self.resolver.close()
