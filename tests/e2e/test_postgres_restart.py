"""PostgreSQL restarted mid-run, three times (``restart -m immediate``; ``stop -m immediate``,
an outage, ``start``; ``restart -m immediate`` again) while clients post events and two
``consent-relay worker`` processes deliver them.

- During an outage the API answers 503 problem+json: never a 500, never a 201 for a change
  that was not stored (a 201 that raced the stop must be there after recovery).
- The workers reconnect by themselves, the LISTEN connection included (seen in
  ``pg_stat_activity``, matched to each worker process by its TCP ports).
- After recovery every acknowledged change is delivered (0 lost), in order per user.

This stops the shared cluster (``pg_ctlcluster``): it is always started again (``finally``,
and the ``cluster`` fixture), and waited for with ``pg_isready``.
``CONSENT_RELAY_LONG_TESTS=1`` scales the run up (3,000 events instead of 800).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import databases, inspect
from consent_relay.storage.store import Store
from tests.e2e.helpers import (
    READY,
    WorkerFleet,
    consent_event,
    eventually,
    make_webhook,
    post_event,
    process_env,
    read,
)
from tests.receiver import Receiver

LONG = os.environ.get("CONSENT_RELAY_LONG_TESTS") == "1"
EVENTS = 3000 if LONG else 800
CLIENTS = 8
USERS_PER_CLIENT = 5
# The cluster serving CONSENT_RELAY_TEST_POSTGRES_URL: "<version> <name>" for pg_ctlcluster.
CLUSTER = os.environ.get("CONSENT_RELAY_TEST_PG_CLUSTER", "15 main").split()
RESTARTS = ("restart", "stop-start", "restart")

pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


# -- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    host: str
    port: int

    async def ctl(self, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            *CLUSTER,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, f"pg_ctlcluster {' '.join(args)}: {output.decode()}"

    async def accepting(self) -> bool:
        process = await asyncio.create_subprocess_exec(
            "pg_isready", "-q", "-h", self.host, "-p", str(self.port), "-t", "2"
        )
        return await process.wait() == 0

    async def wait_accepting(self, within: float = 90) -> None:
        await eventually(
            self.accepting, within=within, interval=0.1, what="PostgreSQL to accept connections"
        )

    async def ensure_up(self) -> None:
        """Started, and accepting connections (whatever state a failed test left)."""
        if not await self.accepting():
            with contextlib.suppress(AssertionError):  # "already running" while starting up
                await self.ctl("start")
        await self.wait_accepting()


@pytest.fixture
async def cluster(store: Store) -> AsyncIterator[Cluster]:
    """The shared cluster; up again after the test, before the store closes."""
    up = Cluster(*databases.host_and_port(store.url))
    await up.ensure_up()
    try:
        yield up
    finally:
        await up.ensure_up()


@pytest.fixture
async def fleet(settings: Settings, cluster: Cluster, tmp_path: Path) -> AsyncIterator[WorkerFleet]:
    """Two-at-a-time worker processes with short leases; stopped while the cluster is up."""
    logs = tmp_path / "logs"
    logs.mkdir()
    env = process_env(settings, CONSENT_RELAY_LEASE_SECONDS="1")
    workers = WorkerFleet(env, logs, concurrency=20)
    try:
        yield workers
    finally:
        await cluster.ensure_up()
        await workers.stop()


# -- a database that is down, then up ------------------------------------------------------


@dataclass
class Gate:
    """A TCP front for PostgreSQL. Closed, it answers every connection as a server in the
    middle of a restart does (FATAL 57P03 "the database system is starting up"); open, it
    forwards to the real server."""

    upstream: tuple[str, int]
    is_open: bool = False
    turned_away: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aenter__(self) -> Gate:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.is_open:
                await self._forward(reader, writer)
            else:
                await self._starting_up(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _starting_up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        length = int.from_bytes(await reader.readexactly(4), "big")
        packet = await reader.readexactly(length - 4)
        if int.from_bytes(packet[:4], "big") == 80877103:  # SSLRequest: no SSL here
            writer.write(b"N")
            length = int.from_bytes(await reader.readexactly(4), "big")
            await reader.readexactly(length - 4)  # the StartupMessage
        fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
        writer.write(b"E" + (len(fields) + 4).to_bytes(4, "big") + fields)
        await writer.drain()
        self.turned_away += 1

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()

        pipes = [
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            up_writer.transport.abort()


# -- the LISTEN connections of the worker processes -------------------------------------------


def tcp_ports_of(pid: int) -> set[int]:
    """The local TCP ports of a process's sockets (from /proc)."""
    assert Path(f"/proc/{pid}").exists(), f"process {pid} is gone"
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            columns = line.split()
            if columns[9] in inodes:
                ports.add(int(columns[1].rsplit(":", 1)[1], 16))
    return ports


async def listening(ctx: Context, pid: int) -> bool:
    """Whether the worker process ``pid`` has its LISTEN connection (wakeup.listen runs
    ``LISTEN`` and then ``SELECT 1`` every second on it; nothing else in a worker does)."""
    ports = tcp_ports_of(pid)
    backends = await read(ctx, databases.backends)
    return any(
        b.client_port in ports and (b.query == "SELECT 1" or b.query.startswith("LISTEN "))
        for b in backends
    )


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Outage:
    mode: str
    seconds: float = 0.0
    refused: int = 0  # 503s the clients got meanwhile
    probes: int = 0  # calls made while the server was down (stop-start), all 503


@dataclass
class Clients:
    """What the API answered, and to whom."""

    api: httpx.AsyncClient
    up: asyncio.Event = field(default_factory=asyncio.Event)
    acknowledged: dict[str, str] = field(default_factory=dict)  # event id -> ouid, 201s
    statuses: Counter[int] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    refused: int = 0
    # Set after the last outage: until then clients keep posting past their target, so that
    # an outage always meets clients (a fast write path reached the target before a stop).
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def check_refusal(self, response: httpx.Response, what: str) -> None:
        """A 503 problem+json, or a wrong answer recorded."""
        if response.status_code != 503:
            self.wrong.append(f"{what}: {response.status_code} {response.text[:300]}")
        elif response.headers.get("content-type") != "application/problem+json":
            self.wrong.append(f"{what}: 503 with {response.headers.get('content-type')}")
        elif "retry-after" not in response.headers and "readyz" not in what:
            self.wrong.append(f"{what}: 503 without Retry-After")
        elif response.json().get("status") != 503:
            self.wrong.append(f"{what}: 503 with a wrong problem {response.text[:300]}")

    async def post(self, ouid: str, enabled: bool) -> bool:
        """One event; True when acknowledged."""
        try:
            response = await self.api.post(
                "/v1/consents/events", json=consent_event(ouid, "analytics", enabled)
            )
        except Exception as exc:  # the app raised: a 500 for a client
            self.wrong.append(f"POST raised {type(exc).__name__}: {exc}")
            return False
        self.statuses[response.status_code] += 1
        if response.status_code == 201:
            self.acknowledged[response.json()["id"]] = ouid
            return True
        self.check_refusal(response, "POST /v1/consents/events")
        self.refused += 1
        return False

    async def client(self, number: int, target: int) -> None:
        """Events for this client's own users, one at a time (so each user's order is the
        order of the 201s); after a refusal, back off until the database is up again or for
        Retry-After (1 s), whichever comes first."""
        n = 0
        while len(self.acknowledged) < target or not self.finished.is_set():
            ouid = f"c{number}-{n % USERS_PER_CLIENT}@example.com"
            if await self.post(ouid, n % 2 == 0):
                n += 1
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.up.wait(), 1.0)

    async def probe_outage(self) -> int:
        """With the server down: every kind of call is a 503 problem+json."""
        event_id = next(iter(self.acknowledged), "none")
        calls = [
            ("POST", "/v1/consents/events", consent_event("down@example.com", "ads", True)),
            ("GET", "/v1/consents/events", None),
            ("GET", "/v1/consents/users", None),
            ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/down"}),
            ("GET", "/v1/webhooks", None),
            ("GET", f"/v1/consents/events/{event_id}", None),
            ("GET", "/readyz", None),
        ]
        for method, path, payload in calls:
            try:
                response = await self.api.request(method, path, json=payload)
            except Exception as exc:
                self.wrong.append(f"{method} {path} raised {type(exc).__name__}: {exc}")
                continue
            if method == "POST" and response.status_code == 201 and "events" in path:
                # Only if it really was stored: checked with every acknowledged event.
                self.acknowledged[response.json()["id"]] = "down@example.com"
                continue
            self.check_refusal(response, f"{method} {path} while the server was down")
        return len(calls)


# -- the tests --------------------------------------------------------------------------------


async def test_a_worker_started_while_the_database_is_down_waits_for_it(
    api: httpx.AsyncClient,
    ctx: Context,
    settings: Settings,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    """A worker (re)started in the middle of a database restart does not give up: it keeps
    trying until the database is back, then delivers."""
    async with Gate(databases.host_and_port(ctx.store.url)) as gate:
        behind_gate = databases.with_port(ctx.store.url, gate.port)
        env = process_env(settings, CONSENT_RELAY_DATABASE_URL=behind_gate)
        fleet = WorkerFleet(env, tmp_path, concurrency=5)
        worker = fleet.spawn()
        try:

            async def tried_or_gone() -> bool:
                return gate.turned_away >= 3 or not worker.alive()

            await eventually(tried_or_gone, within=60, what="the worker to try the database")
            assert worker.alive(), f"the worker gave up at start-up:\n{worker.output()}"
            gate.is_open = True
            await worker.printed(READY, within=60)
            await make_webhook(api, receiver.url("/late"))
            await post_event(api, consent_event("late@example.com", "ads", True))
            await receiver.wait_for(2, "/late", timeout=30)  # event.created, user.created
        finally:
            gate.is_open = True
            if worker.alive():
                await fleet.stop()
            else:
                await fleet.kill(worker)  # only reaps it


async def test_three_restarts_lose_no_acknowledged_change(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    cluster: Cluster,
    fleet: WorkerFleet,
) -> None:
    started = time.monotonic()
    hook = await make_webhook(api, receiver.url("/restart"))
    workers = [fleet.spawn(), fleet.spawn()]
    for worker in workers:  # running: past start-up (see test_a_worker_started_...)
        await worker.printed(READY, within=30)
    clients = Clients(api)
    clients.up.set()
    posting = [asyncio.create_task(clients.client(number, EVENTS)) for number in range(CLIENTS)]
    outages: list[Outage] = []
    try:
        for round_, mode in enumerate(RESTARTS, start=1):

            async def far_enough(round_: int = round_) -> bool:
                return len(clients.acknowledged) >= round_ * EVENTS // (len(RESTARTS) + 1)

            await eventually(far_enough, within=120, interval=0.05, what="events posted")
            fleet.check_alive()
            outage = Outage(mode)
            outages.append(outage)
            refused_before = clients.refused
            clients.up.clear()
            down_at = time.monotonic()
            try:
                if mode == "restart":
                    await cluster.ctl("restart", "-m", "immediate")
                else:
                    await cluster.ctl("stop", "-m", "immediate")
                    outage.probes = await clients.probe_outage()

                    async def refusals(before: int = refused_before) -> bool:
                        return clients.refused - before >= 2 * CLIENTS

                    await eventually(refusals, within=30, what="clients refused meanwhile")
                    await cluster.ctl("start")
            finally:
                await cluster.ensure_up()
                clients.up.set()
            outage.seconds = time.monotonic() - down_at
            outage.refused = clients.refused - refused_before

            # Both workers reconnect by themselves, their LISTEN connections too.
            for worker in workers:

                async def back(pid: int = worker.pid) -> bool:
                    fleet.check_alive()
                    return await listening(ctx, pid)

                await eventually(back, within=30, interval=0.2, what=f"LISTEN of {worker.pid}")
        clients.finished.set()
        await asyncio.gather(*posting)
    finally:
        for task in posting:
            task.cancel()
        await asyncio.gather(*posting, return_exceptions=True)
        await cluster.ensure_up()

    assert not clients.wrong, "\n".join(clients.wrong[:20])

    async def drained() -> bool:
        fleet.check_alive()
        return await read(ctx, inspect.count_undelivered) == 0

    await eventually(drained, within=120, interval=0.2, what="every delivery delivered")
    fleet.check_alive()

    # Every acknowledged event was stored ...
    stored = await read(ctx, inspect.events_by_user)
    stored_ids = {r["id"] for r in stored}
    missing = set(clients.acknowledged) - stored_ids
    assert not missing, f"{len(missing)} acknowledged events are not stored"
    # ... and every message of the organization (those of changes that got a 503 after all
    # included) arrived at least once.
    message_ids = {r["id"] for r in await read(ctx, inspect.rows, "messages")}
    arrivals = receiver.at("/restart")
    arrived = [r.headers["webhook-id"] for r in arrivals]
    lost_messages = message_ids - set(arrived)
    assert not lost_messages, f"{len(lost_messages)} messages never arrived"
    first_seen: dict[str, list[str]] = {}
    for item in arrivals:
        body: dict[str, Any] = item.json
        if body["type"] == "event.created":
            entity = body["parameters"]["entity"]
            first_seen.setdefault(entity["user"]["id"], []).append(entity["id"])
    delivered_events = {event for ids in first_seen.values() for event in ids}
    lost = set(clients.acknowledged) - delivered_events
    assert not lost, f"{len(lost)} acknowledged events never delivered"
    # In order per user: first arrivals follow the order the events were stored in.
    expected: dict[str, list[str]] = {}
    for row in stored:
        expected.setdefault(row["user_id"], []).append(row["id"])
    for user_id, ids in expected.items():
        assert list(dict.fromkeys(first_seen.get(user_id, []))) == ids, user_id
    assert await read(ctx, inspect.count, "deliveries", webhook_id=hook["id"])

    tracebacks = {w.pid: w.output().count("Traceback") for w in workers}
    print(
        f"\n[postgres restarts] events acknowledged={len(clients.acknowledged)} "
        f"stored={len(stored_ids)} messages={len(message_ids)} arrivals={len(arrived)} "
        f"duplicates={len(arrived) - len(set(arrived))} lost=0 "
        f"restarts={[(o.mode, round(o.seconds, 1), o.refused, o.probes) for o in outages]} "
        f"statuses={dict(clients.statuses)} worker-tracebacks={tracebacks} "
        f"total={time.monotonic() - started:.1f}s"
    )
