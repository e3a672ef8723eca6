"""The API key cache remembers a key only while it hears revocations, and never the answer
of a lookup that a revocation overtook."""

from __future__ import annotations

from consent_relay.services import orgs
from consent_relay.services.orgs import KeyCache


def _listening() -> KeyCache:
    cache = KeyCache()
    cache.connected()
    return cache


def test_a_key_is_remembered_while_listening() -> None:
    cache = _listening()
    cache.remember("h1", "acme", cache.generation)
    assert cache.get("h1") == "acme"
    assert cache.get("h2") is None


def test_nothing_is_remembered_before_the_listener_connects() -> None:
    cache = KeyCache()
    cache.remember("h1", "acme", cache.generation)
    assert cache.get("h1") is None


def test_a_notice_forgets_every_key() -> None:
    cache = _listening()
    cache.remember("h1", "acme", cache.generation)
    cache.remember("h2", "other", cache.generation)
    cache.forget_all()
    assert (cache.get("h1"), cache.get("h2")) == (None, None)


def test_a_lookup_overtaken_by_a_revocation_is_not_remembered() -> None:
    cache = _listening()
    before = cache.generation  # read before the database lookup
    cache.forget_all()  # the notice arrives while the lookup runs
    cache.remember("h1", "acme", before)  # its answer may predate the revocation
    assert cache.get("h1") is None


def test_losing_the_listener_forgets_and_stops_remembering() -> None:
    cache = _listening()
    cache.remember("h1", "acme", cache.generation)
    cache.lost()
    assert cache.get("h1") is None
    cache.remember("h1", "acme", cache.generation)
    assert cache.get("h1") is None
    cache.connected()
    cache.remember("h1", "acme", cache.generation)
    assert cache.get("h1") == "acme"


def test_entries_expire_and_the_cache_stays_bounded() -> None:
    cache = KeyCache(ttl=0.0)
    cache.connected()
    cache.remember("h1", "acme", cache.generation)
    assert cache.get("h1") is None
    cache = _listening()
    for number in range(orgs.KEY_CACHE_SIZE + 1):
        cache.remember(f"h{number}", "acme", cache.generation)
    assert len(cache) <= orgs.KEY_CACHE_SIZE
