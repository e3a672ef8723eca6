"""SSRF guard: which destinations webhook delivery may contact.

Three layers, all sharing :func:`refusal_reason`:

* :func:`check_url` is pure (no DNS): scheme, userinfo, IP literals in any spelling
  (``127.1``, ``0x7f000001``, ``[::ffff:127.0.0.1]``...) and well-known internal names.
* :func:`check_url_resolved` adds a DNS lookup; used when a subscription is configured.
* :class:`GuardedResolver` plugs into aiohttp's connector and checks every address that is
  actually connected to, so DNS rebinding cannot slip past the configuration-time check.
* :func:`proxy_refusal` checks ``EGRESS_PROXY`` at start-up: aiohttp resolves a proxy's name
  through the guarded resolver, but connects to a literal address without asking it.

IPv4 embedded in IPv6 (mapped, compatible, 6to4, NAT64, Teredo) is unwrapped and checked too,
because :mod:`ipaddress` considers some of those wrappers global.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from consent_relay.errors import ForbiddenTarget

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str], Awaitable[list[str]]]

_N = ipaddress.ip_network
_A = ipaddress.ip_address

CLOUD_METADATA: frozenset[IPAddress] = frozenset(
    _A(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "168.63.129.16",  # Azure WireServer (a public address)
        "fd00:ec2::254",  # AWS IMDS over IPv6
    )
)

# Checked in order: the first match names the reason. Wrapper prefixes (mapped, 6to4,
# NAT64, Teredo) are handled before this table; what is left of them here is refused.
_REFUSED: tuple[tuple[Network, str], ...] = tuple(
    (_N(cidr), reason)
    for cidr, reason in (
        ("255.255.255.255/32", "broadcast"),
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "CGNAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmark"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # deprecated site-local
        ("ff00::/8", "multicast"),
        ("2001:2::/48", "benchmark"),
        ("2001::/23", "IETF protocol assignment"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
    )
)
_GLOBAL_UNICAST_V6 = _N("2000::/3")
_MAPPED = _N("::ffff:0:0/96")
_COMPATIBLE = _N("::/96")
_NAT64 = _N("64:ff9b::/96")
_NAT64_LOCAL = _N("64:ff9b:1::/48")
_LOCALHOST_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
)
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data"}
)
_PRIVATE_SUFFIXES = (".internal", ".local", ".localdomain", ".home.arpa")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_HEX_PART = re.compile(r"0[xX][0-9a-fA-F]*")
_OCT_PART = re.compile(r"0[0-7]*")
_DEC_PART = re.compile(r"[1-9][0-9]*")


class AllowedNetworks(tuple[Network, ...]):
    """Networks parsed once and kept (a worker's ``allowed_networks``), hashed and compared
    as the one object they are: ``check_url_cached`` keys its memo on them for every
    delivery, and a tuple of networks is hashed network by network in Python
    (``ipaddress``'s ``__hash__``, and ``__eq__`` on each hit)."""

    __slots__ = ()
    __hash__ = object.__hash__
    __eq__ = object.__eq__
    __ne__ = object.__ne__


def allowed_networks(cidrs: Sequence[str]) -> AllowedNetworks:
    """``parse_networks`` as one key for ``check_url_cached``'s memo."""
    return AllowedNetworks(parse_networks(cidrs))


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    """Parse a CIDR list (host bits may be set: ``10.0.0.1/8`` means ``10.0.0.0/8``)."""
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (and would reach), if any."""
    if ip in _MAPPED or ip in _NAT64 or ip in _NAT64_LOCAL:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip in _COMPATIBLE and int(ip) > 1:  # ::a.b.c.d, but not :: or ::1
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client)
    return []


def _plain_reason(ip: IPAddress) -> str | None:
    if ip in CLOUD_METADATA:
        return "cloud metadata"
    for network, reason in _REFUSED:
        if ip in network:
            return reason
    if ip.version == 6 and ip not in _GLOBAL_UNICAST_V6:
        return "reserved"
    return None


def refusal_reason(ip: IPAddress, allowed: Sequence[Network] = ()) -> str | None:
    """Why ``ip`` must not be contacted, or None when it may be.

    An address inside an ``allowed`` network is permitted, whether it is matched directly or
    through the IPv4 address it embeds (``::ffff:127.0.0.1`` with ``127.0.0.0/8`` allowed).
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        ip = ipaddress.IPv6Address(int(ip))  # drop the zone id
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
    if any(a in net for a in (ip, *embedded) for net in allowed):
        return None
    for inner in embedded:
        reason = _plain_reason(inner)
        if reason is not None:
            return reason
    if embedded and ip not in _COMPATIBLE and ip not in _NAT64_LOCAL:
        return None  # mapped, NAT64, 6to4 or Teredo wrapping a public address
    return _plain_reason(ip)


def _parse_ipv4_part(part: str) -> int | None:
    if _HEX_PART.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCT_PART.fullmatch(part):
        return int(part, 8)
    return int(part) if _DEC_PART.fullmatch(part) else None


def _parse_loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton()-style IPv4: 1 to 4 parts, decimal/octal/hex, the last filling the rest."""
    parts = host.removesuffix(".").split(".")
    values = [_parse_ipv4_part(p) for p in parts]
    nums = [v for v in values if v is not None]
    if not 1 <= len(parts) <= 4 or len(nums) != len(parts):
        return None
    *head, last = nums
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(nums))):
        return None
    value = last
    for i, v in enumerate(head):
        value |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_host_ip(host: str) -> IPAddress | None:
    """The IP address a URL host denotes, in any spelling libc accepts; None for a name."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    return _parse_loose_ipv4(host)


def _name_reason(name: str, allowed: Sequence[Network]) -> str | None:
    """Refuse names that can only mean an internal address nothing in ``allowed`` opens."""
    if name in _LOCALHOST_NAMES or name.endswith(".localhost"):
        if not any(_A(a) in n for a in ("127.0.0.1", "::1") for n in allowed):
            return "loopback (localhost name)"
    elif name in _METADATA_NAMES or name.endswith(".metadata.google.internal"):
        if not any(a in n for a in CLOUD_METADATA for n in allowed):
            return "cloud metadata name"
    elif name.endswith(_PRIVATE_SUFFIXES) and not allowed:
        return "private-use name"
    return None


def _refuse(url: str, why: str) -> ForbiddenTarget:
    return ForbiddenTarget(f"Destination {url!r} is refused: {why}.")


def check_url(url: str, allowed: Sequence[Network] = (), *, require_https: bool = False) -> None:
    """Refuse a URL by its form alone (no DNS); raises ForbiddenTarget naming the reason."""
    try:
        parsed = URL(url)
        netloc = urlsplit(url).netloc
    except ValueError as exc:
        raise _refuse(url, f"not a valid URL ({exc})") from None
    schemes = ("https",) if require_https else ("http", "https")
    if parsed.scheme not in schemes:
        raise _refuse(url, f"scheme must be {' or '.join(schemes)}, not {parsed.scheme!r}")
    if not parsed.raw_host:
        raise _refuse(url, "the URL has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in netloc:
        raise _refuse(url, "credentials (userinfo) in the URL are not allowed")
    ip = parse_host_ip(parsed.raw_host)
    if ip is not None:
        reason = refusal_reason(ip, allowed)
        if reason is not None:
            raise _refuse(url, f"{ip} is a {reason} address")
        return
    name = parsed.raw_host.lower().removesuffix(".")
    if not _HOSTNAME.fullmatch(name):
        raise _refuse(url, f"{parsed.raw_host!r} is not a valid host name")
    if re.fullmatch(r"0x[0-9a-f]*|[0-9]+", name.rsplit(".", 1)[-1]):
        raise _refuse(url, f"{parsed.raw_host!r} is neither a valid IPv4 address nor a name")
    reason = _name_reason(name, allowed)
    if reason is not None:
        raise _refuse(url, f"{name!r} is a {reason}")


def proxy_refusal(url: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why the egress proxy ``url`` must not be used, or None. Its address is held to the
    same rule as any destination (the operator opens it with ``ALLOWED_NETWORKS``), so a
    proxy cannot reach what a webhook may not. Unlike a webhook URL it may carry credentials.
    A name is checked here by its form; what it resolves to is checked on every connection."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parsed.scheme not in ("http", "https"):
        return f"the proxy's scheme must be http or https, not {parsed.scheme!r}"
    if not parsed.raw_host:
        return f"{url!r} has no host"
    ip = parse_host_ip(parsed.raw_host)
    if ip is not None:
        reason = refusal_reason(ip, allowed)
        if reason is None:
            return None
        return (
            f"the proxy's address {ip} is a {reason} address; add it to "
            f"CONSENT_RELAY_ALLOWED_NETWORKS (e.g. {ip}/{ip.max_prefixlen}) to use it"
        )
    name = parsed.raw_host.lower().removesuffix(".")
    reason = _name_reason(name, allowed)
    if reason is None:
        return None
    return (
        f"the proxy's host {name!r} is a {reason}; add its addresses to "
        "CONSENT_RELAY_ALLOWED_NETWORKS to use it"
    )


@functools.lru_cache(maxsize=4096)
def _url_refusal(url: str, allowed: tuple[Network, ...], require_https: bool) -> str | None:
    try:
        check_url(url, allowed, require_https=require_https)
    except ForbiddenTarget as exc:
        return exc.detail
    return None


def check_url_cached(url: str, allowed: tuple[Network, ...], require_https: bool) -> None:
    """``check_url`` remembered per (url, allowed, require_https): it is pure, and the
    delivery path asks it for the same few URLs again and again."""
    refusal = _url_refusal(url, allowed, require_https)
    if refusal is not None:
        raise ForbiddenTarget(refusal)


async def system_resolve(host: str) -> list[str]:
    """Resolve with the event loop's getaddrinfo, giving up after 2 seconds."""
    async with asyncio.timeout(2):
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_url_resolved(
    url: str,
    allowed: Sequence[Network] = (),
    *,
    require_https: bool = False,
    resolve: Resolve = system_resolve,
) -> None:
    """:func:`check_url`, then refuse if ANY address the host resolves to is refused.

    A failed lookup is not a refusal here: delivery will fail (and be retried) instead.
    """
    check_url(url, allowed, require_https=require_https)
    host = URL(url).raw_host or ""
    if parse_host_ip(host) is not None:
        return
    try:
        addresses = await resolve(host)
    except (OSError, TimeoutError, UnicodeError):
        return
    for address in addresses:
        ip = parse_host_ip(address)
        reason = "unparsable address" if ip is None else refusal_reason(ip, allowed)
        if reason is not None:
            raise _refuse(url, f"{host!r} resolves to {address}, a {reason} address")


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses (ForbiddenTarget) when any resolved address is refused.

    Checks the very addresses aiohttp connects to, so DNS rebinding cannot pass. aiohttp does
    not call the resolver for IP-literal hosts: pair this with :func:`check_url` per request.
    ``close()`` closes the wrapped resolver (created lazily in the running loop if not given).
    """

    def __init__(
        self, allowed: Sequence[Network] = (), *, inner: AbstractResolver | None = None
    ) -> None:
        self.allowed: tuple[Network, ...] = tuple(allowed)
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        literal = parse_host_ip(host)
        if literal is not None:
            self._check(host, str(literal))
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._check(host, result["host"])
        return results

    def _check(self, host: str, address: str) -> None:
        ip = parse_host_ip(address)
        reason = "unparsable address" if ip is None else refusal_reason(ip, self.allowed)
        if reason is not None:
            raise ForbiddenTarget(f"Host {host!r} resolves to {address}, a {reason} address.")

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
