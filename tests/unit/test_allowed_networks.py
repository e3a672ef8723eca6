"""A worker's allowed networks as one memo key (security.targets.AllowedNetworks): the URL
check remembered for every delivery answers as the plain check does, and keying the memo
on them does not hash the networks one by one (``ipaddress``'s Python ``__hash__`` and
``__eq__``, about 1 us a delivery)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from consent_relay.delivery import attempt, outcome
from consent_relay.errors import ForbiddenTarget
from consent_relay.security import targets

CASES = [
    # (url, allowed networks, require https, refused)
    ("http://127.0.0.1:8080/hook", ["127.0.0.0/8"], False, False),
    ("http://127.0.0.1:8080/hook", [], False, True),
    ("http://10.1.2.3/hook", ["10.0.0.0/8", "::1/128"], False, False),
    ("http://10.1.2.3/hook", ["192.168.0.0/16"], False, True),
    ("http://127.0.0.1/hook", ["127.0.0.0/8"], True, True),  # not https
    ("https://[::1]/hook", ["::1/128"], True, False),
]


def _refused(check: Callable[..., None], *args: object, **kwargs: object) -> bool:
    try:
        check(*args, **kwargs)
    except ForbiddenTarget:
        return True
    return False


@pytest.mark.parametrize(("url", "cidrs", "https", "refused"), CASES)
def test_the_remembered_check_answers_as_the_check(
    url: str, cidrs: list[str], https: bool, refused: bool
) -> None:
    allowed = targets.allowed_networks(cidrs)
    assert list(allowed) == targets.parse_networks(cidrs)
    for _ in range(2):  # the first call fills the memo, the second reads it
        assert _refused(targets.check_url_cached, url, allowed, https) is refused
    plain = _refused(targets.check_url, url, targets.parse_networks(cidrs), require_https=https)
    assert plain is refused


def test_the_memo_key_does_not_hash_the_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_hashing(_self: object) -> int:
        raise AssertionError("a network hashed for the memo's key")

    allowed = targets.allowed_networks(["127.0.0.0/8", "::1/128"])
    monkeypatch.setattr(ipaddress.IPv4Network, "__hash__", no_hashing)
    monkeypatch.setattr(ipaddress.IPv6Network, "__hash__", no_hashing)
    for _ in range(3):
        targets.check_url_cached("http://127.0.0.1:9/allowed-networks", allowed, False)
    with pytest.raises(AssertionError, match="hashed"):  # a plain tuple of them does
        targets.check_url_cached("http://127.0.0.1:9/allowed-networks", tuple(allowed), False)


def test_two_parses_are_two_keys_and_each_answers_alike() -> None:
    first = targets.allowed_networks(["10.0.0.0/8"])
    second = targets.allowed_networks(["10.0.0.0/8"])
    assert first != second  # compared as the objects they are, not network by network
    assert first == first
    for allowed in (first, second):
        assert not _refused(targets.check_url_cached, "http://10.0.0.7/", allowed, False)


@pytest.mark.parametrize("kept", [True, False])
async def test_an_attempt_refuses_alike_with_a_workers_networks_or_a_list(kept: bool) -> None:
    cidrs = ["10.0.0.0/8"]
    networks = targets.allowed_networks(cidrs) if kept else targets.parse_networks(cidrs)
    result = await attempt.run(
        None,  # type: ignore[arg-type]  # refused before any request is made
        "http://127.0.0.1:9/hook",
        b"{}",
        {},
        tokens=None,
        deadline=1.0,
        allowed=networks,
    )
    assert result.code == outcome.E_FORBIDDEN_TARGET
