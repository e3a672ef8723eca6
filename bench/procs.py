"""Load in child processes: the real delivery worker, or the bare aiohttp loop.

``python -m bench.procs worker`` builds ``Settings()`` from the ``CONSENT_RELAY_*``
environment exactly as ``consent-relay worker`` does and runs ``runner.run`` (the
worker, plus the LISTEN connection on PostgreSQL) on uvloop. ``python -m bench.procs bare``
POSTs the same body to the same receiver with one keep-alive ``ClientSession``.

Both speak a line protocol: they print ``READY`` once set up, start on ``go`` (stdin), and
print one JSON line when done (``stop``, stdin closed, or ``--max-seconds``), with their
peak RSS (VmHWM from /proc/self/status). :class:`Child` drives them from the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson


def proc_status_kb(pid: int | str = "self") -> dict[str, int]:
    """VmHWM / VmRSS (kB) of a process, from /proc (Linux)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0])
    return found


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _wait_command(reader: asyncio.StreamReader, within: float) -> str:
    """The next command line; ``stop`` on EOF or after ``within`` seconds."""
    try:
        line = await asyncio.wait_for(reader.readline(), within)
    except TimeoutError:
        return "stop"
    return line.decode().strip() or "stop"


async def run_worker(max_seconds: float, processes: int = 1) -> None:
    from bench import pipeline
    from consent_relay import gctune, runner
    from consent_relay.runtime import build_context
    from consent_relay.settings import Settings

    settings = Settings()
    ctx = build_context(settings)
    await ctx.store.migrate()
    await ctx.store.ping()
    gctune.settle()  # as consent-relay worker does once started (runner.run_process)
    reader = await _stdin_lines()
    deadline = time.monotonic() + max_seconds
    _say("READY")
    if await _wait_command(reader, max_seconds) != "go":
        await ctx.store.close()
        _say(orjson.dumps({"sent": 0, **proc_status_kb()}).decode())
        return
    started = time.time()
    cpu_began = time.process_time()
    threads_began = pipeline.thread_cpu()
    transactions = pipeline.TransactionTimes()
    untime = transactions.install()
    steps = pipeline.Steps()
    unwatch = steps.install()
    stop = asyncio.Event()
    task = asyncio.create_task(
        runner.run(ctx, stop, concurrency=settings.worker_concurrency, processes=processes)
    )
    await _wait_command(reader, max(0.0, deadline - time.monotonic()))
    stop.set()
    await asyncio.wait_for(task, settings.request_timeout + 30)
    cpu = time.process_time() - cpu_began
    threads = pipeline.cpu_since(threads_began, pipeline.thread_cpu())
    untime()
    unwatch()
    await ctx.store.close()
    report = {
        "started": started,
        "stopped": time.time(),
        "cpu_s": cpu,
        "threads": threads,
        "sqlite_transactions": transactions.report(),
        "steps": steps.report(),
        **proc_status_kb(),
    }
    _say(orjson.dumps(report).decode())


async def run_bare(
    url: str, count: int, concurrency: int, body_file: str, max_seconds: float, direct: bool
) -> None:
    """The bare client: the same POST, ``count`` times, ``concurrency`` at a time, through
    aiohttp's session, or with ``direct`` through the worker's client (``delivery.http1``):
    that client's own ceiling."""
    import aiohttp

    from bench import minimal
    from consent_relay.delivery import http1
    from consent_relay.security import targets

    body = await asyncio.to_thread(Path(body_file).read_bytes)
    headers = {"Content-Type": "application/json"}
    reader = await _stdin_lines()
    _say("READY")
    if await _wait_command(reader, max_seconds) != "go":
        _say(orjson.dumps({"ok": 0, "errors": 0, "elapsed": 0.0}).decode())
        return
    connector = aiohttp.TCPConnector(limit=concurrency)
    pool = http1.Pool(limit=concurrency, allowed=targets.parse_networks(["127.0.0.0/8"]))
    ok = errors = started_n = 0
    deadline = time.monotonic() + max_seconds

    async with aiohttp.ClientSession(connector=connector) as session:

        async def aiohttp_loop() -> None:  # the ceiling: aiohttp's request, inline
            nonlocal ok, errors, started_n
            while started_n < count and time.monotonic() < deadline:
                started_n += 1
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            ok += 1
                        else:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1

        async def direct_loop() -> None:
            nonlocal ok, errors, started_n
            while started_n < count and time.monotonic() < deadline:
                started_n += 1
                try:
                    answer = await pool.post(url, body, headers)
                except minimal.FAILED:
                    errors += 1
                    continue
                if 200 <= answer.status < 300:
                    ok += 1
                else:
                    errors += 1

        one_loop = direct_loop if direct else aiohttp_loop
        began = time.perf_counter()
        cpu_began = time.process_time()
        await asyncio.gather(*(one_loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
    await pool.close()
    report = {"ok": ok, "errors": errors, "elapsed": elapsed, "cpu_s": cpu, **proc_status_kb()}
    _say(orjson.dumps(report).decode())


async def run_minimal(
    url: str,
    db_url: str,
    count: int,
    concurrency: int,
    body_file: str,
    max_seconds: float,
    fill: bool,
    complete: bool = False,
    client: str = "direct",
) -> None:
    """The floor loop: ``bench.minimal``, or with ``complete`` ``bench.complete``; its POST
    through ``client``: the engine's (``direct``) or ``aiohttp``'s session."""
    import aiohttp

    from bench import complete as complete_floor
    from bench import minimal
    from consent_relay.delivery import http1
    from consent_relay.security import targets

    body = await asyncio.to_thread(Path(body_file).read_bytes)
    floor: Any = complete_floor if complete else minimal
    store = await floor.open_store(db_url, count, fill=fill)
    reader = await _stdin_lines()
    _say("READY")
    if await _wait_command(reader, max_seconds) != "go":
        await store.close()
        _say(orjson.dumps({"ok": 0, "errors": 0, "elapsed": 0.0}).decode())
        return
    connector = aiohttp.TCPConnector(limit=concurrency)
    pool = http1.Pool(limit=concurrency, allowed=targets.parse_networks(["127.0.0.0/8"]))
    async with aiohttp.ClientSession(connector=connector) as session:
        post = minimal.direct_post(pool) if client == "direct" else minimal.aiohttp_post(session)
        began = time.perf_counter()
        cpu_began = time.process_time()
        ok, errors = await asyncio.wait_for(
            floor.drain(store, post, url, body, concurrency), max_seconds
        )
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
    await pool.close()
    await store.close()
    report = {"ok": ok, "errors": errors, "elapsed": elapsed, "cpu_s": cpu, **proc_status_kb()}
    _say(orjson.dumps(report).decode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("--max-seconds", type=float, default=3600)
    # One of N worker processes started together, as ``consent-relay worker --processes N``
    # tells its children (``processes.worker_command``).
    worker.add_argument("--processes", type=int, default=1)
    bare = sub.add_parser("bare")
    bare.add_argument("--url", required=True)
    bare.add_argument("--count", type=int, required=True)
    bare.add_argument("--concurrency", type=int, default=200)
    bare.add_argument("--body-file", required=True)
    bare.add_argument("--max-seconds", type=float, default=600)
    bare.add_argument("--direct", action="store_true", help="the worker's direct client")
    floor = sub.add_parser("minimal")
    floor.add_argument("--url", required=True)
    floor.add_argument("--db-url", required=True)
    floor.add_argument("--count", type=int, required=True)
    floor.add_argument("--concurrency", type=int, default=200)
    floor.add_argument("--body-file", required=True)
    floor.add_argument("--max-seconds", type=float, default=600)
    floor.add_argument("--no-fill", action="store_true", help="another process fills the table")
    floor.add_argument(
        "--complete", action="store_true", help="bench.complete: the floor with the guarantees"
    )
    floor.add_argument(
        "--client",
        choices=("direct", "aiohttp"),
        default="direct",
        help="what POSTs: the engine's client (delivery.http1) or aiohttp's session",
    )
    args = parser.parse_args(argv)
    import uvloop

    if args.mode == "worker":
        uvloop.run(run_worker(args.max_seconds, args.processes))
    elif args.mode == "minimal":
        uvloop.run(
            run_minimal(
                args.url,
                args.db_url,
                args.count,
                args.concurrency,
                args.body_file,
                args.max_seconds,
                not args.no_fill,
                args.complete,
                args.client,
            )
        )
    else:
        uvloop.run(
            run_bare(
                args.url,
                args.count,
                args.concurrency,
                args.body_file,
                args.max_seconds,
                args.direct,
            )
        )


class Child:
    """One ``bench.procs`` child: start, wait for READY, ``go``, ``stop``, read the result."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.args = args
        self.env = dict(env)
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.result: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, within: float = 60.0) -> None:
        command = [sys.executable, "-m", "bench.procs", *self.args]
        profile_dir = os.environ.get("BENCH_PYSPY_DIR")
        if profile_dir and sampled(self.args[0], os.environ):
            # A developer's aid: sample the child with py-spy (pip install py-spy).
            out = Path(profile_dir) / f"{self.args[0]}-{time.time_ns()}.txt"
            spy = str(Path(sys.executable).parent / "py-spy")
            command = [spy, "record", "--format", "raw", "--rate", "250", "-o", str(out)]
            command += os.environ.get("BENCH_PYSPY_ARGS", "").split()  # e.g. --threads --native
            command += ["--"]
            command += [sys.executable, "-m", "bench.procs", *self.args]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=self.env,
            )
        line = await self._read_until(lambda text: text == "READY", within)
        if line != "READY":
            raise RuntimeError(f"child {self.args[0]} did not start ({line!r}); see {self.log}")

    async def _readline(self, within: float) -> str | None:
        """A line of the child's output, stripped; None at the end of it."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        return raw.decode().strip() if raw else None

    async def _read_until(self, wanted: Callable[[str], bool], within: float) -> str:
        """The first line ``wanted`` accepts (others, e.g. py-spy's, are skipped); the last
        line read (or "") when the output ends first."""
        deadline = time.monotonic() + within
        line = ""
        for _ in range(100):
            raw = await self._readline(max(0.1, deadline - time.monotonic()))
            if raw is None:
                return line
            line = raw
            if wanted(line):
                return line
        return line

    def send(self, command: str) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(command.encode() + b"\n")

    def status_kb(self) -> dict[str, int]:
        return proc_status_kb(self.pid)

    async def finish(self, within: float = 120.0) -> dict[str, Any]:
        """Read the child's JSON line (after ``stop`` for a worker) and reap it."""
        line = await self._read_until(lambda text: text.startswith("{"), within)
        self.result = orjson.loads(line) if line.startswith("{") else {}
        await self.close()
        return self.result

    async def close(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)

    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def sampled(child: str, env: Mapping[str, str]) -> bool:
    """Whether a ``child`` (its first argument: worker, bare, minimal, complete...) runs
    under py-spy when ``BENCH_PYSPY_DIR`` is set: the worker unless ``BENCH_PYSPY_CHILDREN``
    names others (comma-separated)."""
    names = env.get("BENCH_PYSPY_CHILDREN") or "worker"
    return child in {name.strip() for name in names.split(",")}


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_RELAY_")}
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return env


if __name__ == "__main__":
    main()
