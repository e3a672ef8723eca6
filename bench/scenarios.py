"""The benchmarks of docs/benchmarks.md (the peers scenario lives in bench/peers/). Each one
adds its figures to a shared result dict.

Every child process (receiver, worker, bare client, API) runs on its own event loop, so the
load generator and the thing measured never share one. Every loop here is bounded in count
and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import db, loadgen, machine, pipeline
from bench.apiproc import ApiServer, cli_command
from bench.procs import Child, child_env
from bench.receiver import ReceiverProcess
from consent_relay.runtime import Context
from consent_relay.settings import Settings

Results = dict[str, Any]
Say = Callable[[str], None]


@dataclass
class Config:
    workdir: Path
    key: str
    quick: bool = False
    deliveries: int = 20_000
    backlog: int = 1_000_000
    concurrency: int = 200
    bare_repeats: int = 3
    ingest_seconds: float = 10.0
    ingest_connections: int = 64
    latency_seconds: float = 10.0
    latency_rate_cap: float = 300.0
    isolation_per_webhook: int = 2_000
    isolation_timeout: float = 2.0
    isolation_held: int = 50_000  # due heads of a disabled webhook beside the healthy ones
    # Scale-out's deliveries a drain: given (``--scale-out-deliveries``), or grown from
    # ``deliveries`` until the minimal loop's one-process drain lasts ``scale_out_seconds``
    # (at most ``scale_out_most``): ``scale_out_count``.
    scale_out_deliveries: int | None = None
    scale_out_seconds: float = 3.0
    scale_out_most: int = 200_000
    backlog_db: str = "postgres"
    say: Say = field(default=lambda _line: None)

    @property
    def log(self) -> Path:
        return self.workdir / "children.log"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- the worker, draining a queue ----------------------------------------------------------------


@dataclass
class Drain:
    expected: int
    arrived: int
    seconds: float
    finished: bool
    children: list[dict[str, Any]]
    db_cpu_s: float | None = None
    server_cpu_s: float | None = None  # the PostgreSQL server's, from "go" to done
    machine_busy: float | None = None  # the whole machine's busy share, from "go" to done

    @property
    def cpu_s(self) -> float:
        return float(sum(c.get("cpu_s", 0.0) for c in self.children))

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_s / self.arrived * 1e6 if self.arrived else float("nan")

    @property
    def per_s(self) -> float:
        return self.arrived / self.seconds if self.seconds > 0 else 0.0

    @property
    def peak_rss_mb(self) -> float:
        return max((c.get("VmHWM", 0) for c in self.children), default=0) / 1024


def worker_children(cfg: Config, settings: Settings, processes: int, within: float) -> list[Child]:
    """``processes`` worker processes, each told so, as ``consent-relay worker --processes N``
    starts them."""
    env = child_env(db.settings_env(settings))
    argv = ["worker", "--max-seconds", str(within + 120), "--processes", str(processes)]
    return [Child(argv, env, cfg.log) for _ in range(processes)]


async def drain(
    receiver: ReceiverProcess,
    children: Sequence[Child],
    *,
    expected: int,
    prefix: str,
    ctx: Context | None,
    within: float = 300.0,
    poll: float = 0.02,
) -> Drain:
    """Start the (READY) worker processes together and time them until ``expected``
    requests reached the receiver under ``prefix`` (and, with ``ctx``, until the database
    holds no pending delivery: every result recorded)."""
    await receiver.reset()
    server_before = await db.server_cpu_s() if ctx is not None and not ctx.store.is_sqlite else None
    machine_before = machine.cpu_times()
    began = time.time()
    for child in children:
        child.send("go")
    arrived_at = await receiver.wait_for(expected, prefix, within=within, interval=poll)
    finished = arrived_at is not None
    done_at = arrived_at or time.time()
    if finished and ctx is not None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await db.pending_count(ctx) == 0:
                done_at = time.time()
                break
            await asyncio.sleep(poll)
        else:
            finished = False
    busy = machine.busy_share(machine_before, machine.cpu_times())
    arrived = await receiver.count(prefix)
    db_cpu = await db.backend_cpu_s(ctx) if ctx is not None else None
    server_cpu = None
    if server_before is not None:
        server_after = await db.server_cpu_s()
        server_cpu = None if server_after is None else server_after - server_before
    for child in children:
        child.send("stop")
    reports = [await child.finish() for child in children]
    return Drain(
        expected,
        min(arrived, expected),
        done_at - began,
        finished,
        reports,
        db_cpu,
        server_cpu,
        busy,
    )


# -- 1. bare -------------------------------------------------------------------------------------


async def _client_once(
    cfg: Config, receiver: ReceiverProcess, mode: str, path: str, *extra: str
) -> tuple[float, float]:
    """One run of a client child (``bare`` or ``minimal``): requests per second, and CPU
    microseconds per request."""
    rate, cpu_us, _server_us = await _client_run(cfg, receiver, mode, path, *extra)
    return rate, cpu_us


async def _client_run(
    cfg: Config,
    receiver: ReceiverProcess,
    mode: str,
    path: str,
    *extra: str,
    server: bool = False,
) -> tuple[float, float, float | None]:
    """``_client_once``, and with ``server`` the PostgreSQL server's CPU microseconds per
    request from "go" to the child's report (its fill before "go" left out)."""
    body = db.render_body("event.created", db.message_parameters(0, "user-0000000"))
    body_file = cfg.workdir / "body.json"
    body_file.write_bytes(body)
    args = [mode, "--url", receiver.url(path), "--count", str(cfg.deliveries)]
    args += ["--concurrency", str(cfg.concurrency), "--body-file", str(body_file), *extra]
    child = Child(args, child_env({}), cfg.log)
    server_s = None
    async with child:
        await child.start()
        before = await db.server_cpu_s() if server else None
        child.send("go")
        report = await child.finish(within=600)
        after = await db.server_cpu_s() if before is not None else None
        if before is not None and after is not None:
            server_s = after - before
    if report.get("errors"):
        cfg.say(f"  {mode}: {report['errors']} errors")
    ok = int(report.get("ok", 0))
    elapsed = float(report.get("elapsed", 0.0))
    rate = ok / elapsed if elapsed else 0.0
    cpu_us = float(report.get("cpu_s", 0.0)) / ok * 1e6 if ok else float("nan")
    server_us = server_s / ok * 1e6 if server_s is not None and ok else None
    return rate, cpu_us, server_us


async def _bare_once(cfg: Config, receiver: ReceiverProcess) -> tuple[float, float]:
    return await _client_once(cfg, receiver, "bare", "/bare")


async def _minimal_once(
    cfg: Config, receiver: ReceiverProcess, kind: str, *, complete: bool = False
) -> tuple[float, float, float | None]:
    """The floor loop of ``bench.minimal`` (``complete``: ``bench.complete``) on a fresh
    database of ``kind``: per second, CPU-us a delivery, and on PostgreSQL the server's
    CPU-us a delivery."""
    extra = ["--complete"] if complete else []
    async with db.database(kind, "minimal") as url:
        return await _client_run(
            cfg,
            receiver,
            "minimal",
            "/minimal",
            "--db-url",
            url,
            *extra,
            server=kind == "postgres",
        )


async def _minimal_processes(
    cfg: Config,
    receiver: ReceiverProcess,
    processes: int,
    *,
    count: int,
    complete: bool = False,
    client: str = "direct",
) -> tuple[float, float | None]:
    """The floor loop (``complete``: the complete floor's) in ``processes`` processes sharing
    one PostgreSQL database, ``count`` deliveries in all: deliveries/s, and the machine's
    busy share from "go" to the last report."""
    body_file = cfg.workdir / "body.json"
    body_file.write_bytes(db.render_body("event.created", db.message_parameters(0, "u-0")))
    async with db.database("postgres", "minimal") as url:
        children = []
        for n in range(processes):
            args = ["minimal", "--url", receiver.url("/minimal"), "--db-url", url]
            args += ["--count", str(count), "--concurrency", str(cfg.concurrency)]
            args += ["--body-file", str(body_file)] + (["--no-fill"] if n else [])
            args += ["--complete"] if complete else []
            args += ["--client", client]
            children.append(Child(args, child_env({}), cfg.log))
        try:
            for child in children:  # the first one creates and fills the table
                await child.start()
            before = machine.cpu_times()
            for child in children:
                child.send("go")
            reports = [await child.finish(within=600) for child in children]
            busy = machine.busy_share(before, machine.cpu_times())
        finally:
            for child in children:
                await child.close()
    ok = sum(int(r.get("ok", 0)) for r in reports)
    elapsed = max(float(r.get("elapsed", 0.0)) for r in reports)
    return (ok / elapsed if elapsed else 0.0), busy


async def bare(cfg: Config, receiver: ReceiverProcess, results: Results) -> None:
    runs = [await _bare_once(cfg, receiver) for _ in range(cfg.bare_repeats)]
    _add_bare(results, runs)
    results["body_bytes"] = len(db.render_body("event.created", db.message_parameters(0, "u")))
    cfg.say(
        f"  bare: {results['bare_per_s']:.0f} req/s (runs: {[round(r) for r, _ in runs]}), "
        f"{results['bare_cpu_us']:.0f} CPU-us/request"
    )
    # The worker's direct client (delivery/http1.py) alone, for information: the ceiling
    # stays aiohttp's (issue 12), and the engine's POST no longer goes through aiohttp.
    direct = [await _client_once(cfg, receiver, "bare", "/bare", "--direct") for _ in runs]
    results["bare_direct_per_s"] = statistics.median(rate for rate, _ in direct)
    results["bare_direct_cpu_us"] = statistics.median(cpu for _, cpu in direct)
    cfg.say(
        f"  bare, direct client: {results['bare_direct_per_s']:.0f} req/s, "
        f"{results['bare_direct_cpu_us']:.0f} CPU-us/request"
    )


def bracketed(before: float, after: float) -> float:
    """A drain's ceiling: the mean of the bare runs just before and just after it. On this
    shared machine two bare runs a drain apart differed by up to a fifth (e.g. 10,330 and
    8,282 /s around one drain of 40,000), and a ratio against the run before alone moved
    with it. A run that failed (0) leaves the other."""
    if before and after:
        return (before + after) / 2
    return before or after


def _add_bare(results: Results, runs: Sequence[tuple[float, float]]) -> None:
    """Bare runs join the run's pool; the ceiling is the median of them all."""
    pool = results.setdefault("bare_runs_per_s", [])
    cpu_pool = results.setdefault("bare_runs_cpu_us", [])
    for rate, cpu_us in runs:
        pool.append(rate)
        cpu_pool.append(cpu_us)
    results["bare_per_s"] = statistics.median(pool)
    results["bare_cpu_us"] = statistics.median(cpu_pool)


# -- 2. delivery ---------------------------------------------------------------------------------


async def _queued_drain(
    cfg: Config,
    receiver: ReceiverProcess,
    kind: str,
    *,
    paths: Sequence[str],
    messages: int,
    expect_prefix: str,
    expected: int,
    processes: int = 1,
    check_db: bool = True,
    within: float = 300.0,
    poll: float = 0.02,
    held: int = 0,
    **overrides: Any,
) -> tuple[db.FillResult, Drain, dict[str, int]]:
    """A fresh database, one org, webhooks at ``paths`` of the receiver, ``messages``
    messages to each (over messages/4 users), drained by worker processes. With ``held``,
    another org's disabled webhook holds that many due heads (one message a user) first."""
    async with db.database(kind) as url:
        settings = db.settings_for(url, cfg.workdir, cfg.key, **overrides)
        async with db.open_context(settings) as ctx:
            if held:
                off = await db.create_org_and_webhooks(
                    ctx, "held", [receiver.url("/held")], enabled=False
                )
                await db.fill(ctx, "held", off, held, held)
            hooks = await db.create_org_and_webhooks(
                ctx, "bench", [receiver.url(path) for path in paths]
            )
            children = worker_children(cfg, settings, processes, within)
            try:
                # The workers start up (imports, connections) while the queue fills.
                starting = asyncio.gather(*(child.start() for child in children))
                try:
                    filled = await db.fill(ctx, "bench", hooks, messages, max(1, messages // 4))
                finally:
                    await starting
                result = await drain(
                    receiver,
                    children,
                    expected=expected,
                    prefix=expect_prefix,
                    ctx=ctx if check_db else None,
                    within=within,
                    poll=poll,
                )
            finally:
                for child in children:
                    await child.close()
            counts = await db.status_counts(ctx)
    return filled, result, counts


async def delivery(
    cfg: Config, receiver: ReceiverProcess, results: Results, kinds: Sequence[str]
) -> None:
    """Each drain is bracketed by bare runs, one just before and one just after it (the
    machine is shared and noisy): the ratios are taken against their mean (``bracketed``);
    the median of all bare runs is reported too."""
    n = cfg.deliveries
    for kind in kinds:
        before, before_cpu = await _bare_once(cfg, receiver)
        filled, result, counts = await _queued_drain(
            cfg,
            receiver,
            kind,
            paths=["/dlv"],
            messages=n,
            expect_prefix="/dlv",
            expected=n,
            worker_concurrency=cfg.concurrency,
            webhook_concurrency=cfg.concurrency,
        )
        after, after_cpu = await _bare_once(cfg, receiver)
        _add_bare(results, [(before, before_cpu), (after, after_cpu)])
        adjacent, adjacent_cpu = bracketed(before, after), bracketed(before_cpu, after_cpu)
        results[f"{kind}_per_s"] = result.per_s
        results[f"{kind}_adjacent_bare_per_s"] = adjacent
        results[f"{kind}_bare_before_per_s"] = before
        results[f"{kind}_bare_after_per_s"] = after
        results[f"ratio_{kind}"] = result.per_s / adjacent if adjacent else None
        results[f"{kind}_cpu_us"] = result.cpu_us_per_delivery
        results[f"cpu_ratio_{kind}"] = results["bare_cpu_us"] / result.cpu_us_per_delivery
        if result.db_cpu_s is not None:
            results[f"{kind}_db_cpu_us"] = result.db_cpu_s / max(1, result.arrived) * 1e6
        if result.server_cpu_s is not None:
            results[f"{kind}_server_cpu_us"] = result.server_cpu_s / max(1, result.arrived) * 1e6
        results[f"{kind}_fill_per_s"] = filled.per_s
        # The floor: a minimal claim / POST / mark-done loop on the same database, right
        # after: what any persistent engine can reach here (bench/minimal.py).
        floor, floor_cpu, floor_server = await _minimal_once(cfg, receiver, kind)
        results[f"minimal_{kind}_per_s"] = floor
        results[f"ratio_minimal_{kind}"] = floor / adjacent if adjacent else None
        results[f"minimal_{kind}_cpu_us"] = floor_cpu
        results[f"minimal_{kind}_server_cpu_us"] = floor_server
        # ... and the complete floor: that loop plus what the engine's guarantees cost at the
        # least (per-user order, the message read, signing, attempt and chained ledger rows).
        full, full_cpu, full_server = await _minimal_once(cfg, receiver, kind, complete=True)
        results[f"complete_floor_{kind}_per_s"] = full
        results[f"ratio_complete_floor_{kind}"] = full / adjacent if adjacent else None
        results[f"complete_floor_{kind}_cpu_us"] = full_cpu
        results[f"complete_floor_{kind}_server_cpu_us"] = full_server
        results[f"{kind}_complete"] = result.finished and counts.get("delivered", 0) == n
        db_cpu = results.get(f"{kind}_db_cpu_us")
        cfg.say(
            f"  delivery {kind}: {result.per_s:.0f}/s over {result.seconds:.2f} s, "
            f"bare before / after {before:.0f} / {after:.0f}/s -> ratio "
            f"{results[f'ratio_{kind}']:.2f}; "
            f"worker {result.cpu_us_per_delivery:.0f} CPU-us/delivery (bare "
            f"{adjacent_cpu:.0f}/request)"
            + (f", database backends {db_cpu:.0f} CPU-us/delivery" if db_cpu else "")
            + _server_note(results.get(f"{kind}_server_cpu_us"))
            + f"; fill {filled.per_s:.0f}/s; statuses {counts}"
        )
        inside = [pipeline.describe(report) for report in result.children]
        results[f"{kind}_worker_inside"] = [
            {k: r.get(k) for k in ("threads", "sqlite_transactions", "steps")}
            for r in result.children
        ]
        for line in filter(None, inside):
            cfg.say(f"    worker {kind}: {line}")
        cfg.say(
            f"  minimal loop {kind}: {floor:.0f}/s -> ratio {results[f'ratio_minimal_{kind}']:.2f}"
            f" ({floor_cpu:.0f} CPU-us/delivery{_server_note(floor_server)})"
        )
        cfg.say(
            f"  complete floor {kind}: {full:.0f}/s -> ratio "
            f"{results[f'ratio_complete_floor_{kind}']:.2f} ({full_cpu:.0f} CPU-us/delivery"
            f"{_server_note(full_server)})"
        )


def _server_note(server_us: float | None) -> str:
    """The PostgreSQL server's share, measured the same way for the engine and the floors."""
    return "" if server_us is None else f", database server {server_us:.0f} CPU-us/delivery"


# -- 3. scale-out ----------------------------------------------------------------------------------


def scale_out_count(count: int, per_s: float, seconds: float, most: int) -> int:
    """Deliveries a scale-out drain: ``count``, or, when a one-process drain of ``count`` at
    ``per_s`` lasts less than ``seconds``, the least multiple of ``count`` that lasts that
    long, at most ``most`` (never less than ``count``)."""
    if seconds <= 0 or per_s <= 0 or count <= 0 or count >= per_s * seconds:
        return count
    return max(count, min(most, math.ceil(per_s * seconds / count) * count))


async def _scale_out_deliveries(cfg: Config, receiver: ReceiverProcess) -> int:
    """``cfg.scale_out_deliveries``, calibrated once when not given: the minimal loop's
    one-process drain of ``cfg.deliveries`` is the probe (the fastest drain of the scenario:
    on a fast machine 20,000 deliveries drain in half a second, mostly its start and end)."""
    if cfg.scale_out_deliveries is None:
        count = cfg.deliveries
        if cfg.scale_out_seconds > 0:
            per_s, _busy = await _minimal_processes(cfg, receiver, 1, count=count)
            grown = scale_out_count(count, per_s, cfg.scale_out_seconds, cfg.scale_out_most)
            cfg.say(
                f"  scale-out probe: the minimal loop drained {count:,} at {per_s:.0f}/s "
                f"({count / per_s if per_s else 0:.2f} s): {grown:,} deliveries a drain "
                f"(one process's drain at least {cfg.scale_out_seconds:g} s, at most "
                f"{cfg.scale_out_most:,})"
            )
            count = grown
        cfg.scale_out_deliveries = count
    return cfg.scale_out_deliveries


async def scale_out(cfg: Config, receiver: ReceiverProcess, results: Results) -> None:
    n = await _scale_out_deliveries(cfg, receiver)
    results["scale_out_deliveries"] = n
    rates: dict[int, float] = {}
    for processes in (1, 2):
        _filled, result, counts = await _queued_drain(
            cfg,
            receiver,
            "postgres",
            paths=["/so"],
            messages=n,
            expect_prefix="/so",
            expected=n,
            processes=processes,
            worker_concurrency=cfg.concurrency,
            webhook_concurrency=cfg.concurrency,
        )
        rates[processes] = result.per_s
        db_us = (result.db_cpu_s or 0.0) / max(1, result.arrived) * 1e6
        server_us = (result.server_cpu_s or 0.0) / max(1, result.arrived) * 1e6
        results[f"postgres_{processes}_proc_cpu_us"] = result.cpu_us_per_delivery
        results[f"postgres_{processes}_proc_db_cpu_us"] = db_us
        results[f"postgres_{processes}_proc_server_cpu_us"] = server_us
        results[f"postgres_{processes}_proc_machine_busy"] = result.machine_busy
        # The server's from "go" to done is the drain's; the backends' counts the fill too.
        cfg.say(
            f"  scale-out {processes} process(es): {result.per_s:.0f}/s; workers "
            f"{result.cpu_us_per_delivery:.0f} + database server {server_us:.0f} CPU-us/delivery "
            f"(database backends, the fill's included, {db_us:.0f}); machine busy "
            f"{_fmt_share(result.machine_busy)} ({counts})"
        )
        for line in filter(None, (pipeline.describe(report) for report in result.children)):
            cfg.say(f"    worker process of {processes}: {line}")
    results["postgres_1_worker_per_s"] = rates[1]
    results["postgres_2_workers_per_s"] = rates[2]
    results["scale_out_ratio"] = rates[2] / rates[1] if rates[1] else None
    # The floors' scale-out, same machine: the minimal loop's (the goal is relative to it)
    # and the complete floor's (bench.complete: the minimal loop plus the work the engine's
    # guarantees need at the least: per-user order, the message read, signing, an attempt
    # and a ledger row a delivery). On two cores shared with the server and the receiver, a
    # process's gain is bounded by the CPU a delivery costs the whole machine, the server's
    # included: the complete floor's is the gain the guarantees leave, measured.
    # The floors POST through the engine's client, as the worker does; the minimal loop
    # through aiohttp's session is shown beside them (the floor before the engine's POST left
    # aiohttp: its one process spends aiohttp's ~100 CPU-us a request, so a second process
    # finds more of the machine left to gain).
    for key, label, complete, client in (
        ("minimal", "the minimal loop", False, "direct"),
        ("complete", "the complete floor", True, "direct"),
        ("minimal_aiohttp", "the minimal loop through aiohttp", False, "aiohttp"),
    ):
        runs = {
            p: await _minimal_processes(cfg, receiver, p, count=n, complete=complete, client=client)
            for p in (1, 2)
        }
        floor = {p: rate for p, (rate, _busy) in runs.items()}
        results[f"{key}_1_process_per_s"] = floor[1]
        results[f"{key}_2_processes_per_s"] = floor[2]
        results[f"{key}_1_process_machine_busy"] = runs[1][1]
        results[f"{key}_2_processes_machine_busy"] = runs[2][1]
        ratio = results[f"{key}_scale_out_ratio"] = floor[2] / floor[1] if floor[1] else None
        cfg.say(
            f"  scale-out of {label}: 1 process {floor[1]:.0f}/s, 2 processes "
            f"{floor[2]:.0f}/s -> {_fmt_ratio(ratio)}; machine busy "
            f"{_fmt_share(runs[1][1])} -> {_fmt_share(runs[2][1])}"
        )


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _fmt_share(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


# -- 4. and 5. the API ---------------------------------------------------------------------------


def _event_body(event_id: str | None, user: int, enabled: bool) -> bytes:
    """A consent event of about 1 KB."""
    event: dict[str, Any] = {
        "user": {"organization_user_id": f"user-{user}@example.com", "country": "FR"},
        "consents": {
            "purposes": [
                {"id": "analytics", "enabled": enabled},
                {"id": "ads", "enabled": not enabled},
                {"id": "personalisation", "enabled": True},
            ],
            "vendors": {"enabled": ["google", "meta"], "disabled": ["acme"]},
            "channels": [{"id": "email", "enabled": enabled}],
        },
        "metadata": {"source": "bench", "pad": ""},
    }
    if event_id is not None:
        event["id"] = event_id
    size = len(orjson.dumps(event))
    event["metadata"]["pad"] = "x" * max(0, 1024 - size)
    return orjson.dumps(event)


async def _set_up_api(
    session: aiohttp.ClientSession, base: str, admin_token: str, hook_urls: Sequence[str]
) -> str:
    """An organization (its API key returned) with one webhook per URL."""
    async with session.post(
        base + "/v1/admin/organizations",
        json={"id": "bench"},
        headers={"Authorization": f"Bearer {admin_token}"},
    ) as response:
        if response.status != 201:
            raise RuntimeError(
                f"creating the organization: {response.status} {await response.text()}"
            )
        api_key = str((await response.json())["api_key"])
    for url in hook_urls:
        async with session.post(
            base + "/v1/webhooks", json={"url": url}, headers={"Authorization": f"Bearer {api_key}"}
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"creating a webhook: {response.status} {await response.text()}")
    return api_key


@dataclass
class Load(loadgen.Tally):
    """What a closed loop counted, and the server's CPU meanwhile."""

    server_cpu_s: float = 0.0

    @property
    def server_cpu_ms(self) -> float:
        """CPU milliseconds the API process spent per accepted event."""
        return self.server_cpu_s / self.ok * 1000 if self.ok else float("nan")

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def _closed_loop(
    base: str, api_key: str, seconds: float, connections: int, users: int
) -> Load:
    """``connections`` clients posting events back to back for ``seconds`` (bench/loadgen.py:
    a generator light enough that the server, not the client, is measured)."""
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    rng = random.Random(7)
    bodies = [_event_body(None, rng.randrange(users), rng.random() < 0.5) for _ in range(4096)]
    url = base + "/v1/consents/events"
    tally = await loadgen.closed_loop(
        url, loadgen.requests_for(url, bodies, headers), seconds=seconds, connections=connections
    )
    return Load(**dataclasses.asdict(tally))


async def _ingest_once(
    cfg: Config, receiver: ReceiverProcess, kind: str, *, workers: bool, api_processes: int = 1
) -> tuple[Load, dict[str, int]]:
    """The closed loop against one API (``api_processes`` > 1: ``consent-relay api
    --processes N``, workers off); server CPU summed over its processes."""
    async with db.database(kind, "api") as url:
        settings = db.settings_for(url, cfg.workdir, cfg.key, port=_free_port())
        env = child_env(db.settings_env(settings))
        command = cli_command("api", "--processes", str(api_processes))
        async with (
            ApiServer(
                env,
                settings.port,
                cfg.log,
                workers=workers,
                cli=workers,
                command=command if api_processes > 1 else None,
            ) as api,
            aiohttp.ClientSession() as session,
        ):
            key = await _set_up_api(
                session,
                api.base,
                settings.admin_token,
                [receiver.url("/in0"), receiver.url("/in1")],
            )
            cpu = api.cpu_s()
            load = await _closed_loop(
                api.base, key, cfg.ingest_seconds, cfg.ingest_connections, users=20_000
            )
            load.server_cpu_s = api.cpu_s() - cpu
        async with db.open_context(settings) as ctx:
            counts = await db.status_counts(ctx)
    return load, counts


async def _ingest_ceiling(cfg: Config) -> Load:
    """The bare single-insert endpoint (bench/ceiling_api.py) under the same load."""
    async with db.fresh_postgres("ceiling") as url:
        port = _free_port()
        env = child_env({"BENCH_CEILING_DATABASE": url, "BENCH_CEILING_PORT": str(port)})
        command = [sys.executable, "-m", "bench.ceiling_api"]
        async with ApiServer(env, port, cfg.log, workers=False, command=command) as api:
            cpu = db.proc_cpu_s(api.pid)
            load = await _closed_loop(
                api.base, "unused", cfg.ingest_seconds, cfg.ingest_connections, users=20_000
            )
            load.server_cpu_s = db.proc_cpu_s(api.pid) - cpu
            return load


async def ingest(
    cfg: Config, receiver: ReceiverProcess, results: Results, kinds: Sequence[str]
) -> None:
    ceiling = await _ingest_ceiling(cfg)
    results["ingest_ceiling_per_s"] = ceiling.per_s
    results["ingest_ceiling_p99_ms"] = _percentile(ceiling.latencies_ms, 0.99)
    results["ingest_ceiling_cpu_ms"] = ceiling.server_cpu_ms
    cfg.say(
        f"  ingest ceiling (FastAPI + one asyncpg insert): {ceiling.per_s:.0f}/s, "
        f"p99 {results['ingest_ceiling_p99_ms']:.1f} ms, server "
        f"{ceiling.server_cpu_ms:.2f} CPU-ms/request, statuses {ceiling.statuses}"
    )
    for kind in kinds:
        load, counts = await _ingest_once(cfg, receiver, kind, workers=False)
        suffix = "" if kind == "postgres" else f"_{kind}"
        results[f"ingest{suffix}_per_s"] = load.per_s
        results[f"ingest{suffix}_ratio"] = load.per_s / ceiling.per_s if ceiling.per_s else None
        results[f"ingest{suffix}_p50_ms"] = _percentile(load.latencies_ms, 0.50)
        results[f"ingest{suffix}_p99_ms"] = _percentile(load.latencies_ms, 0.99)
        results[f"ingest{suffix}_errors"] = load.errors
        results[f"ingest{suffix}_cpu_ms"] = load.server_cpu_ms
        queued = sum(counts.values())
        cfg.say(
            f"  ingest {kind} (workers off): {load.per_s:.0f}/s "
            f"({results[f'ingest{suffix}_ratio']:.2f} of the ceiling), "
            f"p50 {results[f'ingest{suffix}_p50_ms']:.1f} ms, "
            f"p99 {results[f'ingest{suffix}_p99_ms']:.1f} ms, server "
            f"{load.server_cpu_ms:.2f} CPU-ms/event, statuses {load.statuses}, "
            f"{queued} deliveries queued ({queued / max(1, load.ok):.2f}/event)"
        )
    if "postgres" in kinds:
        await _ingest_two_processes(cfg, receiver, results)


async def _ingest_two_processes(cfg: Config, receiver: ReceiverProcess, results: Results) -> None:
    """The same load on ``consent-relay api --processes 2`` (PostgreSQL, workers off), in
    the same run: what a second API process adds on this machine."""
    load, _counts = await _ingest_once(cfg, receiver, "postgres", workers=False, api_processes=2)
    one = results.get("ingest_per_s")
    results["ingest_2_api_per_s"] = load.per_s
    results["ingest_2_api_scale"] = load.per_s / one if one else None
    results["ingest_2_api_p50_ms"] = _percentile(load.latencies_ms, 0.50)
    results["ingest_2_api_p99_ms"] = _percentile(load.latencies_ms, 0.99)
    results["ingest_2_api_errors"] = load.errors
    results["ingest_2_api_cpu_ms"] = load.server_cpu_ms
    scale = results["ingest_2_api_scale"]
    cfg.say(
        f"  ingest postgres, 2 API processes: {load.per_s:.0f}/s"
        + (f" ({scale:.2f}x one process)" if scale else "")
        + f", p50 {results['ingest_2_api_p50_ms']:.1f} ms, "
        f"p99 {results['ingest_2_api_p99_ms']:.1f} ms, server (both processes) "
        f"{load.server_cpu_ms:.2f} CPU-ms/event, statuses {load.statuses}"
    )


# -- 4. latency ----------------------------------------------------------------------------------


def _event_ids(records: Sequence[tuple[float, str]]) -> dict[str, float]:
    """event id -> first arrival of its event.created message."""
    arrivals: dict[str, float] = {}
    for arrived, body in records:
        message = orjson.loads(body)
        if message.get("type") != "event.created":
            continue
        event_id = message["parameters"]["entity"]["id"]
        if event_id not in arrivals:
            arrivals[event_id] = arrived
    return arrivals


async def latency(cfg: Config, receiver: ReceiverProcess, results: Results) -> None:
    """Events at half the measured ingest capacity (at most ``latency_rate_cap``/s); when
    the ingest scenario did not run, a 3-second probe measures that capacity first."""
    capacity = results.get("ingest_per_s")
    if not capacity:
        probe_cfg = dataclasses.replace(cfg, ingest_seconds=3.0)
        probe, _counts = await _ingest_once(probe_cfg, receiver, "postgres", workers=False)
        capacity = probe.per_s
        results["latency_capacity_probe_per_s"] = capacity
        cfg.say(f"  ingest capacity probe: {capacity:.0f} events/s")
    rate = max(10.0, min(cfg.latency_rate_cap, capacity / 2))
    count = int(rate * cfg.latency_seconds)
    async with db.database("postgres", "api") as url:
        settings = db.settings_for(url, cfg.workdir, cfg.key, port=_free_port())
        env = child_env(db.settings_env(settings))
        async with (
            ApiServer(env, settings.port, cfg.log, workers=True, cli=True) as api,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256),
                timeout=aiohttp.ClientTimeout(total=30),
            ) as session,
        ):
            key = await _set_up_api(
                session,
                api.base,
                settings.admin_token,
                [receiver.url("/rec0"), receiver.url("/lat1")],
            )
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            endpoint = api.base + "/v1/consents/events"
            rng = random.Random(11)
            answered: dict[str, float] = {}
            failures = 0

            async def post(event_id: str) -> None:
                nonlocal failures
                body = _event_body(event_id, rng.randrange(5000), rng.random() < 0.5)
                try:
                    async with session.post(endpoint, data=body, headers=headers) as response:
                        await response.read()
                        if response.status == 201:
                            answered[event_id] = time.time()
                        else:
                            failures += 1
                except (aiohttp.ClientError, TimeoutError):
                    failures += 1

            # Warm-up: connections, caches, the first claims.
            await asyncio.gather(*(post(f"warm-{i}") for i in range(20)))
            await receiver.wait_for(20, "/rec0", within=30)
            await receiver.reset()
            answered.clear()
            tasks = []
            began = time.monotonic()
            for i in range(count):
                delay = began + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post(f"lat-{i:07d}")))
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            sent_for = time.monotonic() - began
            arrivals: dict[str, float] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                arrivals = _event_ids(await receiver.records())
                if all(event_id in arrivals for event_id in answered):
                    break
                await asyncio.sleep(0.25)
    latencies = [
        max(0.0, (arrivals[event_id] - at) * 1000)
        for event_id, at in answered.items()
        if event_id in arrivals
    ]
    missing = len(answered) - len(latencies)
    results["latency_rate_per_s"] = rate
    results["latency_events"] = len(answered)
    results["latency_p50_ms"] = _percentile(latencies, 0.50)
    results["latency_p99_ms"] = _percentile(latencies, 0.99)
    results["latency_max_ms"] = max(latencies, default=float("nan"))
    results["latency_missing"] = missing
    results["latency_post_failures"] = failures
    cfg.say(
        f"  latency at {rate:.0f} events/s for {sent_for:.1f} s: {len(latencies)} measured, "
        f"p50 {results['latency_p50_ms']:.1f} ms, p99 {results['latency_p99_ms']:.1f} ms, "
        f"max {results['latency_max_ms']:.1f} ms, missing {missing}, failures {failures}"
    )


# -- 6. isolation --------------------------------------------------------------------------------


async def isolation(cfg: Config, receiver: ReceiverProcess, results: Results) -> None:
    """Nine healthy webhooks drained beside a tenth that hangs, then beside a disabled
    webhook holding ``isolation_held`` due heads, then alone: each rate against the last."""
    per_hook = cfg.isolation_per_webhook
    healthy = [f"/ok{i}" for i in range(9)]
    rates: dict[str, float] = {}
    held = cfg.isolation_held
    runs = (
        ("with", "the hanging webhook", [*healthy, "/hang"], 0),
        ("held", f"a disabled webhook's {held} due heads", healthy, held),
        ("without", "either", healthy, 0),
    )
    for label, beside, paths, held in runs:
        _filled, result, _counts = await _queued_drain(
            cfg,
            receiver,
            "postgres",
            paths=paths,
            messages=per_hook,
            expect_prefix="/ok",
            expected=9 * per_hook,
            check_db=False,
            held=held,
            worker_concurrency=cfg.concurrency,
            request_timeout=cfg.isolation_timeout,
        )
        rates[label] = result.per_s
        cfg.say(
            f"  isolation {'without' if label == 'without' else 'with'} {beside}: nine healthy"
            f" at {result.per_s:.0f}/s ({result.arrived}/{result.expected} in"
            f" {result.seconds:.2f} s)"
        )
    alone = rates["without"]
    results["isolation_with_hang_per_s"] = rates["with"]
    results["isolation_with_held_per_s"] = rates["held"]
    results["isolation_without_hang_per_s"] = alone
    results["isolation_ratio"] = rates["with"] / alone if alone else None
    results["isolation_held_ratio"] = rates["held"] / alone if alone else None


# -- 7. backlog ----------------------------------------------------------------------------------


async def backlog(cfg: Config, receiver: ReceiverProcess, results: Results) -> None:
    hooks = 10
    messages = max(1, cfg.backlog // hooks)
    total = messages * hooks
    timeout = 3600.0 if not cfg.quick else 120.0
    filled, result, counts = await _queued_drain(
        cfg,
        receiver,
        cfg.backlog_db,
        paths=[f"/b{i}" for i in range(hooks)],
        messages=messages,
        expect_prefix="/b",
        expected=total,
        within=timeout,
        poll=0.5 if total > 100_000 else 0.05,
        worker_concurrency=cfg.concurrency,
    )
    results["backlog_deliveries"] = total
    results["backlog_db"] = cfg.backlog_db
    results["backlog_fill_per_s"] = filled.per_s
    results["backlog_fill_s"] = filled.seconds
    results["backlog_peak_rss_mb"] = result.peak_rss_mb
    results["backlog_drain_per_s"] = result.per_s
    results["backlog_drain_s"] = result.seconds
    results["backlog_complete"] = result.finished
    cfg.say(
        f"  backlog {total} on {cfg.backlog_db}: filled in {filled.seconds:.1f} s, drained "
        f"{result.arrived} at {result.per_s:.0f}/s in {result.seconds:.1f} s, peak RSS "
        f"{result.peak_rss_mb:.1f} MB, statuses {counts}"
    )


@contextlib.contextmanager
def timed(cfg: Config, name: str) -> Iterator[None]:
    began = time.perf_counter()
    cfg.say(f"[{name}]")
    yield
    cfg.say(f"  ({name} took {time.perf_counter() - began:.1f} s)")
