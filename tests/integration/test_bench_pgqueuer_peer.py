"""The pgqueuer peer of the bench (bench/peers/pgqueuer_peer.py) end to end, small: jobs
enqueued in a fresh database, drained by its own worker process, every body at the receiver,
the queue empty, the worker's CPU reported, the database dropped afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench import db, scenarios
from bench.peers import common, pgqueuer_peer
from bench.receiver import ReceiverProcess

from consent_relay import crypto
from consent_relay.security import signing
from consent_relay.storage import databases

pytestmark = pytest.mark.postgres


async def test_pgqueuer_peer_drains_every_job_in_its_own_process(tmp_path: Path) -> None:
    cfg = scenarios.Config(workdir=tmp_path, key=crypto.new_key())
    cfg.deliveries = 60
    cfg.concurrency = 8
    async with ReceiverProcess(tmp_path / "receiver.log") as receiver:
        drain = await pgqueuer_peer.run(cfg, receiver, signing.new_secret(), "/rec-peer")
        records = await receiver.records()
    assert drain.finished, (tmp_path / "children.log").read_text()
    assert drain.arrived == 60
    assert [body for _at, body in records] == [common.body().decode()] * 60
    assert drain.cpu_s > 0
    assert drain.peak_rss_mb > 0
    left = await databases.database_names(db.pg_url("postgres"))
    assert f"bench_{os.getpid()}_peers" not in left  # dropped
