"""8. peers: what a Python team would build instead, measured beside the engine in the same run.

Each peer drains the same N deliveries of the same 1 KB body, signed the same way (the
project's ``security.signing``: the ``standardwebhooks`` package), to the same receiver, with
as many requests in flight, in one worker process; the engine does the same on PostgreSQL
with one worker process. Each drain follows a bare run of its own (the machine is shared and
noisy), as in the delivery scenario. Reported for each: deliveries/s, the worker process's CPU
microseconds a delivery, and the ratio to that adjacent bare run; then the engine against the
fastest peer (the goal in docs/benchmarks.md: at least 1.5x, per worker process).

Peers: ``pgqueuer_peer`` (pgqueuer on PostgreSQL, asyncio) and ``celery_peer`` (Celery 5 and
Redis, late acks, a threads pool).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import scenarios
from bench.receiver import ReceiverProcess
from bench.scenarios import Config, Drain
from consent_relay.security import signing

GOAL = 1.5


@dataclass(frozen=True)
class Peer:
    key: str  # in the JSON keys: peer_<key>_per_s ...
    label: str  # in the table
    path: str  # its deliveries arrive under this receiver path


PEERS = (
    Peer("pgqueuer", "pgqueuer 1 process (PostgreSQL, asyncio, aiohttp)", "/peer-pgq"),
    Peer("celery", "Celery + Redis, acks late, 1 process (threads, requests)", "/peer-celery"),
)
ENGINE_LABEL = "engine, 1 worker process (PostgreSQL)"


def fastest(results: Mapping[str, Any], keys: Sequence[str]) -> tuple[str | None, float | None]:
    """The peer with the most deliveries a second (among those that ran and finished)."""
    best: tuple[str | None, float | None] = (None, None)
    for key in keys:
        rate = results.get(f"peer_{key}_per_s")
        if not isinstance(rate, int | float) or math.isnan(rate) or rate <= 0:
            continue
        if not results.get(f"peer_{key}_complete"):
            continue
        if best[1] is None or rate > best[1]:
            best = (key, float(rate))
    return best


def summarize(results: dict[str, Any], keys: Sequence[str]) -> None:
    """The engine against the fastest peer: throughput, and CPU a delivery (the noise of a
    shared machine moves throughput more than CPU)."""
    key, rate = fastest(results, keys)
    engine = results.get("peers_engine_per_s")
    results["peers_fastest"] = key
    results["peers_fastest_per_s"] = rate
    results["peers_engine_vs_fastest"] = engine / rate if engine and rate else None
    engine_cpu = results.get("peers_engine_cpu_us")
    peer_cpu = results.get(f"peer_{key}_cpu_us") if key else None
    results["peers_cpu_fastest_vs_engine"] = (
        peer_cpu / engine_cpu if engine_cpu and peer_cpu else None
    )


def _record(results: dict[str, Any], prefix: str, drain: Drain, adjacent: float) -> None:
    results[f"{prefix}_per_s"] = drain.per_s
    results[f"{prefix}_cpu_us"] = drain.cpu_us_per_delivery
    results[f"{prefix}_adjacent_bare_per_s"] = adjacent
    results[f"{prefix}_ratio_bare"] = drain.per_s / adjacent if adjacent else None
    results[f"{prefix}_complete"] = drain.finished and drain.arrived == drain.expected
    results[f"{prefix}_peak_rss_mb"] = drain.peak_rss_mb


async def run(
    cfg: Config, receiver: ReceiverProcess, results: dict[str, Any], has_postgres: bool
) -> None:
    """The engine, then each peer, each after a bare run of its own."""
    from bench.peers import celery_peer, pgqueuer_peer  # Celery and pgqueuer: only here

    n = cfg.deliveries
    secret = signing.new_secret()
    if has_postgres:
        adjacent, _cpu = await scenarios._bare_once(cfg, receiver)
        scenarios._add_bare(results, [(adjacent, _cpu)])
        _filled, drain, counts = await scenarios._queued_drain(
            cfg,
            receiver,
            "postgres",
            paths=["/peer-engine"],
            messages=n,
            expect_prefix="/peer-engine",
            expected=n,
            worker_concurrency=cfg.concurrency,
            webhook_concurrency=cfg.concurrency,
        )
        _record(results, "peers_engine", drain, adjacent)
        results["peers_engine_complete"] = drain.finished and counts.get("delivered", 0) == n
        cfg.say(_line(ENGINE_LABEL, results, "peers_engine"))
    else:
        cfg.say("  PostgreSQL is not reachable: the engine and pgqueuer are skipped")
    for peer in PEERS:
        if peer.key == "pgqueuer" and not has_postgres:
            continue
        adjacent, _cpu = await scenarios._bare_once(cfg, receiver)
        scenarios._add_bare(results, [(adjacent, _cpu)])
        measured: Drain | None
        if peer.key == "pgqueuer":
            measured = await pgqueuer_peer.run(cfg, receiver, secret, peer.path)
        else:
            measured = await celery_peer.run(cfg, receiver, secret, peer.path)
        if measured is None:
            continue
        _record(results, f"peer_{peer.key}", measured, adjacent)
        cfg.say(_line(peer.label, results, f"peer_{peer.key}"))
    summarize(results, [peer.key for peer in PEERS])
    ratio = results["peers_engine_vs_fastest"]
    cfg.say(
        f"  engine / fastest peer ({results['peers_fastest']}): "
        + (f"{ratio:.2f}x" if ratio else "-")
        + f" (goal >= {GOAL}x)"
    )


def _line(label: str, results: Mapping[str, Any], prefix: str) -> str:
    return (
        f"  {label}: {results[f'{prefix}_per_s']:.0f}/s, "
        f"{results[f'{prefix}_cpu_us']:.0f} worker-CPU-us/delivery, bare just before "
        f"{results[f'{prefix}_adjacent_bare_per_s']:.0f}/s -> ratio "
        f"{results[f'{prefix}_ratio_bare']:.2f}"
        + ("" if results[f"{prefix}_complete"] else " (INCOMPLETE)")
    )


# -- the table -------------------------------------------------------------------------------


def _num(value: Any, unit: str = "", digits: int = 0) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}{unit}"


def rows(results: Mapping[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """The scenario's rows of the ``python -m bench`` table (scenario, figure, against, ratio,
    goal, met)."""
    out = []
    for label, prefix in [(ENGINE_LABEL, "peers_engine")] + [
        (peer.label, f"peer_{peer.key}") for peer in PEERS
    ]:
        if results.get(f"{prefix}_per_s") is None:
            continue
        out.append(
            (
                f"8. {label}",
                _num(results.get(f"{prefix}_per_s"), " /s"),
                f"bare just before {_num(results.get(f'{prefix}_adjacent_bare_per_s'), ' /s')}; "
                f"worker {_num(results.get(f'{prefix}_cpu_us'), ' us')} CPU/delivery"
                + ("" if results.get(f"{prefix}_complete") else " (INCOMPLETE)"),
                _num(results.get(f"{prefix}_ratio_bare"), "", 2),
                "(info)",
                "",
            )
        )
    ratio = results.get("peers_engine_vs_fastest")
    if out:
        met = "-" if ratio is None else "[green]yes[/green]" if ratio >= GOAL else "[red]no[/red]"
        out.append(
            (
                "8. engine / fastest peer, per process",
                f"{_num(results.get('peers_engine_per_s'), ' /s')} vs "
                f"{_num(results.get('peers_fastest_per_s'), ' /s')}",
                f"fastest: {results.get('peers_fastest') or '-'}; its CPU/delivery is "
                f"{_num(results.get('peers_cpu_fastest_vs_engine'), 'x', 2)} the engine's",
                _num(ratio, "x", 2),
                f">= {GOAL}x",
                met,
            )
        )
    return out
