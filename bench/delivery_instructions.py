"""Instructions a delivery costs the SQLite worker, counted: the same drain, the same count.

A developer's aid for the engine's levers of a few CPU-µs a delivery, which the timed figures
(``bench.delivery_micro``, ``bench.sqlite_statements``) cannot tell from their noise on a
shared machine (10-20 % between runs of one setting). ``valgrind --tool=cachegrind`` counts
the instructions the process executes, and the same drain gives the same count to about
0.1 % run after run: a lever worth 1 % is seen at once.

The drain is ``bench.delivery_micro``'s on SQLite: the real ``Worker`` empties a database of
N queued deliveries (``bench.db.fill``: one webhook, queues of four) with ``sender.send``
stubbed to answer 204 at once, so the count is the engine's own (claim, render and sign,
the attempt's bookkeeping, record, ledger, the database engine in the process) without
aiohttp's. The database is filled once and copied for every run; each run's count less that
of a run which stops before the drain (imports, start-up and the copy) is the drain's, and
divided by N the figure printed, in thousands of instructions a delivery.

Compare checkouts in the same invocation: ``--checkout DIR`` (repeatable; default this
one) runs each under its own ``PYTHONPATH=DIR/src:DIR``, on the same filled database, filled
by the first one (put the oldest first: a newer schema's migration runs in a checkout's
start-up run and its drain alike, so it drops out of the count).

What it does not see: time. A count is not CPU-µs: a cache miss, a system call's wait (the
WAL's fsync) and the cost of an instruction are not in it; SHA-256 and HMAC count several
times their real cost, because valgrind's virtual CPU has no SHA extensions (the hashing
runs OpenSSL's generic code). Keep a lever measured here only if the timed figures do not
say it got slower. Needs valgrind (``apt-get install valgrind``); a run of 20,000 deliveries
takes about a minute.

``--floor`` counts the complete floor (``bench.complete``: the least a persistent engine with
these guarantees does a delivery, in the simplest way there is) the same way, with its POST
stubbed as the worker's send is, on a database of its own of N queued deliveries, and prints
the engine's count against it: the engine's own work a delivery against the floor's, without
the noise of a timed run (the floor's code is this checkout's ``bench``, whatever
``--checkout`` says).

``--threads`` counts with ``valgrind --tool=callgrind --separate-threads=yes`` instead, and
splits each count: the event loop's thread (the main one), the other threads (SQLite's
connections, run by aiosqlite), and of all of them what runs inside ``sqlite3_step``
(SQLite's own work, which the ``sqlite3`` module runs without the GIL). The rest is work done
holding the GIL, in one thread or the other: with the event loop bound by the GIL
(docs/performance-log.md), that sum, not the whole count, is what a delivery costs the loop's
throughput. Slower than the plain count (callgrind, then ``callgrind_annotate`` on each thread's
file).

``python -m bench.delivery_instructions [--deliveries N] [--checkout DIR ...] [--floor]
[--threads]``
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import uvloop

HERE = Path(__file__).resolve().parent.parent
CONCURRENCY = 200
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)
# callgrind_annotate --inclusive=yes: "  584,087,996 (50.54%)  ???:sqlite3_step [/usr/lib/...]"
_IN_STEP = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+\S*:sqlite3_step\s", re.MULTILINE)


def instructions(valgrind_output: str) -> int:
    """The instructions counted, from cachegrind's summary (``I refs: 1,234``)."""
    found = _REFS.search(valgrind_output)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{valgrind_output}")
    return int(found.group(1).replace(",", ""))


@dataclass(frozen=True)
class ByThread:
    """A run's instructions by thread: the event loop's (the main thread), the other
    threads', and of all of them those inside ``sqlite3_step`` (run without the GIL)."""

    loop: int
    others: int
    in_sqlite: int

    @property
    def with_gil(self) -> int:
        """Instructions run holding the GIL, whichever thread ran them."""
        return self.loop + self.others - self.in_sqlite

    def __sub__(self, other: ByThread) -> ByThread:
        return ByThread(
            self.loop - other.loop, self.others - other.others, self.in_sqlite - other.in_sqlite
        )


def thread_total(callgrind_file: str) -> int:
    """A thread's instructions, from its callgrind file's ``summary:`` line."""
    found = _SUMMARY.search(callgrind_file)
    if found is None:
        raise RuntimeError("no summary line in a callgrind file")
    return int(found.group(1))


def in_sqlite_step(annotated: str) -> int:
    """The instructions inside ``sqlite3_step``, from ``callgrind_annotate --inclusive=yes``
    (0 when the thread never called it)."""
    found = _IN_STEP.search(annotated)
    return int(found.group(1).replace(",", "")) if found else 0


def by_thread(files: Iterable[Path]) -> ByThread:
    """The counts of one run's callgrind files (``<out>-01`` the main thread's)."""
    loop = others = in_sqlite = 0
    for path in sorted(files):
        text = path.read_text(errors="replace")
        if path.name.endswith("-01"):
            loop += thread_total(text)
        else:
            others += thread_total(text)
        if "sqlite3_step" in text:
            annotate = ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)]
            done = subprocess.run(annotate, capture_output=True, text=True, check=True)
            in_sqlite += in_sqlite_step(done.stdout)
    return ByThread(loop, others, in_sqlite)


async def fill(folder: Path, deliveries: int) -> None:
    """A database of ``deliveries`` queued deliveries in ``folder`` (``filled.db``), with the
    key its secrets are encrypted with (``key``)."""
    from bench import db
    from consent_relay import crypto

    key = crypto.new_key()
    (folder / "key").write_text(key)
    settings = db.settings_for(f"sqlite:///{folder / 'filled.db'}", folder, key)
    async with db.open_context(settings) as ctx:
        hooks = await db.create_org_and_webhooks(ctx, "bench", ["http://127.0.0.1:9/dlv"])
        await db.fill(ctx, "bench", hooks, deliveries, max(1, deliveries // 4))


async def drain(folder: Path, deliveries: int, *, start_only: bool = False) -> int:
    """Drain a copy of ``folder``'s database with the real worker, the send stubbed; with
    ``start_only``, stop before the worker starts. Returns the deliveries sent."""
    from bench import db, delivery_micro
    from consent_relay import gctune
    from consent_relay.delivery import sender
    from consent_relay.delivery.worker import Worker

    work = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    try:
        shutil.copy(folder / "filled.db", work / "run.db")
        settings = db.settings_for(
            f"sqlite:///{work / 'run.db'}",
            work,
            (folder / "key").read_text(),
            worker_concurrency=CONCURRENCY,
            webhook_concurrency=CONCURRENCY,
        )
        answering = delivery_micro.Answering()
        answering.expected = deliveries
        real = sender.send
        setattr(sender, "send", answering.send)  # noqa: B010 (a stub, for this drain only)
        try:
            async with db.open_context(settings) as ctx:
                gctune.settle()
                if start_only:
                    return 0
                stop = asyncio.Event()
                task = asyncio.create_task(Worker(ctx, concurrency=CONCURRENCY).run(stop))
                await answering.done.wait()
                await delivery_micro._recorded(ctx)
                stop.set()
                await task
        finally:
            setattr(sender, "send", real)  # noqa: B010
        return answering.count
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def stub_post(_url: str, _body: bytes, _headers: dict[str, str]) -> int:
    """The complete floor's POST, stubbed: 204, no body, after one turn of the loop (as
    ``delivery_micro.Answering`` answers the worker's send)."""
    await asyncio.sleep(0)
    return 204


def _fresh_floor_db(folder: Path) -> Path:
    """The floor's database path in ``folder``, what an earlier run left there removed."""
    for leftover in folder.glob("floor.db*"):
        leftover.unlink()
    return folder / "floor.db"


async def floor_drain(folder: Path, deliveries: int, *, start_only: bool = False) -> int:
    """The complete floor's drain of ``deliveries`` queued deliveries (a database of its own
    in ``folder``, filled here in both modes), its POST stubbed; with ``start_only``, stop
    before the drain. Returns the deliveries sent."""
    from bench import complete

    store = await complete.open_store(f"sqlite:///{_fresh_floor_db(folder)}", deliveries)
    try:
        if start_only:
            return 0
        ok, _errors = await complete.drain(store, stub_post, "http://stub/", b"", 200)
        return ok
    finally:
        await store.close()


def _env(checkout: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{checkout / 'src'}{os.pathsep}{checkout}")


def filling(checkout: Path, folder: Path, deliveries: int) -> None:
    """``fill`` run with ``checkout``'s code (the first compared: the oldest schema, which
    a newer checkout's start-up migrates in both of its runs, so its count leaves it out)."""
    command = [sys.executable, "-m", "bench.delivery_instructions", "--fill", str(folder)]
    command += ["--deliveries", str(deliveries)]
    done = subprocess.run(command, env=_env(checkout), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")


def counted(checkout: Path, folder: Path, deliveries: int, mode: str) -> int:
    """Instructions of one run of this module as ``mode`` ("drain", "start", "floor-drain"
    or "floor-start") under cachegrind, with ``checkout``'s code."""
    cachegrind = ["--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    return instructions(_under_valgrind(cachegrind, checkout, folder, deliveries, mode))


def counted_by_thread(checkout: Path, folder: Path, deliveries: int, mode: str) -> ByThread:
    """``counted``'s run under callgrind, a file a thread, split (``by_thread``)."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as name:
        out = Path(name) / "callgrind.out"
        callgrind = ["--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}"]
        _under_valgrind(callgrind, checkout, folder, deliveries, mode)
        return by_thread(Path(name).glob("callgrind.out-*"))


def _under_valgrind(
    tool: list[str], checkout: Path, folder: Path, deliveries: int, mode: str
) -> str:
    """One run of this module as ``mode`` under valgrind with ``tool``'s options and
    ``checkout``'s code: valgrind's own output (stderr). Raises if the run failed."""
    command = ["valgrind", *tool, "--fair-sched=yes", sys.executable, "-m"]
    command += ["bench.delivery_instructions", f"--{mode}", str(folder)]
    command += ["--deliveries", str(deliveries)]
    done = subprocess.run(command, env=_env(checkout), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stderr


def _thread_line(run: ByThread, deliveries: int) -> str:
    def k(n: int) -> str:
        return f"{n / deliveries / 1000:.1f}"

    return (
        f"event loop {k(run.loop)}, other threads {k(run.others)} (in sqlite3_step "
        f"{k(run.in_sqlite)}); with the GIL {k(run.with_gil)} thousand instructions a delivery"
    )


def report_by_thread(checkouts: list[Path], deliveries: int, *, floor: bool) -> None:
    """``--threads``: each checkout's drain less its start-up, split by thread; with
    ``floor``, the complete floor's the same way, and each engine's work holding the GIL
    against the floor's."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-instructions-") as name,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        folder = Path(name)
        filling(checkouts[0], folder, deliveries)
        runs = {
            (checkout, mode): pool.submit(counted_by_thread, checkout, folder, deliveries, mode)
            for checkout in checkouts
            for mode in ("start", "drain")
        }
        floor_run = None
        if floor:
            for mode in ("floor-start", "floor-drain"):
                (folder / mode).mkdir()
                runs[HERE, mode] = pool.submit(
                    counted_by_thread, HERE, folder / mode, deliveries, mode
                )
            floor_run = runs[HERE, "floor-drain"].result() - runs[HERE, "floor-start"].result()
            print(f"complete floor: {_thread_line(floor_run, deliveries)}", flush=True)
        for checkout in checkouts:
            run = runs[checkout, "drain"].result() - runs[checkout, "start"].result()
            against = ""
            if floor_run is not None and floor_run.with_gil:
                against = f"; {run.with_gil / floor_run.with_gil:.2f} x the floor's with the GIL"
            print(f"{checkout}: {_thread_line(run, deliveries)}{against}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--checkout", action="append", type=Path, default=[])
    parser.add_argument("--fill", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--drain", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help="count the complete floor too")
    parser.add_argument(
        "--threads", action="store_true", help="split the counts by thread (callgrind)"
    )
    parser.add_argument("--floor-drain", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor-start", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_drain or args.floor_start:
        folder = args.floor_drain or args.floor_start
        only = args.floor_start is not None
        sent = uvloop.run(floor_drain(folder, args.deliveries, start_only=only))
        if args.floor_drain and sent != args.deliveries:
            raise SystemExit(f"the floor sent {sent} of {args.deliveries}")
        return
    if args.fill:
        uvloop.run(fill(args.fill, args.deliveries))
        return
    if args.drain or args.start:
        folder = args.drain or args.start
        sent = uvloop.run(drain(folder, args.deliveries, start_only=args.start is not None))
        if args.drain and sent != args.deliveries:
            raise SystemExit(f"sent {sent} of {args.deliveries}")
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    checkouts = [c.resolve() for c in args.checkout] or [HERE]
    if args.threads:
        report_by_thread(checkouts, args.deliveries, floor=args.floor)
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-instructions-") as name,
        concurrent.futures.ThreadPoolExecutor(2) as pool,  # a count is the same on a busy core
    ):
        folder = Path(name)
        filling(checkouts[0], folder, args.deliveries)
        runs = {
            (checkout, mode): pool.submit(counted, checkout, folder, args.deliveries, mode)
            for checkout in checkouts
            for mode in ("start", "drain")
        }
        floor = None
        if args.floor:
            for mode in ("floor-start", "floor-drain"):  # a database each: they run at once
                (folder / mode).mkdir()
                runs[HERE, mode] = pool.submit(counted, HERE, folder / mode, args.deliveries, mode)
            floor_start = runs[HERE, "floor-start"].result()
            floor_total = runs[HERE, "floor-drain"].result()
            floor = (floor_total - floor_start) / args.deliveries / 1000
            print(
                f"complete floor: {floor:.1f} thousand instructions a delivery "
                f"(drain {floor_total:,}, start-up {floor_start:,})",
                flush=True,
            )
        for checkout in checkouts:
            start = runs[checkout, "start"].result()
            total = runs[checkout, "drain"].result()
            per = (total - start) / args.deliveries / 1000
            against = f"; {per / floor:.2f} x the complete floor" if floor else ""
            print(
                f"{checkout}: {per:.1f} thousand instructions a delivery "
                f"(drain {total:,}, start-up {start:,}){against}",
                flush=True,
            )


if __name__ == "__main__":
    main()
