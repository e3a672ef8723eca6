"""The egress proxy is held to the SSRF guard like any destination, at start-up: aiohttp
connects to a literal proxy address without asking the guarded resolver, so without this
check ``EGRESS_PROXY=http://10.0.0.5:3128`` reached a network ``ALLOWED_NETWORKS`` closes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from consent_relay.cli import app
from consent_relay.security.targets import parse_networks, proxy_refusal
from consent_relay.settings import Settings

REFUSED = [
    # (proxy, allowed networks, words the reason holds)
    ("http://10.0.0.5:3128", [], "10.0.0.5 is a private address"),
    ("http://127.0.0.1:8888", ["10.0.0.0/8"], "127.0.0.1 is a loopback address"),
    ("http://127.1:8888", [], "loopback"),
    ("http://0x7f000001:8888", [], "loopback"),
    ("http://[::ffff:127.0.0.1]:8888", [], "loopback"),
    ("http://[::1]:8888", [], "::1 is a loopback address"),
    ("http://169.254.169.254", [], "cloud metadata"),
    ("http://user:pass@192.168.1.2:3128", [], "192.168.1.2 is a private address"),
    ("http://localhost:8888", [], "localhost"),
    ("http://metadata.google.internal", [], "cloud metadata name"),
    ("socks5://203.0.114.9:1080", [], "scheme must be http or https"),
    ("http://", [], "no host"),
]

ALLOWED = [
    ("http://10.0.0.5:3128", ["10.0.0.5/32"]),
    ("http://user:pass@10.0.0.5:3128", ["10.0.0.0/8"]),  # credentials are fine for a proxy
    ("http://127.0.0.1:8888", ["127.0.0.0/8"]),
    ("http://localhost:8888", ["127.0.0.0/8"]),
    ("https://[::1]:8443", ["::1/128"]),
    ("http://8.8.8.8:3128", []),
    ("http://proxy.example.com:3128", []),  # a name: its addresses are checked on connect
]


@pytest.mark.parametrize(("proxy", "allowed", "words"), REFUSED)
def test_a_proxy_the_guard_refuses(proxy: str, allowed: list[str], words: str) -> None:
    refusal = proxy_refusal(proxy, parse_networks(allowed))
    assert refusal is not None
    assert words in refusal


@pytest.mark.parametrize(("proxy", "allowed"), ALLOWED)
def test_a_proxy_the_guard_allows(proxy: str, allowed: list[str]) -> None:
    assert proxy_refusal(proxy, parse_networks(allowed)) is None


def test_settings_refuse_a_private_proxy_naming_the_setting_to_change() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(egress_proxy="http://alice:s3cret@10.0.0.5:3128")
    message = str(refused.value)
    assert "egress_proxy" in message
    assert "CONSENT_RELAY_EGRESS_PROXY is refused" in message
    assert "CONSENT_RELAY_ALLOWED_NETWORKS (e.g. 10.0.0.5/32)" in message
    assert "s3cret" not in message  # the URL's password is not echoed


def test_settings_take_a_proxy_in_an_allowed_network_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSENT_RELAY_EGRESS_PROXY", "http://10.0.0.5:3128")
    monkeypatch.setenv("CONSENT_RELAY_ALLOWED_NETWORKS", "10.0.0.0/24")
    assert Settings().egress_proxy == "http://10.0.0.5:3128"
    monkeypatch.setenv("CONSENT_RELAY_ALLOWED_NETWORKS", "192.168.0.0/16")
    with pytest.raises(ValidationError, match=r"10\.0\.0\.5 is a private address"):
        Settings()


@pytest.mark.parametrize("command", [["serve"], ["worker"]])
def test_serve_and_worker_refuse_to_start(
    command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CONSENT_RELAY_ALLOWED_NETWORKS", raising=False)
    env = {
        "CONSENT_RELAY_EGRESS_PROXY": "http://172.16.0.1:3128",
        "CONSENT_RELAY_DATA_DIR": str(tmp_path),
        # Were the proxy let through, start-up would stop here instead (no server runs).
        "CONSENT_RELAY_DATABASE_URL": "mysql://nowhere/relay",
    }
    result = CliRunner().invoke(app, command, env=env)
    assert result.exit_code != 0
    assert isinstance(result.exception, ValidationError)
    assert "172.16.0.1 is a private address" in str(result.exception)
