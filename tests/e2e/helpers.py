"""Helpers for the end-to-end tests: API shortcuts, bounded polling, in-process and
subprocess workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

import httpx

from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from consent_relay.storage.tx import Tx
from tests.workers import make_webhook as make_webhook  # re-exported
from tests.workers import running as running  # re-exported

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
CLI = str(VENV_BIN / "consent-relay")
READY = "worker running"  # what `consent-relay worker` prints once its signal handlers are set


# -- API shortcuts ----------------------------------------------------------------------------


async def post_event(
    api: httpx.AsyncClient, payload: dict[str, Any], *, quiet: bool = False
) -> dict[str, Any]:
    params = {"$disable_integrations": "true"} if quiet else {}
    response = await api.post("/v1/consents/events", json=payload, params=params)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def consent_event(ouid: str, purpose: str, enabled: bool, **extra: Any) -> dict[str, Any]:
    return {
        "user": {"organization_user_id": ouid},
        "consents": {"purposes": [{"id": purpose, "enabled": enabled}]},
        **extra,
    }


async def get_json(api: httpx.AsyncClient, path: str, **params: str) -> dict[str, Any]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# -- waiting ----------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    within: float,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


P = ParamSpec("P")
T = TypeVar("T")


async def read(
    ctx: Context,
    query: Callable[Concatenate[Tx, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """One named storage query (``inspect.count``, say) in a read transaction of its own."""
    async with ctx.store.read() as tx:
        return await query(tx, *args, **kwargs)


async def wait_healthy(http: httpx.AsyncClient, server: Process, *, within: float = 60) -> None:
    """Until ``server`` (serve or api) answers ``/healthz`` on ``http``'s base URL; fail at
    once if it exits first."""

    async def healthy() -> bool:
        assert server.alive(), f"{server.args[0]} exited early:\n{server.output()}"
        try:
            return (await http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(healthy, within=within, interval=0.1, what="the API to answer /healthz")


# -- in-process worker ------------------------------------------------------------------------


# -- subprocesses -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``consent-relay`` subprocess sharing the test's database and
    secret key (and nothing else from ours: stray CONSENT_RELAY_* variables are dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_RELAY_")}
    env.update(
        CONSENT_RELAY_DATABASE_URL=settings.resolved_database_url,
        CONSENT_RELAY_DATA_DIR=str(settings.data_dir),
        CONSENT_RELAY_SECRET_KEY=settings.secret_key,
        CONSENT_RELAY_ADMIN_TOKEN=settings.admin_token,
        CONSENT_RELAY_ALLOWED_NETWORKS="127.0.0.0/8",
        CONSENT_RELAY_RETRY_SCHEDULE="0.05,0.1,0.1,0.1,0.1",
        CONSENT_RELAY_REQUEST_TIMEOUT="2",
        CONSENT_RELAY_CONNECT_TIMEOUT="1",
        CONSENT_RELAY_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Process:
    """A ``consent-relay`` subprocess with its output in a log file."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log: IO[bytes] | None = None

    def start(self) -> Process:
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            [CLI, *self.args], env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def printed(self, line: str, *, within: float) -> None:
        """Until the process printed ``line`` (output is unbuffered: PYTHONUNBUFFERED)."""

        async def seen() -> bool:
            assert self.alive(), f"{self.args[0]} {self.pid} exited:\n{self.output()}"
            return line in self.output()

        await eventually(seen, within=within, what=f"{self.args[0]} to print {line!r}")

    async def kill(self) -> int:
        """SIGKILL, and reap."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        return await self.wait(10)

    async def terminate(self, within: float = 15) -> int:
        """SIGTERM; SIGKILL if it has not exited ``within`` seconds (and fail then)."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return await self.wait(within)
        except subprocess.TimeoutExpired:
            await self.kill()
            raise

    async def wait(self, within: float) -> int:
        """Until the process exits (``subprocess.TimeoutExpired`` after ``within`` s)."""
        assert self.popen is not None
        try:
            return await asyncio.to_thread(self.popen.wait, within)
        finally:
            if self.popen.poll() is not None:
                self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class WorkerFleet:
    """``consent-relay worker`` processes that can be SIGKILLed and replaced."""

    env: dict[str, str]
    log_dir: Path
    concurrency: int
    live: list[Process] = field(default_factory=list)
    dead: list[Process] = field(default_factory=list)

    def spawn(self) -> Process:
        number = len(self.live) + len(self.dead)
        process = Process(
            ["worker", "--processes", "1", "--concurrency", str(self.concurrency)],
            self.env,
            self.log_dir / f"worker-{number}.log",
        ).start()
        self.live.append(process)
        return process

    def oldest(self) -> Process:
        return min(self.live, key=lambda p: p.started_at)

    async def kill(self, victim: Process) -> None:
        """SIGKILL one worker (it gets no chance to record or give anything back)."""
        self.live.remove(victim)
        self.dead.append(victim)
        await victim.kill()

    def check_alive(self) -> None:
        for process in self.live:
            assert process.alive(), f"worker {process.pid} died:\n{process.output()}"

    async def stop(self) -> None:
        """Stop the live workers gracefully (SIGTERM), in parallel, once they are running
        (before that they have no SIGTERM handler yet, and nothing to give back)."""
        live, self.live = self.live, []
        self.dead.extend(live)
        ready = await asyncio.gather(
            *(p.printed(READY, within=30) for p in live), return_exceptions=True
        )
        codes = await asyncio.gather(*(p.terminate() for p in live), return_exceptions=True)
        for process, started, code in zip(live, ready, codes, strict=True):
            assert started is None, f"worker {process.pid}: {started!r}"
            assert code == 0, f"worker {process.pid} exited with {code!r}:\n{process.output()}"


# -- killing workers ---------------------------------------------------------------------------


def lease_prefix(pid: int) -> str:
    """Leases are ``<worker id>:<token>``, worker ids ``<hostname>:<pid>:<random>``."""
    return f"{socket.gethostname()}:{pid}:"


async def leases_of(ctx: Context, pid: int) -> int:
    """Deliveries the worker process ``pid`` claimed and has not recorded."""
    return await read(ctx, inspect.count_leased, lease_prefix(pid))


async def create_events(
    api: httpx.AsyncClient,
    created: dict[str, list[str]],
    progress: list[int],
    rounds: int,
    *,
    first_round: int = 0,
) -> None:
    """``rounds`` rounds of one event per user (the keys of ``created``), the users of a
    round concurrently: each user's events are created one after the other, and their ids
    appended to ``created[user]`` in that order. A round's parity sets the consent (round
    ``first_round`` on), so every event after a user's first changes the user."""
    for round_ in range(first_round, first_round + rounds):

        async def one(ouid: str, round_: int = round_) -> None:
            event = await post_event(api, consent_event(ouid, "analytics", round_ % 2 == 0))
            created[ouid].append(event["id"])
            progress[0] += 1

        await asyncio.gather(*(one(ouid) for ouid in created))


@dataclass
class Pour:
    """Events poured in by a task, ``create_events`` round after round, for the kill tests.

    A kill test needs work in flight when it kills: if the workers delivered everything
    before enough kills hit work (a fast client, or a victim slow to start under load),
    ``more`` pours another batch in after the last, order per user kept."""

    api: httpx.AsyncClient
    created: dict[str, list[str]]
    progress: list[int] = field(default_factory=lambda: [0])
    rounds: int = 0
    batches: int = 0
    task: asyncio.Task[None] | None = None

    def more(self, rounds: int) -> asyncio.Task[None]:
        assert self.task is None or self.task.done(), "one batch at a time"
        if self.task is not None:
            self.task.result()  # re-raises a failed POST
        self.task = asyncio.create_task(
            create_events(self.api, self.created, self.progress, rounds, first_round=self.rounds)
        )
        self.rounds += rounds
        self.batches += 1
        return self.task

    @property
    def done(self) -> bool:
        return self.task is None or self.task.done()

    async def more_if_drained(self, ctx: Context, rounds: int = 10, most: int = 6) -> bool:
        """With the last batch done and no delivery left pending (all delivered before
        enough kills hit work), another batch of ``rounds`` rounds poured in: True. At most
        ``most`` batches in all."""
        assert self.done
        if await read(ctx, inspect.count, "deliveries", status="pending"):
            return False
        assert self.batches < most, f"all delivered {self.batches} times before the kills hit"
        self.more(rounds)
        return True

    async def finish(self) -> None:
        """Waits for the last batch: re-raises a failed POST."""
        if self.task is not None:
            await self.task

    async def stop(self) -> None:
        """Cancels a batch still running (a test that failed midway)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
