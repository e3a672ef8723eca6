"""Processes that use the machine: how many to run, and a supervisor for worker processes.

``consent-relay worker --processes N`` (and ``serve --worker-processes N``) runs delivery
workers in child processes of its own, because one Python process uses one core: a worker
spends its time in Python (signing, JSON, aiohttp), not waiting. ``consent-relay api
--processes N`` leaves its processes to uvicorn's own supervisor (see ``cli.api``).

Why a supervisor of subprocesses rather than ``multiprocessing``: each child is a plain
``python -m consent_relay.processes`` (named so in ``ps``), holds the write end of a pipe for
as long as it lives, writes ``ready`` into it once it works, and the parent reads EOF when it
dies: one ``select`` tells readiness and death, no resource tracker, no pickling.

Rules (README, "Running in production"):

- SQLite runs one process of each kind: it has one writer at a time, so a second process
  queues on its write lock (and times out under load) instead of going faster. N > 1 is
  refused there; PostgreSQL is the database to scale out on.
- The parent stops its children with SIGTERM (in-flight attempts finish, unsent leases are
  given back) on SIGTERM or SIGINT; children ignore SIGINT, so that Ctrl-C, which reaches the
  whole process group, stops them once, through the parent.
- A child that dies unexpectedly stops the others and the parent exits 1: a crash is not
  hidden by a restart loop, and the process manager (systemd, Kubernetes) restarts the whole.
  Nothing is lost meanwhile: the dead child's leases fall due when they expire.
- A child whose parent vanished (SIGKILL) gets SIGTERM from the kernel (Linux
  ``PR_SET_PDEATHSIG``) and stops gracefully: no orphan keeps delivering.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("consent_relay.processes")

READY = b"ready\n"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ProcessCountRefused(ValueError):
    """A process count this database or machine cannot use; the message says why."""


def process_count(requested: int | None, *, sqlite: bool, what: str, default: int | None) -> int:
    """How many processes of ``what`` to run. ``default`` (None: one per core) applies when
    none is requested; SQLite always runs one."""
    if requested is not None and requested < 1:
        raise ProcessCountRefused(f"--processes must be at least 1 (got {requested})")
    if sqlite:
        if requested is not None and requested > 1:
            raise ProcessCountRefused(
                f"SQLite runs one {what} process: it has one writer at a time, so more "
                f"processes would wait on its write lock, not go faster. Use PostgreSQL "
                f"(CONSENT_RELAY_DATABASE_URL=postgresql://...) to run {requested}."
            )
        return 1
    if requested is not None:
        return requested
    return default if default is not None else os.cpu_count() or 1


def stop_with_parent(parent: int | None = None) -> None:
    """Have the kernel send this process SIGTERM when its parent exits (Linux), and stop
    now if the parent ``parent`` is already gone. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


# -- the parent --------------------------------------------------------------------------------


@dataclass
class Child:
    index: int
    popen: subprocess.Popen[bytes]
    pipe: int  # the read end of the child's pipe
    ready: bool = False
    exited: bool = False


Command = Callable[[int, int], list[str]]  # (child index, write fd) -> argv


@dataclass
class Supervisor:
    """``count`` children made by ``command``; stopped together. Thread-safe to stop from a
    signal handler or another thread (``request_stop``)."""

    command: Command
    count: int
    grace: float = 60.0  # seconds a stopping child may take before SIGKILL
    children: list[Child] = field(default_factory=list)
    failed: str = ""  # why, when a child died unasked
    stopping: bool = False
    _wake: tuple[int, int] = (-1, -1)

    def start(self) -> None:
        self._wake = os.pipe()
        os.set_blocking(self._wake[1], False)
        for index in range(self.count):
            read, write = os.pipe()
            popen = subprocess.Popen(self.command(index, write), pass_fds=(write,))
            os.close(write)  # the child holds the only write end: EOF means it is gone
            self.children.append(Child(index, popen, read))

    @property
    def pids(self) -> list[int]:
        return [child.popen.pid for child in self.children]

    def request_stop(self, *_args: object) -> None:
        """Stop waiting (signal-safe): from a handler, or another thread."""
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake[1], b"x")

    def forward_signals(self, signums: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        for signum in signums:
            signal.signal(signum, self.request_stop)

    def wait_ready(self) -> bool:
        """Until every child said it works (True), or a stop or a death came first."""
        return self._wait(lambda: all(child.ready for child in self.children))

    def wait(self) -> None:
        """Until a stop is requested or a child dies."""
        self._wait(lambda: False)

    def _wait(self, done: Callable[[], bool]) -> bool:
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake[0], selectors.EVENT_READ)
            for child in self.children:
                if not child.exited:
                    selector.register(child.pipe, selectors.EVENT_READ, child)
            while not done():
                if self.stopping or self.failed:
                    return False
                for key, _events in selector.select():
                    child = key.data
                    if child is None:
                        os.read(self._wake[0], 64)
                        continue
                    if self._read(child):
                        selector.unregister(child.pipe)
        return True

    def _read(self, child: Child) -> bool:
        """Take a child's news; True when it exited."""
        data = os.read(child.pipe, 64)
        if data:
            child.ready = child.ready or READY in data
            return False
        child.exited = True
        code = child.popen.wait()
        if not self.stopping and not self.failed:
            self.failed = f"worker process {child.popen.pid} exited unexpectedly (status {code})"
            log.error("%s: stopping the others", self.failed)
        return True

    def stop(self) -> int:
        """SIGTERM to every live child, wait for them (SIGKILL after ``grace`` s); the exit
        status for the parent: 0 when all stopped cleanly when asked, else 1."""
        self.stopping = True
        for child in self.children:
            if child.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        clean = not self.failed
        for child in self.children:
            try:
                code = child.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process %d did not stop in time: killed", child.popen.pid)
                child.popen.kill()
                code = child.popen.wait()
            os.close(child.pipe)
            clean = clean and code in (0, -signal.SIGTERM)
        for fd in self._wake:
            os.close(fd)
        return 0 if clean else 1


def worker_command(
    concurrency: int | None, metrics_port: int | None, processes: int = 1
) -> Command:
    """The argv of worker child ``index``: ``python -m consent_relay.processes``, told it is
    one of ``processes`` worker processes (``delivery.worker.pg_recorders``). With a metrics
    port, child ``index`` serves its metrics on ``metrics_port + index``."""
    parent = os.getpid()

    def command(index: int, ready_fd: int) -> list[str]:
        argv = [sys.executable, "-m", "consent_relay.processes", "--ready-fd", str(ready_fd)]
        argv += ["--parent", str(parent), "--processes", str(processes)]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port + index)]
        return argv

    return command


# -- a child -----------------------------------------------------------------------------------


def child_main(argv: list[str] | None = None) -> int:
    """One worker process under a supervisor: as ``consent-relay worker --processes 1``, but
    it says ``ready`` into its pipe instead of printing, and stops on SIGTERM only."""
    parser = argparse.ArgumentParser(prog="python -m consent_relay.processes")
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--processes", type=int, default=1)  # started together, this one too
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_with_parent(args.parent)

    import uvloop

    from consent_relay import errors, logs, runner
    from consent_relay.settings import Settings

    settings = Settings()
    logs.configure(settings)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        from consent_relay import metrics

        start_http_server(args.metrics_port, addr=settings.host, registry=metrics.REGISTRY)
    with os.fdopen(args.ready_fd, "wb", buffering=0) as pipe:
        try:
            uvloop.run(
                runner.run_process(
                    settings,
                    concurrency=args.concurrency,
                    on_ready=lambda: pipe.write(READY),
                    signals=(signal.SIGTERM,),
                    processes=args.processes,
                )
            )
        except errors.ConsentRelayError as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
