"""The garbage collector of a service process (consent_relay/gctune.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from consent_relay import crypto, gctune, runner
from consent_relay.api import app as api_app
from consent_relay.settings import Settings


def test_settle_freezes_what_start_up_left_and_raises_the_young_threshold() -> None:
    """In a process of its own: freezing is for the whole life of a process."""
    script = textwrap.dedent(
        """
        import gc
        from consent_relay import gctune
        assert gc.get_freeze_count() == 0
        kept = [[n] for n in range(10_000)]  # alive at start-up: frozen
        gctune.settle()
        assert gc.get_freeze_count() >= 10_000, gc.get_freeze_count()
        assert gc.get_threshold() == (gctune.YOUNG, *gctune.OLDER)
        # cycles made afterwards are still collected
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("own_process", [False, True])
async def test_the_app_settles_the_collector_only_when_it_owns_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_process: bool
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(gctune, "settle", lambda: calls.append(None))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        data_dir=tmp_path,
        secret_key=crypto.new_key(),
        admin_token="t" * 32,
    )
    app = api_app.create_app(settings, own_process=own_process)
    async with app.router.lifespan_context(app):
        pass
    assert len(calls) == (1 if own_process else 0)


async def test_a_worker_process_settles_the_collector_once_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``consent-relay worker`` (and each supervised worker process) runs ``run_process``: the
    collector is settled after start-up, before the first delivery."""
    events: list[str] = []
    monkeypatch.setattr(gctune, "settle", lambda: events.append("settle"))

    async def worker(*_args: object, **_kwargs: object) -> None:
        events.append("run")

    monkeypatch.setattr(runner, "run", worker)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        data_dir=tmp_path,
        secret_key=crypto.new_key(),
        admin_token="t" * 32,
    )
    await runner.run_process(
        settings, concurrency=1, on_ready=lambda: events.append("ready"), signals=()
    )
    assert events == ["ready", "settle", "run"]


def test_the_test_process_has_settled_too() -> None:
    """This test process froze what collection loaded (tests/conftest.py,
    ``pytest_collection_finish``), so a full collection here walks only what the tests made
    since: otherwise its pauses (0.35-0.7 s measured) run out the short timeouts of the
    end-to-end tests. The modules and compiled schemas alone are well over 100,000 objects."""
    assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()
