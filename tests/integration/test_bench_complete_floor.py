"""The bench's complete floor (bench/complete.py) does the work it claims to, on both
databases: every delivery sent once, each user's in order, every body signed as Standard
Webhooks says (checked with the ``standardwebhooks`` reference), an attempt row for each and
a ledger row for each delivered one, hash-chained as the product's ledger is (one chain for the
organization, whole across two processes). A floor that skipped any of it would flatter
itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from bench import complete, db, minimal
from standardwebhooks.webhooks import Webhook

from consent_relay.delivery import http1
from consent_relay.security import targets
from tests.receiver import Receiver

COUNT = 48  # twelve users, four deliveries each


async def assert_one_unbroken_chain(store: complete.Store) -> None:
    """The floor's ledger is one chain, recomputed here from its rows: numbered 1..COUNT
    without a gap, each entry's ``prev_hash`` the previous one's hash (the first's 64 zeros)
    and its hash the SHA-256 of that and its fields; one entry a delivery."""
    rows = await store.ledger()
    assert [row[0] for row in rows] == list(range(1, COUNT + 1))
    assert len({row[2] for row in rows}) == COUNT
    prev = "0" * 64
    for seq, user_id, pk, sha, status, at, prev_hash, entry_hash in rows:
        assert prev_hash == prev
        fields = orjson.dumps(
            ["org_complete", seq, f"msg_{pk}", pk, "event.created", user_id, "wh_complete",
             at, status, sha]
        )  # fmt: skip
        assert entry_hash == hashlib.sha256(prev.encode() + b"\n" + fields).hexdigest()
        prev = entry_hash


@pytest.fixture(params=["sqlite", "postgres"])
async def floor_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'floor.db'}"
        return
    async with db.fresh_postgres("floor") as url:
        yield url


async def test_the_complete_floor_sends_each_delivery_once_in_order_signed_and_recorded(
    floor_url: str, receiver: Receiver
) -> None:
    store = await complete.open_store(floor_url, COUNT)
    pool = http1.Pool(limit=8, allowed=targets.parse_networks(["127.0.0.0/8"]))
    try:  # through the engine's client, as the bench runs it
        post = minimal.direct_post(pool)
        ok, errors = await complete.drain(store, post, receiver.url("/floor"), b"", 8)
        delivered, attempts, ledger = await store.counts()
        await assert_one_unbroken_chain(store)
    finally:
        await pool.close()
        await store.close()
    assert (ok, errors) == (COUNT, 0)
    assert (delivered, attempts, ledger) == (COUNT, COUNT, COUNT)
    got = receiver.at("/floor")
    assert len(got) == COUNT
    verifier = Webhook(base64.b64encode(complete.KEY).decode())
    numbers_by_user: dict[str, list[int]] = {}
    for item in got:
        payload = verifier.verify(item.body, dict(item.headers))
        entity = payload["data"]["entity"]
        number = int(entity["id"].removeprefix("evt-"))
        numbers_by_user.setdefault(entity["user"]["id"], []).append(number)
        assert orjson.loads(item.body)["type"] == "event.created"
    assert len(numbers_by_user) == COUNT // complete.PER_USER
    for numbers in numbers_by_user.values():
        assert numbers == sorted(numbers)  # each user's deliveries one after the other
        assert len(numbers) == complete.PER_USER


async def test_two_complete_floor_processes_share_the_work_each_delivery_sent_once(
    receiver: Receiver,
) -> None:
    """As the bench's scale-out runs it (one process fills, both drain one database): the
    two together send every delivery once, each user's in order, and record it once; a floor
    whose claims overlapped would count deliveries twice and flatter its scale-out."""
    async with db.fresh_postgres("floor2") as url:
        stores = [
            await complete.open_store(url, COUNT),
            await complete.open_store(url, COUNT, fill=False),
        ]
        try:
            async with aiohttp.ClientSession() as session:  # (and through aiohttp's)
                post = minimal.aiohttp_post(session)
                sent = await asyncio.gather(
                    *(
                        complete.drain(store, post, receiver.url("/floor2"), b"", 4)
                        for store in stores
                    )
                )
            counts = await stores[0].counts()
            await assert_one_unbroken_chain(stores[0])
        finally:
            for store in stores:
                await store.close()
    assert sum(ok for ok, _errors in sent) == COUNT
    assert all(errors == 0 for _ok, errors in sent)
    assert counts == (COUNT, COUNT, COUNT)
    numbers_by_user: dict[str, list[int]] = {}
    for item in receiver.at("/floor2"):
        entity = orjson.loads(item.body)["data"]["entity"]
        number = int(entity["id"].removeprefix("evt-"))
        numbers_by_user.setdefault(entity["user"]["id"], []).append(number)
    numbers = [n for user_numbers in numbers_by_user.values() for n in user_numbers]
    assert len(numbers) == len(set(numbers)) == COUNT  # each delivery once
    assert len(numbers_by_user) == COUNT // complete.PER_USER
    for user_numbers in numbers_by_user.values():
        assert user_numbers == sorted(user_numbers)
        assert len(user_numbers) == complete.PER_USER


async def test_the_minimal_loop_sends_and_counts_each_delivery_once(
    floor_url: str, receiver: Receiver
) -> None:
    """Through either client: every row sent once and counted once (a count taken across
    the POST's await lost the other senders' updates)."""
    store = await minimal.open_store(floor_url, COUNT)
    pool = http1.Pool(limit=8, allowed=targets.parse_networks(["127.0.0.0/8"]))
    try:
        ok, errors = await minimal.drain(
            store, minimal.direct_post(pool), receiver.url("/minimal"), b"{}", 8
        )
    finally:
        await pool.close()
        await store.close()
    assert (ok, errors) == (COUNT, 0)
    assert len(receiver.at("/minimal")) == COUNT
