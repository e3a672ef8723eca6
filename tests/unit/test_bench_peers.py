"""The peers scenario's arithmetic (bench/peers): which peer is the fastest, the engine
against it, pgqueuer's batch size, and the table's verdict."""

from __future__ import annotations

import math
from typing import Any

import pytest
from bench import peers
from bench.peers.pgqueuer_peer import batch_size


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [(200, 100), (1000, 100), (100, 50), (64, 32), (3, 1), (1, 1)],
)
def test_batch_size_is_the_engines_claim_and_at_most_half_the_tasks(
    concurrency: int, expected: int
) -> None:
    assert batch_size(concurrency) == expected
    assert concurrency < 2 or 2 * batch_size(concurrency) <= concurrency


def _peer(key: str, per_s: Any, complete: bool = True) -> dict[str, Any]:
    return {f"peer_{key}_per_s": per_s, f"peer_{key}_complete": complete}


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ({**_peer("a", 4000.0), **_peer("b", 700.0)}, ("a", 4000.0)),
        ({**_peer("a", 700.0), **_peer("b", 4000.0)}, ("b", 4000.0)),
        # An incomplete drain, a missing, NaN or zero rate never counts as the fastest.
        ({**_peer("a", 9000.0, complete=False), **_peer("b", 700.0)}, ("b", 700.0)),
        ({**_peer("a", None), **_peer("b", 700.0)}, ("b", 700.0)),
        ({**_peer("a", math.nan), **_peer("b", 0.0)}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_fastest_peer(results: dict[str, Any], expected: tuple[str | None, float | None]) -> None:
    assert peers.fastest(results, ["a", "b"]) == expected


def test_summarize_sets_the_engine_against_the_fastest_peer() -> None:
    results: dict[str, Any] = {
        **_peer("a", 4000.0),
        **_peer("b", 800.0),
        "peer_a_cpu_us": 180.0,
        "peer_b_cpu_us": 1500.0,
        "peers_engine_per_s": 6000.0,
        "peers_engine_cpu_us": 120.0,
    }
    peers.summarize(results, ["a", "b"])
    assert results["peers_fastest"] == "a"
    assert results["peers_fastest_per_s"] == 4000.0
    assert results["peers_engine_vs_fastest"] == pytest.approx(1.5)
    assert results["peers_cpu_fastest_vs_engine"] == pytest.approx(1.5)


def test_summarize_without_a_peer_has_no_ratio() -> None:
    results: dict[str, Any] = {"peers_engine_per_s": 6000.0, "peers_engine_cpu_us": 120.0}
    peers.summarize(results, ["a", "b"])
    assert results["peers_fastest"] is None
    assert results["peers_engine_vs_fastest"] is None
    assert results["peers_cpu_fastest_vs_engine"] is None


def _measured(prefix: str, per_s: float) -> dict[str, Any]:
    return {
        f"{prefix}_per_s": per_s,
        f"{prefix}_cpu_us": 200.0,
        f"{prefix}_adjacent_bare_per_s": 8000.0,
        f"{prefix}_ratio_bare": per_s / 8000.0,
        f"{prefix}_complete": True,
    }


@pytest.mark.parametrize(
    ("engine", "verdict"), [(6000.0, "[green]yes[/green]"), (5000.0, "[red]no[/red]")]
)
def test_rows_one_per_measured_peer_and_the_goal(engine: float, verdict: str) -> None:
    results = {
        **_measured("peers_engine", engine),
        **_measured("peer_pgqueuer", 4000.0),
        **_measured("peer_celery", 750.0),
    }
    peers.summarize(results, [peer.key for peer in peers.PEERS])
    rows = peers.rows(results)
    assert [row[0] for row in rows] == [
        f"8. {peers.ENGINE_LABEL}",
        *[f"8. {peer.label}" for peer in peers.PEERS],
        "8. engine / fastest peer, per process",
    ]
    assert rows[-1][4] == ">= 1.5x"
    assert rows[-1][5] == verdict
    assert "pgqueuer" in rows[-1][2]


def test_rows_leave_out_what_did_not_run() -> None:
    assert peers.rows({}) == []
    rows = peers.rows(_measured("peer_celery", 750.0))
    assert rows[0][0] == f"8. {peers.PEERS[1].label}"
    assert rows[-1][5] == "-"  # no engine figure: no verdict
