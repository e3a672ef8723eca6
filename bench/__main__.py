"""``python -m bench``: the benchmarks of docs/benchmarks.md, a table (or ``--json``, one object).

python -m bench                     # everything, full size (a quarter of an hour or so)
python -m bench --quick             # everything, small: a smoke run under a minute
python -m bench --only bare,delivery --deliveries 50000
python -m bench --json              # one JSON object on stdout; progress on stderr
python -m bench --repeat 3          # the ratio scenarios three times each, medians reported
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench import db, peers, scenarios
from bench.receiver import ReceiverProcess
from consent_relay import crypto

SCENARIOS = (
    "bare",
    "delivery",
    "scale-out",
    "ingest",
    "latency",
    "isolation",
    "backlog",
    "peers",
)
ALIASES = {"scaleout": "scale-out", "scale_out": "scale-out", "deliveries": "delivery"}
REQUIRED_KEYS = (
    "bare_per_s",
    "sqlite_per_s",
    "postgres_per_s",
    "ratio_sqlite",
    "ratio_postgres",
    "postgres_2_workers_per_s",
    "scale_out_ratio",
    "latency_p50_ms",
    "latency_p99_ms",
    "ingest_per_s",
    "isolation_ratio",
    "backlog_peak_rss_mb",
    "backlog_drain_per_s",
    "peers_engine_vs_fastest",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Consent Relay benchmarks (docs/benchmarks.md)."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--quick", action="store_true", help="everything, small (< 1 minute)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios among: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--deliveries", type=int, help="deliveries per drain (default 20,000)")
    parser.add_argument(
        "--scale-out-deliveries",
        type=int,
        help="deliveries per scale-out drain (default: --deliveries, grown until the minimal "
        "loop's one-process drain lasts 3 s, at most 200,000)",
    )
    parser.add_argument("--backlog", type=int, help="backlog deliveries (default 1,000,000)")
    parser.add_argument(
        "--backlog-db", choices=("postgres", "sqlite"), default="postgres", help="backlog database"
    )
    parser.add_argument("--concurrency", type=int, default=200, help="requests in flight")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run delivery, scale-out, isolation and peers this many times; report the medians",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--save", type=Path, help="also write the JSON object to this file")
    return parser.parse_args(argv)


def chosen(only: str) -> list[str]:
    if not only:
        return list(SCENARIOS)
    names = [ALIASES.get(n.strip(), n.strip()) for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return [n for n in SCENARIOS if n in names]


def make_config(
    args: argparse.Namespace, workdir: Path, say: Callable[[str], None]
) -> scenarios.Config:
    cfg = scenarios.Config(workdir=workdir, key=crypto.new_key(), say=say)
    cfg.concurrency = args.concurrency
    cfg.backlog_db = args.backlog_db
    if args.quick:
        cfg.quick = True
        cfg.deliveries = 2_000
        cfg.backlog = 5_000
        cfg.bare_repeats = 1
        cfg.ingest_seconds = 2.0
        cfg.latency_seconds = 2.0
        cfg.isolation_per_webhook = 100
        cfg.isolation_held = 2_000
        cfg.scale_out_seconds = 0.0  # small: no calibration
    if args.deliveries:
        cfg.deliveries = args.deliveries
    if args.backlog:
        cfg.backlog = args.backlog
    if args.scale_out_deliveries:
        cfg.scale_out_deliveries = args.scale_out_deliveries
    return cfg


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    names = chosen(args.only)
    if "delivery" in names and "bare" not in names:
        names.insert(0, "bare")  # the ratios need the ceiling of this run
    workdir = Path(tempfile.mkdtemp(prefix="consent-relay-bench-"))
    cfg = make_config(args, workdir, say)
    results: dict[str, Any] = {key: None for key in REQUIRED_KEYS}
    results.update(
        {
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "quick": cfg.quick,
            "deliveries": cfg.deliveries,
            "concurrency": cfg.concurrency,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "scenarios": names,
            "load_average_at_start": list(os.getloadavg()),
        }
    )
    has_postgres = await db.postgres_available()
    if not has_postgres:
        say(f"PostgreSQL is not reachable on {db.PG_HOST}:{db.PG_PORT}: its scenarios are skipped")
    results["postgres_available"] = has_postgres
    began = time.perf_counter()
    failed = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            if has_postgres:
                await stack.enter_async_context(db.postgres_template())
            receiver = await stack.enter_async_context(
                ReceiverProcess(cfg.workdir / "receiver.log")
            )
            for name in names:
                needs_pg = name in ("scale-out", "ingest", "latency", "isolation") or (
                    name == "backlog" and cfg.backlog_db == "postgres"
                )
                if needs_pg and not has_postgres:
                    continue
                with scenarios.timed(cfg, name):
                    try:
                        repeat = args.repeat if name in REPEATABLE else 1
                        await _repeated(repeat, name, cfg, receiver, results, has_postgres)
                    except Exception as exc:
                        failed = True
                        say(f"  {name} FAILED: {type(exc).__name__}: {exc}")
                        results.setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"
    finally:
        results["seconds"] = round(time.perf_counter() - began, 1)
        results["load_average_at_end"] = list(os.getloadavg())
        if args.keep or failed:
            say(f"work folder (child logs): {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


REPEATABLE = ("delivery", "scale-out", "isolation", "peers")


async def _repeated(
    repeat: int,
    name: str,
    cfg: scenarios.Config,
    receiver: ReceiverProcess,
    results: dict[str, Any],
    has_postgres: bool,
) -> None:
    """Run a scenario ``repeat`` times; each figure it reports becomes the median of its runs
    (the runs themselves are kept under ``<name>_runs``); bare runs join the shared pool."""
    if repeat <= 1:
        await _one(name, cfg, receiver, results, has_postgres)
        return
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        one = copy.deepcopy(results)
        await _one(name, cfg, receiver, one, has_postgres)
        runs.append(
            {
                key: value
                for key, value in one.items()
                if isinstance(value, int | float) and value != results.get(key)
            }
        )
        # Lists (the pool of bare runs grows run after run) and flags: the latest run's.
        for key, value in one.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                results[key] = value
    for key in {key for run in runs for key in run}:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values and not isinstance(values[0], bool):
            results[key] = statistics.median(values)
    if results.get("bare_runs_per_s"):
        results["bare_per_s"] = statistics.median(results["bare_runs_per_s"])
        results["bare_cpu_us"] = statistics.median(results["bare_runs_cpu_us"])
    results[f"{name}_runs"] = runs
    cfg.say(f"  ({name}: medians of {repeat} runs)")


async def _one(
    name: str,
    cfg: scenarios.Config,
    receiver: ReceiverProcess,
    results: dict[str, Any],
    has_postgres: bool,
) -> None:
    if name == "bare":
        await scenarios.bare(cfg, receiver, results)
    elif name == "delivery":
        kinds = ["sqlite", "postgres"] if has_postgres else ["sqlite"]
        await scenarios.delivery(cfg, receiver, results, kinds)
    elif name == "scale-out":
        await scenarios.scale_out(cfg, receiver, results)
    elif name == "ingest":
        await scenarios.ingest(
            cfg, receiver, results, ["postgres"] if cfg.quick else ["postgres", "sqlite"]
        )
    elif name == "latency":
        await scenarios.latency(cfg, receiver, results)
    elif name == "isolation":
        await scenarios.isolation(cfg, receiver, results)
    elif name == "backlog":
        await scenarios.backlog(cfg, receiver, results)
    elif name == "peers":
        await peers.run(cfg, receiver, results, has_postgres)


# -- the table -------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def _busy(r: dict[str, Any], one: str, two: str) -> str:
    """The machine's busy share through the one- and the two-process drains: "86% -> 97%"."""
    shares = [r.get(f"{key}_machine_busy") for key in (one, two)]
    return " -> ".join(_fmt(None if s is None else s * 100, "%") for s in shares)


def _met(value: Any, goal: Callable[[float], bool]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "[green]yes[/green]" if goal(float(value)) else "[red]no[/red]"


# Below this two-process gain of its own, the minimal loop found no second core to take in
# the run (its one process already at the receiver's or the machine's limit), and "0.95 of
# the floor's gain" would pass an engine whose second process adds nothing: no reference.
SCALE_OUT_REFERENCE_MIN = 1.10


def scale_out_verdict(scale: float | None, floor_scale: float | None) -> str:
    """Row 3's "met": the engine's two-process gain at least 0.95 of the minimal loop's, in
    the same run, where the minimal loop's gain is a reference at all."""
    if not scale or not floor_scale:
        return "-"
    if floor_scale < SCALE_OUT_REFERENCE_MIN:
        return f"[yellow]no reference[/yellow] (floor < {SCALE_OUT_REFERENCE_MIN:.2f}x)"
    return _met(scale / floor_scale, lambda v: v >= 0.95)


def _server(server_us: Any) -> str:
    """The PostgreSQL server's CPU a delivery, where measured (same way for every loop)."""
    return "" if server_us is None else f"; database server {_fmt(server_us, ' us')}"


def table(results: dict[str, Any]) -> Table:
    r = results
    out = Table(title=f"Consent Relay benchmarks ({r.get('command', '')})")
    out.add_column("scenario")
    out.add_column("figure", justify="right")
    out.add_column("against (same run)", justify="right")
    out.add_column("ratio", justify="right")
    out.add_column("goal")
    out.add_column("met")
    bare = r.get("bare_per_s")
    out.add_row(
        "1. bare aiohttp (ceiling)",
        _fmt(bare, " /s"),
        f"{r.get('concurrency')} in flight, {r.get('body_bytes', '-')} B",
        "",
        "",
        "",
    )
    out.add_row(
        "1. bare direct client (info)",
        _fmt(r.get("bare_direct_per_s"), " /s"),
        f"the worker's POST (delivery/http1.py) alone; CPU/request "
        f"{_fmt(r.get('bare_direct_cpu_us'), ' us')} vs aiohttp's "
        f"{_fmt(r.get('bare_cpu_us'), ' us')}",
        "",
        "(info)",
        "",
    )
    for kind in ("sqlite", "postgres"):
        ratio = r.get(f"ratio_{kind}")
        out.add_row(
            f"2. delivery, {kind} ({r.get('deliveries'):,})",
            _fmt(r.get(f"{kind}_per_s"), " /s"),
            f"bare around {_fmt(r.get(f'{kind}_adjacent_bare_per_s'), ' /s')}; CPU/request "
            f"worker {_fmt(r.get(f'{kind}_cpu_us'), ' us')} vs bare "
            f"{_fmt(r.get('bare_cpu_us'), ' us')}{_server(r.get(f'{kind}_server_cpu_us'))}",
            _fmt(ratio, "", 2),
            ">= 0.6",
            _met(ratio, lambda v: v >= 0.6),
        )
    floors = (
        ("minimal loop", "minimal", "claim 100 / POST / mark done, nothing else"),
        (
            "complete loop",
            "complete_floor",
            "+ per-user order, message read, signing, attempt and chained ledger rows",
        ),
    )
    for label, key, what in floors:
        for kind in ("sqlite", "postgres"):
            out.add_row(
                f"2. floor: {label}, {kind}",
                _fmt(r.get(f"{key}_{kind}_per_s"), " /s"),
                f"{what}; CPU/request {_fmt(r.get(f'{key}_{kind}_cpu_us'), ' us')}"
                f"{_server(r.get(f'{key}_{kind}_server_cpu_us'))}",
                _fmt(r.get(f"ratio_{key}_{kind}"), "", 2),
                "(info)",
                "",
            )
    # The goal is relative to the floor loop's own two-process gain in the same run (on two
    # cores shared with PostgreSQL and the receiver the floor itself gets ~1.4x).
    scale = r.get("scale_out_ratio")
    floor_scale = r.get("minimal_scale_out_ratio")
    of_floor = scale / floor_scale if scale and floor_scale else None
    out.add_row(
        f"3. scale-out, postgres, 2 processes ({_fmt(r.get('scale_out_deliveries'))})",
        _fmt(r.get("postgres_2_workers_per_s"), " /s"),
        f"1 process {_fmt(r.get('postgres_1_worker_per_s'), ' /s')}; "
        f"{_fmt(scale, 'x', 2)} vs the floor's {_fmt(floor_scale, 'x', 2)}; machine busy "
        f"{_busy(r, 'postgres_1_proc', 'postgres_2_proc')} vs the floor's "
        f"{_busy(r, 'minimal_1_process', 'minimal_2_processes')}",
        _fmt(of_floor, "", 2),
        ">= 0.95 of floor",
        scale_out_verdict(scale, floor_scale),
    )
    for label, key in (
        ("minimal loop", "minimal"),
        ("complete loop", "complete"),
        ("minimal loop through aiohttp", "minimal_aiohttp"),
    ):
        out.add_row(
            f"3. floor: {label}, 2 processes",
            _fmt(r.get(f"{key}_2_processes_per_s"), " /s"),
            f"1 process {_fmt(r.get(f'{key}_1_process_per_s'), ' /s')}",
            _fmt(r.get(f"{key}_scale_out_ratio"), "x", 2),
            "(info)",
            "",
        )
    p99 = r.get("latency_p99_ms")
    out.add_row(
        "4. latency API answer -> receiver",
        f"p50 {_fmt(r.get('latency_p50_ms'), ' ms', 1)} / p99 {_fmt(p99, ' ms', 1)}",
        f"at {_fmt(r.get('latency_rate_per_s'), ' events/s')}",
        "",
        "p99 <= 50 ms",
        _met(p99, lambda v: v <= 50),
    )
    ingest = r.get("ingest_per_s")
    out.add_row(
        "5. ingest, postgres, workers off",
        f"{_fmt(ingest, ' /s')} (p99 {_fmt(r.get('ingest_p99_ms'), ' ms')})",
        f"1-insert endpoint {_fmt(r.get('ingest_ceiling_per_s'), ' /s')}; CPU/request "
        f"{_fmt(r.get('ingest_cpu_ms'), ' ms', 2)} vs "
        f"{_fmt(r.get('ingest_ceiling_cpu_ms'), ' ms', 2)}",
        _fmt(r.get("ingest_ratio"), "", 2),
        ">= 1,500 /s",
        _met(ingest, lambda v: v >= 1500),
    )
    if r.get("ingest_2_api_per_s") is not None:
        out.add_row(
            "5. ingest, postgres, 2 API processes",
            f"{_fmt(r.get('ingest_2_api_per_s'), ' /s')} (p99 "
            f"{_fmt(r.get('ingest_2_api_p99_ms'), ' ms')})",
            f"1 process {_fmt(ingest, ' /s')}; CPU/request (both processes) "
            f"{_fmt(r.get('ingest_2_api_cpu_ms'), ' ms', 2)} vs "
            f"{_fmt(r.get('ingest_cpu_ms'), ' ms', 2)}",
            _fmt(r.get("ingest_2_api_scale"), "x", 2),
            "(info)",
            "",
        )
    if r.get("ingest_sqlite_per_s") is not None:
        out.add_row(
            "5. ingest, sqlite, workers off",
            f"{_fmt(r.get('ingest_sqlite_per_s'), ' /s')} (p99 "
            f"{_fmt(r.get('ingest_sqlite_p99_ms'), ' ms')})",
            f"1-insert endpoint {_fmt(r.get('ingest_ceiling_per_s'), ' /s')}",
            _fmt(r.get("ingest_sqlite_ratio"), "", 2),
            "(info)",
            "",
        )
    iso = r.get("isolation_ratio")
    out.add_row(
        "6. isolation, 9 healthy + 1 hanging",
        _fmt(r.get("isolation_with_hang_per_s"), " /s"),
        f"without it {_fmt(r.get('isolation_without_hang_per_s'), ' /s')}",
        _fmt(iso, "", 2),
        ">= 0.9",
        _met(iso, lambda v: v >= 0.9),
    )
    held = r.get("isolation_held_ratio")
    out.add_row(
        "6b. isolation, 9 healthy + a disabled webhook's due backlog",
        _fmt(r.get("isolation_with_held_per_s"), " /s"),
        f"without it {_fmt(r.get('isolation_without_hang_per_s'), ' /s')}",
        _fmt(held, "", 2),
        ">= 0.9",
        _met(held, lambda v: v >= 0.9),
    )
    rss = r.get("backlog_peak_rss_mb")
    out.add_row(
        f"7. backlog {_fmt(r.get('backlog_deliveries'))} ({r.get('backlog_db', '-')})",
        f"peak RSS {_fmt(rss, ' MB', 1)}",
        f"drain {_fmt(r.get('backlog_drain_per_s'), ' /s')}",
        "",
        "<= 300 MB",
        _met(rss, lambda v: v <= 300),
    )
    for row in peers.rows(r):
        out.add_row(*row)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    progress = Console(stderr=True, soft_wrap=True)

    def say(line: str) -> None:
        progress.print(line, markup=False, highlight=False)

    import uvloop

    results = uvloop.run(run(args, say))
    if args.save:
        args.save.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    if args.json:
        sys.stdout.write(orjson.dumps(results).decode() + "\n")
    else:
        Console(width=200).print(table(results))
        say(f"total {results['seconds']} s")
    if results.get("failures"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
