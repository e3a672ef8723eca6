"""SSRF guard tests.

Everything here is classification or fake resolvers: no traffic leaves 127.0.0.0/8 / ::1 and
no external name is ever looked up.
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from consent_relay.errors import ForbiddenTarget
from consent_relay.security.targets import (
    GuardedResolver,
    Network,
    Resolve,
    check_url,
    check_url_resolved,
    parse_host_ip,
    parse_networks,
    refusal_reason,
)

NONE: list[Network] = []
LOOPBACK_OPEN = parse_networks(["127.0.0.0/8", "::1/128"])


def reason(address: str, allowed: list[Network] = NONE) -> str | None:
    return refusal_reason(ipaddress.ip_address(address), allowed)


# --- address classification ---------------------------------------------------------------

REFUSED_ADDRESSES = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.253", "link-local"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("254.1.2.3", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("198.18.0.1", "benchmark"),
    ("198.19.255.255", "benchmark"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("192.0.0.8", "IETF protocol assignment"),
    ("192.0.0.170", "IETF protocol assignment"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("192.0.0.192", "cloud metadata"),
    ("168.63.129.16", "cloud metadata"),
    # IPv6
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("fec0::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf::1", "link-local"),
    ("ff02::1", "multicast"),
    ("ff05::1:3", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmark"),
    ("2001:10::1", "IETF protocol assignment"),
    ("100::1", "reserved"),
    ("4000::1", "reserved"),
    ("::ffff:0:7f00:1", "reserved"),  # SIIT "IPv4-translated"
    ("fd00:ec2::254", "cloud metadata"),
    # IPv4-mapped
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:192.168.0.1", "private"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("::ffff:100.64.0.1", "CGNAT"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:255.255.255.255", "broadcast"),
    # IPv4-compatible (deprecated; refused even when the IPv4 address is public)
    ("::127.0.0.1", "loopback"),
    ("::10.1.2.3", "private"),
    ("::169.254.169.254", "cloud metadata"),
    ("::8.8.8.8", "reserved"),
    # 6to4
    ("2002:7f00:1::", "loopback"),
    ("2002:a00:1::1", "private"),
    ("2002:c0a8:101::1", "private"),
    ("2002:a9fe:a9fe::", "cloud metadata"),
    # NAT64 well-known and local-use prefixes
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::10.0.0.1", "private"),
    ("64:ff9b::169.254.169.254", "cloud metadata"),
    ("64:ff9b:1::a00:1", "private"),
    ("64:ff9b:1::808:808", "reserved"),
    # Teredo: server 65.54.227.120, client obfuscated with XOR 0xffffffff
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # client 127.0.0.1
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # client 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:5601:5601", "cloud metadata"),  # client 169.254.169.254
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "private"),  # server 10.0.0.1
]


@pytest.mark.parametrize(("address", "expected"), REFUSED_ADDRESSES)
def test_refused_addresses(address: str, expected: str) -> None:
    assert reason(address) == expected


PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "9.9.9.9",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "169.253.255.255",
    "192.0.1.255",
    "192.88.98.255",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:81c::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo client 8.8.8.8
]


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_allowed(address: str) -> None:
    assert reason(address) is None


@pytest.mark.parametrize(
    ("address", "cidrs", "expected"),
    [
        ("127.0.0.1", ["127.0.0.0/8"], None),
        ("127.0.0.1", ["127.0.0.1/32"], None),
        ("127.0.0.2", ["127.0.0.1/32"], "loopback"),
        ("10.1.2.3", ["10.0.0.0/8"], None),
        ("10.1.2.3", ["10.0.0.1/8"], None),  # host bits tolerated
        ("10.1.2.3", ["192.168.0.0/16"], "private"),
        ("::1", ["::1/128"], None),
        ("::1", ["127.0.0.0/8"], "loopback"),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], None),  # unwrapped address is allowed
        ("64:ff9b::a00:1", ["10.0.0.0/8"], None),
        ("2002:a00:1::", ["10.0.0.0/8"], None),
        ("::ffff:127.0.0.1", ["::ffff:0:0/96"], None),  # raw address is allowed
        ("fd00::5", ["fd00::/8"], None),
        ("fe80::1%eth0", ["fe80::/10"], None),
        ("169.254.169.254", ["10.0.0.0/8", "127.0.0.0/8"], "cloud metadata"),
        ("169.254.169.254", ["169.254.169.254/32"], None),
    ],
)
def test_allowed_networks_override(address: str, cidrs: list[str], expected: str | None) -> None:
    assert reason(address, parse_networks(cidrs)) == expected


def test_parse_networks() -> None:
    assert parse_networks([" 10.0.0.1/8 ", "", "::1"]) == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]
    with pytest.raises(ValueError, match="does not appear"):
        parse_networks(["not-a-cidr"])


# --- host spellings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("10.0x10203", "10.1.2.3"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("1.2.3.4.", "1.2.3.4"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
    ],
)
def test_parse_host_ip_spellings(host: str, expected: str) -> None:
    assert parse_host_ip(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "",
        "256.1",
        "1.256.0.0",
        "0x100000000",
        "4294967296",
        "08.0.0.1",
        "1_0.0.0.1",
        "0x7f_00.0.0.1",
        "+127.0.0.1",
        "127.0.0.0.1",
        "1..1",
        "[::1",
        "::g",
        "١٢٧.0.0.1",  # non-ASCII digits
    ],
)
def test_parse_host_ip_names_and_garbage(host: str) -> None:
    assert parse_host_ip(host) is None


# --- URLs ---------------------------------------------------------------------------------

REFUSED_URLS = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://127.0.0.1.:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::1]:8443/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[64:ff9b::127.0.0.1]/", "loopback"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://0xa9fea9fe/", "cloud metadata"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://100.100.100.200/", "cloud metadata"),
    ("https://10.0.0.1/", "private"),
    ("https://192.168.0.10:8443/x", "private"),
    ("http://100.64.1.1/", "CGNAT"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://localhost/", "localhost"),
    ("http://LOCALHOST./", "localhost"),
    ("http://api.localhost/", "localhost"),
    ("http://localhost.localdomain/", "localhost"),
    ("http://ip6-localhost/", "localhost"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://metadata/", "cloud metadata"),
    ("http://db.internal/", "private-use name"),
    ("http://printer.local/", "private-use name"),
    ("http://nas.home.arpa/", "private-use name"),
    ("ftp://example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://example.com/", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("example.com/hook", "scheme"),
    ("//example.com/hook", "scheme"),
    ("http:///hook", "no host"),
    ("http://user:pass@example.com/", "userinfo"),
    ("http://user@example.com/", "userinfo"),
    ("http://:@example.com/", "userinfo"),
    ("http://@example.com/", "userinfo"),
    ("https://example.com@127.0.0.1/", "userinfo"),
    ("http://exa mple.com/", "not a valid host name"),
    ("http://%6cocalhost/", "not a valid host name"),
    ("http://127.0.0.1%09/", "not a valid host name"),
    ("http://08.0.0.1/", "neither a valid IPv4"),
    ("http://1.2.3.256/", "neither a valid IPv4"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://[::1/", "not a valid URL"),
]


@pytest.mark.parametrize(("url", "fragment"), REFUSED_URLS)
def test_check_url_refuses(url: str, fragment: str) -> None:
    with pytest.raises(ForbiddenTarget) as info:
        check_url(url, NONE)
    assert fragment in info.value.detail
    assert url in info.value.detail


ALLOWED_URLS = [
    "https://example.com/hook",
    "http://example.com/hook",
    "HTTPS://Example.COM:8443/hook?x=1#f",
    "https://hooks.example.co.uk./v1",
    "https://bücher.example/hook",
    "https://under_score.example.com/",
    "https://8.8.8.8/",
    "https://1.1.1.1:443/",
    "http://134744072/",  # 8.8.8.8 spelled as an integer: public, so fine
    "https://[2606:4700:4700::1111]/",
    "https://[::ffff:8.8.8.8]/",
    "https://internal.example.com/",
    "https://localhost.example.com/",
    "https://metadata.example.com/",
    "https://1e100.net/",
]


@pytest.mark.parametrize("url", ALLOWED_URLS)
def test_check_url_allows(url: str) -> None:
    check_url(url, NONE)


@pytest.mark.parametrize(
    ("url", "cidrs"),
    [
        ("http://127.0.0.1:8080/", ["127.0.0.0/8"]),
        ("http://127.1/", ["127.0.0.0/8"]),
        ("http://[::ffff:127.0.0.1]/", ["127.0.0.0/8"]),
        ("http://[::1]/", ["::1/128"]),
        ("http://localhost:8080/", ["127.0.0.0/8"]),
        ("http://svc.localhost/", ["::1/128"]),
        ("http://10.1.2.3/", ["10.0.0.0/8"]),
        ("http://db.internal/", ["10.0.0.0/8"]),
        ("http://169.254.169.254/", ["169.254.0.0/16"]),
        ("http://metadata.google.internal/", ["169.254.169.254/32"]),
    ],
)
def test_check_url_allowed_networks(url: str, cidrs: list[str]) -> None:
    check_url(url, parse_networks(cidrs))


@pytest.mark.parametrize(
    ("url", "cidrs", "fragment"),
    [
        ("http://localhost/", ["10.0.0.0/8"], "localhost"),
        ("http://127.0.0.2/", ["127.0.0.1/32"], "loopback"),
        ("http://[::1]/", ["127.0.0.0/8"], "loopback"),
        ("http://metadata.google.internal/", ["10.0.0.0/8"], "cloud metadata"),
        ("http://169.254.169.254/", ["10.0.0.0/8"], "cloud metadata"),
    ],
)
def test_check_url_allowed_networks_are_narrow(url: str, cidrs: list[str], fragment: str) -> None:
    with pytest.raises(ForbiddenTarget, match=fragment):
        check_url(url, parse_networks(cidrs))


def test_require_https() -> None:
    check_url("https://example.com/", NONE, require_https=True)
    with pytest.raises(ForbiddenTarget, match="scheme must be https, not 'http'"):
        check_url("http://example.com/", NONE, require_https=True)
    with pytest.raises(ForbiddenTarget, match="scheme must be https"):
        check_url("http://127.0.0.1/", LOOPBACK_OPEN, require_https=True)


def test_forbidden_target_is_a_422() -> None:
    with pytest.raises(ForbiddenTarget) as info:
        check_url("http://127.0.0.1/", NONE)
    assert info.value.status == 422
    assert "127.0.0.1 is a loopback address" in info.value.detail


# --- check_url_resolved -------------------------------------------------------------------


def fake_dns(table: dict[str, list[str]]) -> tuple[list[str], Resolve]:
    calls: list[str] = []

    async def resolve(host: str) -> list[str]:
        calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return calls, resolve


DNS = {
    "public.test": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "mixed.test": ["93.184.215.14", "127.0.0.1"],
    "v6-loop.test": ["2606:4700:4700::1111", "::1"],
    "meta.test": ["169.254.169.254"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "private.test": ["10.0.0.7"],
    "zoned.test": ["fe80::1%eth0"],
    "garbage.test": ["not-an-ip"],
}


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://mixed.test/", "resolves to 127.0.0.1, a loopback address"),
        ("https://v6-loop.test/", "resolves to ::1, a loopback address"),
        ("https://meta.test/", "cloud metadata"),
        ("https://mapped.test/", "private"),
        ("https://private.test/", "private"),
        ("https://zoned.test/", "link-local"),
        ("https://garbage.test/", "unparsable"),
    ],
)
async def test_check_url_resolved_refuses(url: str, fragment: str) -> None:
    calls, resolve = fake_dns(DNS)
    with pytest.raises(ForbiddenTarget, match=fragment):
        await check_url_resolved(url, NONE, resolve=resolve)
    assert calls == [url.split("/")[2]]


async def test_check_url_resolved_allows_public_and_allowed() -> None:
    calls, resolve = fake_dns(DNS)
    await check_url_resolved("https://public.test/", NONE, resolve=resolve)
    allowed = parse_networks(["10.0.0.0/8"])
    await check_url_resolved("https://private.test/", allowed, resolve=resolve)
    await check_url_resolved("https://mapped.test/", allowed, resolve=resolve)
    assert calls == ["public.test", "private.test", "mapped.test"]


async def test_check_url_resolved_failure_is_not_a_refusal() -> None:
    calls, resolve = fake_dns(DNS)
    await check_url_resolved("https://nxdomain.test/", NONE, resolve=resolve)
    assert calls == ["nxdomain.test"]

    async def slow(host: str) -> list[str]:
        raise TimeoutError

    await check_url_resolved("https://slow.test/", NONE, resolve=slow)


async def test_check_url_resolved_runs_check_url_first() -> None:
    calls, resolve = fake_dns(DNS)
    with pytest.raises(ForbiddenTarget, match="scheme"):
        await check_url_resolved("http://public.test/", NONE, require_https=True, resolve=resolve)
    with pytest.raises(ForbiddenTarget, match="loopback"):
        await check_url_resolved("http://127.1/", NONE, resolve=resolve)
    await check_url_resolved("https://8.8.8.8/", NONE, resolve=resolve)
    assert calls == []  # IP literals and refused URLs are never looked up


async def test_check_url_resolved_default_resolver_localhost() -> None:
    # Only "localhost" (hosts file), never an external name.
    await check_url_resolved("http://localhost/", LOOPBACK_OPEN)


# --- GuardedResolver ----------------------------------------------------------------------


class FakeResolver(AbstractResolver):
    """Returns the next answer for the host on each call."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int, int]] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append((host, port, family))
        addresses = self.answers[host].pop(0) if host in self.answers else [host]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (["93.184.215.14", "127.0.0.1"], "127.0.0.1, a loopback"),
        (["127.0.0.1", "93.184.215.14"], "127.0.0.1, a loopback"),
        (["2606:4700:4700::1111", "::1"], "::1, a loopback"),
        (["169.254.169.254"], "cloud metadata"),
        (["::ffff:10.0.0.1"], "private"),
        (["fe80::1%eth0"], "link-local"),
        (["100.64.0.9"], "CGNAT"),
        (["nonsense"], "unparsable"),
    ],
)
async def test_guarded_resolver_refuses_any_bad_address(answer: list[str], fragment: str) -> None:
    inner = FakeResolver({"hook.test": [answer]})
    guarded = GuardedResolver(NONE, inner=inner)
    with pytest.raises(ForbiddenTarget, match=fragment):
        await guarded.resolve("hook.test", 443)


async def test_guarded_resolver_passes_results_through() -> None:
    inner = FakeResolver({"hook.test": [["93.184.215.14", "2606:4700:4700::1111"]]})
    guarded = GuardedResolver(NONE, inner=inner)
    results = await guarded.resolve("hook.test", 443, socket.AF_UNSPEC)
    assert [r["host"] for r in results] == ["93.184.215.14", "2606:4700:4700::1111"]
    assert inner.calls == [("hook.test", 443, socket.AF_UNSPEC)]


async def test_guarded_resolver_blocks_dns_rebinding() -> None:
    inner = FakeResolver({"rebind.test": [["93.184.215.14"], ["10.0.0.1"]]})
    guarded = GuardedResolver(NONE, inner=inner)
    first = await guarded.resolve("rebind.test", 443)
    assert first[0]["host"] == "93.184.215.14"
    with pytest.raises(ForbiddenTarget, match=r"10\.0\.0\.1, a private"):
        await guarded.resolve("rebind.test", 443)
    assert len(inner.calls) == 2


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1", "2130706433", "::1", "::ffff:127.0.0.1", "169.254.169.254"]
)
async def test_guarded_resolver_checks_literal_hosts(host: str) -> None:
    inner = FakeResolver({})
    with pytest.raises(ForbiddenTarget):
        await GuardedResolver(NONE, inner=inner).resolve(host, 80)
    assert inner.calls == []  # refused before the inner resolver is asked


async def test_guarded_resolver_allowed_networks() -> None:
    inner = FakeResolver({"svc.test": [["10.0.0.1", "::ffff:10.0.0.2"]]})
    guarded = GuardedResolver(parse_networks(["10.0.0.0/8"]), inner=inner)
    results = await guarded.resolve("svc.test", 80)
    assert len(results) == 2
    assert guarded.allowed == (ipaddress.ip_network("10.0.0.0/8"),)


async def test_guarded_resolver_close_closes_inner() -> None:
    inner = FakeResolver({})
    guarded = GuardedResolver(NONE, inner=inner)
    await guarded.close()
    assert inner.closed
    await GuardedResolver(NONE).close()  # nothing created yet: nothing to close


async def test_guarded_resolver_default_inner_localhost() -> None:
    guarded = GuardedResolver(NONE)
    try:
        with pytest.raises(ForbiddenTarget, match="loopback"):
            await guarded.resolve("localhost", 80, socket.AF_INET)
    finally:
        await guarded.close()


async def test_guarded_resolver_inside_aiohttp_session() -> None:
    """The refusal surfaces from session.get unchanged; an allowed loopback target connects."""
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        inner = FakeResolver({"hook.test": [["127.0.0.1"], ["127.0.0.1"]]})
        refusing = aiohttp.TCPConnector(resolver=GuardedResolver(NONE, inner=inner))
        async with aiohttp.ClientSession(connector=refusing) as session:
            with pytest.raises(ForbiddenTarget, match="loopback"):
                await session.get(f"http://hook.test:{port}/hook")
        permissive = aiohttp.TCPConnector(
            resolver=GuardedResolver(parse_networks(["127.0.0.0/8"]), inner=inner)
        )
        async with (
            aiohttp.ClientSession(connector=permissive) as session,
            session.get(f"http://hook.test:{port}/hook") as response,
        ):
            assert await response.text() == "ok"
    finally:
        await runner.cleanup()


def test_case_count_is_at_least_100() -> None:
    total = len(REFUSED_ADDRESSES) + len(PUBLIC_ADDRESSES) + len(REFUSED_URLS) + len(ALLOWED_URLS)
    assert total >= 100
