"""Processes that use the machine: ``api --processes 2`` (two API processes on one port),
``worker --processes 2`` (two worker processes sharing the queue), ``serve
--worker-processes 2``; all stop on SIGTERM, a dead worker process stops the rest (exit 1),
and SQLite refuses more than one process. Real processes, on PostgreSQL (SQLite: refusals).

Child processes are found in /proc (their parent pid); which one handled a request, from the
TCP connections it holds (/proc/<pid>/fd and /proc/net/tcp); which one leased a delivery,
from the lease (``<host>:<pid>:...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from tests.conftest import _session_database_url
from tests.e2e.helpers import (
    READY,
    Process,
    consent_event,
    eventually,
    free_port,
    leases_of,
    make_webhook,
    post_event,
    process_env,
    read,
    wait_healthy,
)

WORKER_CHILD = "consent_relay.processes"  # in a supervised worker process's command line
API_CHILD = "multiprocessing.spawn"  # uvicorn's API processes (not its resource tracker)


@pytest.fixture(params=["postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """These tests run on PostgreSQL only: SQLite runs one process (see the refusals)."""
    return _session_database_url()


# -- /proc ------------------------------------------------------------------------------------


def children_of(parent: int, marker: str) -> list[int]:
    """Live child processes of ``parent`` whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, ppid = fields[0], int(fields[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if ppid == parent and state != "Z" and marker in cmdline:
                found.append(int(entry.name))
    return sorted(found)


def told_processes(pid: int) -> str | None:
    """The ``--processes`` a worker child was started with (its command line), if any."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return argv[argv.index("--processes") + 1] if "--processes" in argv else None


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def established_on(pid: int, port: int) -> int:
    """Established TCP connections to local ``port`` held by process ``pid``."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = fd.readlink().name
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                if local_port == port and cols[3] == "01" and cols[9] in inodes:
                    count += 1
    return count


# -- a receiver that holds every request until told ---------------------------------------------


class GatedReceiver:
    """Answers 204, but only once ``gate`` is set: meanwhile deliveries stay leased."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        await self.gate.wait()
        self.arrived.append(request.headers["webhook-id"])
        return web.Response(status=204)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/gated"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/gated", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def gated() -> AsyncIterator[GatedReceiver]:
    receiver = GatedReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@contextlib.asynccontextmanager
async def started(process: Process) -> AsyncIterator[Process]:
    """The process, SIGKILLed if a test leaves it running."""
    process.start()
    try:
        yield process
    finally:
        if process.alive():
            await process.kill()


async def wait_children(parent: Process, marker: str, count: int) -> list[int]:
    found: list[int] = []

    async def there() -> bool:
        assert parent.alive(), f"{parent.args[0]} exited:\n{parent.output()}"
        found[:] = children_of(parent.pid, marker)
        return len(found) == count

    await eventually(there, within=60, interval=0.1, what=f"{count} child processes")
    return found


# -- tests --------------------------------------------------------------------------------------


async def test_api_processes_share_one_port_and_stop_on_sigterm(
    tmp_path: Path, settings: Settings, ctx: Context
) -> None:
    port = free_port()
    server = Process(
        ["api", "--processes", "2", "--host", "127.0.0.1", "--port", str(port)],
        process_env(settings, CONSENT_RELAY_LOG_LEVEL="INFO"),
        tmp_path / "api.log",
    )
    async with started(server), contextlib.AsyncExitStack() as clients:
        base = f"http://127.0.0.1:{port}"
        await wait_healthy(
            await clients.enter_async_context(httpx.AsyncClient(base_url=base)), server
        )
        children = await wait_children(server, API_CHILD, 2)

        # New connections until each process holds one it answered on (keep-alive).
        async def both_answer() -> bool:
            http = await clients.enter_async_context(httpx.AsyncClient(base_url=base))
            response = await http.get("/readyz")
            assert response.status_code == 200, response.text
            return all(established_on(pid, port) > 0 for pid in children)

        await eventually(both_answer, within=30, interval=0.02, what="both processes to answer")
        answering = {pid: established_on(pid, port) for pid in children}

        # The API works through either process; no worker runs with it.
        admin = {"Authorization": f"Bearer {settings.admin_token}"}
        async with httpx.AsyncClient(base_url=base, headers=admin) as http:
            response = await http.post("/v1/admin/organizations", json={"id": "multi"})
            assert response.status_code == 201, response.text
        assert children_of(server.pid, WORKER_CHILD) == []

        await clients.aclose()
        code = await server.terminate(within=30)
    assert code == 0, f"exit status {code}:\n{server.output()}"
    assert server.output().count("Application shutdown complete") == 2, server.output()
    assert all(gone(pid) for pid in children), answering
    assert await read(ctx, inspect.count, "organizations", id="multi") == 1


async def test_worker_processes_share_a_batch_and_stop_on_sigterm(
    api: httpx.AsyncClient,
    ctx: Context,
    settings: Settings,
    gated: GatedReceiver,
    tmp_path: Path,
) -> None:
    await make_webhook(api, gated.url)
    # Three requests in flight per process: neither can lease the whole batch.
    worker = Process(
        ["worker", "--processes", "2", "--concurrency", "3"],
        process_env(settings, CONSENT_RELAY_REQUEST_TIMEOUT="20"),
        tmp_path / "worker.log",
    )
    async with started(worker):
        await worker.printed(READY, within=60)
        children = await wait_children(worker, WORKER_CHILD, 2)
        assert all(told_processes(pid) == "2" for pid in children)  # each one of two
        await asyncio.gather(
            *(post_event(api, consent_event(f"p{u}@example.com", "ads", True)) for u in range(20))
        )

        async def both_lease() -> bool:
            return all([await leases_of(ctx, pid) > 0 for pid in children])

        await eventually(both_lease, within=30, what="both worker processes to lease deliveries")
        gated.gate.set()

        async def delivered() -> bool:
            assert worker.alive(), worker.output()
            return await read(ctx, inspect.count_undelivered) == 0

        await eventually(delivered, within=60, interval=0.1, what="every delivery delivered")
        code = await worker.terminate(within=60)
    assert code == 0, f"exit status {code}:\n{worker.output()}"
    assert worker.output().count(READY) == 1
    assert all(gone(pid) for pid in children)
    messages = {r["id"] for r in await read(ctx, inspect.rows, "messages")}
    assert len(messages) == 40  # event.created and user.created for each of 20 users
    assert set(gated.arrived) == messages


async def test_a_worker_process_that_dies_stops_the_others(
    ctx: Context, settings: Settings, tmp_path: Path
) -> None:
    worker = Process(["worker", "--processes", "2"], process_env(settings), tmp_path / "w.log")
    async with started(worker):
        await worker.printed(READY, within=60)
        victim, survivor = await wait_children(worker, WORKER_CHILD, 2)
        os.kill(victim, signal.SIGKILL)
        code = await worker.wait(60)
    assert code == 1, worker.output()
    assert f"worker process {victim} exited unexpectedly" in worker.output()
    assert gone(survivor)


async def test_serve_runs_worker_processes_and_stops_them(
    ctx: Context, settings: Settings, tmp_path: Path
) -> None:
    """SIGTERM stops the API and its worker process (exit 0); a worker process that dies
    stops serve (exit 1)."""
    for ending in ("sigterm", "child dies"):
        port = free_port()
        server = Process(
            ["serve", "--worker-processes", "2", "--host", "127.0.0.1", "--port", str(port)],
            process_env(settings, CONSENT_RELAY_LOG_LEVEL="INFO"),
            tmp_path / f"serve-{ending}.log",
        )
        async with started(server), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_healthy(http, server)
            [child] = await wait_children(server, WORKER_CHILD, 1)
            assert told_processes(child) == "2"  # one of two: the API's own worker and it
            if ending == "sigterm":
                code = await server.terminate(within=60)
            else:
                os.kill(child, signal.SIGKILL)
                code = await server.wait(60)
        assert "Application shutdown complete" in server.output()
        assert gone(child)
        if ending == "sigterm":
            assert code == 0, f"exit status {code}:\n{server.output()}"
        else:
            assert code == 1, server.output()
            assert f"worker process {child} exited unexpectedly" in server.output()


@pytest.mark.parametrize(
    "command",
    [
        ["api", "--processes", "2"],
        ["worker", "--processes", "2"],
        ["serve", "--worker-processes", "2"],
    ],
)
async def test_sqlite_refuses_more_than_one_process(command: list[str], tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'one.db'}", admin_token="t"
    )
    process = Process(command, process_env(settings), tmp_path / "refused.log")
    async with started(process):
        code = await process.wait(60)
    output = " ".join(process.output().split())
    assert code == 2, output
    assert "SQLite runs one" in output, output
    assert "one writer at a time" in output, output
    assert not (tmp_path / "one.db").exists()  # refused before touching the database


async def test_api_processes_that_cannot_start_make_api_fail(
    settings: Settings, tmp_path: Path
) -> None:
    """A database that does not exist fails each process's start-up at once: ``api`` exits
    3 (uvicorn's start-up failure), as with one process, not 0."""
    env = process_env(
        settings,
        CONSENT_RELAY_DATABASE_URL=settings.resolved_database_url.rsplit("/", 1)[0] + "/nowhere",
    )
    server = Process(
        ["api", "--processes", "2", "--port", str(free_port())], env, tmp_path / "api.log"
    )
    async with started(server):
        code = await server.wait(90)
    assert code == 3, server.output()
    assert "an API process failed to start" in server.output()
