"""Databases for the bench: a temporary SQLite file, a fresh PostgreSQL database, and the
set-up of organizations, webhooks and queued deliveries through the storage layer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import text

from consent_relay import errors, ids
from consent_relay.crypto import SecretBox
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn, WebhookIn
from consent_relay.services import orgs, webhooks
from consent_relay.settings import Settings
from consent_relay.storage import queue
from consent_relay.storage.records import MessageRecord, NewDelivery
from consent_relay.storage.store import Store

PG_HOST = os.environ.get("BENCH_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PGPORT", "5432"))
PG_USER = os.environ.get("BENCH_PGUSER", "postgres")
BODY_BYTES = 1024


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def _admin_connect(wait: float) -> Any:
    """A connection to the ``postgres`` database, waiting up to ``wait`` seconds while the
    server starts or recovers (the machine is shared: others may restart it)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=10
            )
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _admin_execute(sql: str, wait: float = 60.0) -> None:
    conn = await _admin_connect(wait)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def postgres_available() -> bool:
    try:
        await _admin_execute("SELECT 1", wait=10.0)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


_template: str | None = None


@contextlib.asynccontextmanager
async def postgres_template() -> AsyncIterator[None]:
    """A migrated, empty database ``bench_<pid>_template`` for this run, from which every
    fresh database is copied (``CREATE DATABASE ... TEMPLATE``: no migration each time)."""
    global _template
    name = f"bench_{os.getpid()}_template"
    await _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await _admin_execute(f"CREATE DATABASE {name}")
    try:
        store = Store(pg_url(name))
        try:
            await store.migrate()
        finally:
            await store.close()
        _template = name
        yield
    finally:
        _template = None
        await _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.asynccontextmanager
async def fresh_postgres(suffix: str = "") -> AsyncIterator[str]:
    """A new, empty database ``bench_<pid>[_suffix]``, dropped afterwards."""
    name = f"bench_{os.getpid()}" + (f"_{suffix}" if suffix else "")
    await _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    template = f" TEMPLATE {_template}" if _template else ""
    await _admin_execute(f"CREATE DATABASE {name}{template}")
    try:
        yield pg_url(name)
    finally:
        await _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def temp_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"


@contextlib.asynccontextmanager
async def database(kind: str, suffix: str = "") -> AsyncIterator[str]:
    """A fresh database of ``kind`` (sqlite | postgres), as a URL."""
    if kind == "postgres":
        async with fresh_postgres(suffix) as url:
            yield url
    else:
        with temp_sqlite() as url:
            yield url


def settings_for(url: str, data_dir: Path, key: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=url,
        data_dir=data_dir,
        secret_key=key,
        admin_token="bench-admin-token",
        allowed_networks=["127.0.0.0/8"],
        log_level="WARNING",
        **overrides,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as ``CONSENT_RELAY_*`` variables, for child processes."""
    env = {
        "CONSENT_RELAY_DATABASE_URL": settings.resolved_database_url,
        "CONSENT_RELAY_DATA_DIR": str(settings.data_dir),
        "CONSENT_RELAY_SECRET_KEY": settings.secret_key,
        "CONSENT_RELAY_ADMIN_TOKEN": settings.admin_token,
        "CONSENT_RELAY_ALLOWED_NETWORKS": ",".join(settings.allowed_networks),
        "CONSENT_RELAY_WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "CONSENT_RELAY_WEBHOOK_CONCURRENCY": str(settings.webhook_concurrency),
        "CONSENT_RELAY_REQUEST_TIMEOUT": str(settings.request_timeout),
        "CONSENT_RELAY_LOG_LEVEL": settings.log_level,
        "CONSENT_RELAY_HOST": settings.host,
        "CONSENT_RELAY_PORT": str(settings.port),
    }
    return env


@contextlib.asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[Context]:
    store = Store(settings.resolved_database_url)
    ctx = Context(settings=settings, store=store, box=SecretBox([settings.secret_key]))
    try:
        await store.migrate()
        yield ctx
    finally:
        await store.close()


async def create_org_and_webhooks(
    ctx: Context, org_id: str, urls: Sequence[str], **webhook_fields: Any
) -> list[str]:
    await orgs.create_organization(ctx, OrganizationIn(id=org_id))
    created = []
    for url in urls:
        hook = await webhooks.create_webhook(
            ctx, org_id, WebhookIn.model_validate({"url": url, **webhook_fields})
        )
        created.append(str(hook["id"]))
    return created


def message_parameters(number: int, user_id: str, size: int = BODY_BYTES) -> dict[str, Any]:
    """Parameters whose rendered webhook body is ``size`` bytes (an event.created shape)."""
    entity: dict[str, Any] = {
        "id": f"evt-{number:09d}",
        "organization_id": "bench",
        "created_at": "2025-01-01T00:00:00.000Z",
        "status": "confirmed",
        "regulation": "gdpr",
        "user": {"id": user_id, "organization_user_id": f"{user_id}@example.com"},
        "consents": {
            "purposes": [{"id": "analytics", "enabled": True}, {"id": "ads", "enabled": False}],
            "vendors": {"enabled": ["google"], "disabled": []},
        },
        "metadata": {"pad": ""},
    }
    current = len(render_body("event.created", {"entity": entity}))
    entity["metadata"]["pad"] = "x" * max(0, size - current)
    return {"entity": entity}


def render_body(message_type: str, parameters: dict[str, Any]) -> bytes:
    """The body the worker sends for a non-flattened gdpr webhook (requests.render)."""
    return (
        b'{"type":'
        + orjson.dumps(message_type)
        + b',"parameters":'
        + orjson.dumps(parameters)
        + b"}"
    )


@dataclass
class FillResult:
    messages: int
    deliveries: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0


async def fill(
    ctx: Context,
    org_id: str,
    webhook_ids: Sequence[str],
    messages: int,
    users: int,
    *,
    batch_messages: int = 5000,
) -> FillResult:
    """``messages`` messages, each delivered to every webhook, spread evenly over ``users``
    users (so each (webhook, user) queue holds about messages/users deliveries, its head
    due now), written with ``Tx.enqueue``, a few thousand messages per transaction. A
    batch holds whole users, so each queue is appended to once."""
    began = time.perf_counter()
    users = max(1, min(users, messages))
    per_user, extra = divmod(messages, users)
    counts = [per_user + (1 if u < extra else 0) for u in range(users)]
    number = 0
    user = 0
    while user < users:
        now = now_ts()
        records: list[MessageRecord] = []
        new: list[NewDelivery] = []
        while user < users and (not records or len(records) + counts[user] <= batch_messages):
            user_id = f"user-{user:07d}"
            for _ in range(counts[user]):
                record = MessageRecord(
                    organization_id=org_id,
                    id=ids.new_id("msg"),
                    type="event.created",
                    regulation="gdpr",
                    user_id=user_id,
                    parameters=message_parameters(number, user_id),
                    created_at=now,
                )
                number += 1
                records.append(record)
                new.extend(NewDelivery(message=record, webhook_id=hook) for hook in webhook_ids)
            user += 1
        for attempt in range(5):  # the shared PostgreSQL may be restarted under us
            try:
                async with ctx.store.write() as tx:
                    await queue.enqueue(tx, records, new, ctx.clock_ms(), now)
                break
            except errors.StorageUnavailable:
                if attempt == 4:
                    raise
                await asyncio.sleep(2.0)
    return FillResult(messages, messages * len(webhook_ids), time.perf_counter() - began)


async def pending_count(ctx: Context) -> int:
    async with ctx.store.read() as tx:
        row = (
            await tx.conn.execute(text("SELECT count(*) FROM deliveries WHERE status = 'pending'"))
        ).scalar_one()
    return int(row)


async def status_counts(ctx: Context) -> dict[str, int]:
    async with ctx.store.read() as tx:
        rows = await tx.conn.execute(
            text("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
        )
        return {str(r.status): int(r.n) for r in rows}


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_pids(ctx: Context) -> list[int]:
    """The PostgreSQL backends connected to this database (none on SQLite)."""
    if ctx.store.is_sqlite:
        return []
    async with ctx.store.read() as tx:
        rows = await tx.conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        )
        return [int(r.pid) for r in rows]


async def backend_cpu_s(ctx: Context) -> float | None:
    """CPU seconds used so far by the PostgreSQL backends connected to this database
    (None on SQLite, or when /proc cannot tell)."""
    pids = await backend_pids(ctx)
    return sum(proc_cpu_s(pid) for pid in pids) if pids else None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


_postmaster: list[int] = []  # the local server's postmaster pid, once found


async def _postmaster_pid() -> int | None:
    """The pid of the local PostgreSQL server's postmaster: the parent of a backend."""
    if _postmaster:
        if _is_postgres(_postmaster[0]):
            return _postmaster[0]
        _postmaster.clear()  # restarted meanwhile
    conn = await _admin_connect(10.0)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        fields = _stat_fields(backend)  # while it runs
    finally:
        await conn.close()
    if fields is None:  # not on this machine
        return None
    _postmaster.append(int(fields[1]))  # the backend's parent
    return _postmaster[0]


async def wal_position() -> str:
    """The local PostgreSQL server's current write-ahead log position (``wal_bytes_since``
    takes it back): what every database of the server has logged, whoever wrote it."""
    conn = await _admin_connect(10.0)
    try:
        return str(await conn.fetchval("SELECT pg_current_wal_lsn()::text"))
    finally:
        await conn.close()


async def wal_bytes_since(position: str) -> int:
    """Bytes of write-ahead log the server has written since ``position`` (``wal_position``)."""
    conn = await _admin_connect(10.0)
    try:
        return int(
            await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", position
            )
        )
    finally:
        await conn.close()


async def server_cpu_s() -> float | None:
    """CPU seconds the local PostgreSQL server has used so far, every process of it: the
    postmaster, the backends it has reaped (its children's CPU), and those still running
    (backends, WAL writer, checkpointer...). A phase's difference is what the database cost
    that phase, whoever connected (a child process's pool included, gone by then or not).
    None when the server is not on this machine."""
    postmaster = await _postmaster_pid()
    return None if postmaster is None else _server_process_cpu_s(postmaster)


def _is_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith("postgres")
    except OSError:
        return False


def _server_process_cpu_s(postmaster: int) -> float | None:
    fields = _stat_fields(postmaster)
    if fields is None:
        return None
    # utime, stime, cutime, cstime: its own and its reaped children's
    own = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(_run_time_s(pid) for pid in descendants(postmaster))


def _run_time_s(pid: int) -> float:
    """The CPU time of a single-threaded process (a PostgreSQL backend or helper), to the
    nanosecond: ``/proc/<pid>/schedstat``'s first field. ``stat``'s utime and stime are whole
    clock ticks (10 ms) truncated per process, so a short drain's few backends, each under a
    tick, would read as no CPU at all. ``proc_cpu_s`` where schedstat is not there."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return proc_cpu_s(pid)


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def attempt_count(ctx: Context) -> int:
    async with ctx.store.read() as tx:
        return int((await tx.conn.execute(text("SELECT count(*) FROM attempts"))).scalar_one())
