"""Peer: Celery 5 + Redis with late acknowledgement, set up for at-least-once delivery.

What a Python team with Celery would write instead of this engine: one task that POSTs the
message's body, signed, with ``requests`` (the common choice with Celery; one keep-alive
``requests.Session`` per worker thread, since a session is not documented as thread-safe).
At-least-once, as Celery's documentation describes it:

- ``task_acks_late``: the message is acknowledged after the task ran, not before;
- ``task_reject_on_worker_lost``: a task whose worker died is re-queued, not acknowledged;
- ``worker_prefetch_multiplier = 1``: with late acks, reserve no more tasks than can run
  (the "Optimizing" guide's setting for acks-late workers);
- ``autoretry_for`` a ``requests`` error (a refused connection, a timeout, a non-2xx answer
  through ``raise_for_status``), with exponential backoff, 5 retries;
- the Redis transport's visibility timeout (one hour, its default) re-delivers a message that
  was reserved and never acknowledged.

The worker is one process with ``--pool threads`` (``--concurrency`` threads, as many requests
in flight as the engine): the I/O-bound choice that needs nothing more (gevent and eventlet are
not installed; prefork with one process would POST one at a time). Mingle, gossip and worker
heartbeats are off (``--without-mingle --without-gossip --without-heartbeat``): they only
cost, with one worker. The tasks are sent before the timed drain; the worker is started,
connected and ready, and begins to consume on ``go`` (it waits in its ``worker_ready`` signal).
Redis: a dedicated database (``BENCH_REDIS_URL``, ``redis://127.0.0.1:6379/13`` by default), of
which the scenario removes only the keys its queue and the Redis transport made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any

import orjson
import requests
from celery import Celery  # type: ignore[import-untyped]
from celery.signals import worker_ready  # type: ignore[import-untyped]

from bench.peers.common import PeerChild, body, bound_s, timed_drain
from bench.procs import _say, child_env, proc_status_kb
from bench.receiver import ReceiverProcess
from bench.scenarios import Config, Drain
from consent_relay.security import signing

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = "bench_peers_deliveries"
# Keys of the Redis transport (kombu) and of this queue, in the dedicated database.
OWN_KEYS = (
    QUEUE + "*",
    "unacked",
    "unacked_index",
    "unacked_mutex",
    "_kombu.binding*",
    "*.reply.celery.pidbox",
    "celery-task-meta-*",
)
REQUEST_TIMEOUT_S = 10.0
SECRETS = [os.environ.get("BENCH_PEERS_SECRET", "")]

app = Celery("bench_peers", broker=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,  # stdout carries the bench's line protocol
)

_local = threading.local()


def _session() -> requests.Session:
    """This thread's keep-alive session."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        _local.session = session
    return session


@app.task(  # type: ignore[untyped-decorator]
    name="bench_peers.deliver",
    autoretry_for=(requests.RequestException,),
    retry_backoff=True,
    retry_kwargs={"max_retries": 5},
)
def deliver(url: str, msg_id: str, text: str) -> None:
    """POST one signed webhook body; any failure is retried by Celery."""
    data = text.encode()
    headers = {"Content-Type": "application/json"}
    headers.update(signing.headers(SECRETS, msg_id, int(time.time()), data))
    response = _session().post(url, data=data, headers=headers, timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()


def send(url: str, count: int, text: str) -> None:
    """``count`` tasks on the queue, through one producer (blocking: run it in a thread)."""
    with app.producer_or_acquire() as producer:
        for n in range(count):
            deliver.apply_async((url, f"msg_{n:09d}", text), producer=producer)


async def run(cfg: Config, receiver: ReceiverProcess, secret: str, path: str) -> Drain | None:
    """Send ``cfg.deliveries`` tasks, then time one Celery worker process draining them
    (None when Redis is not reachable)."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisConnectionError, OSError):
        await client.aclose()
        cfg.say(f"  Redis is not reachable at {REDIS_URL}: the Celery peer is skipped")
        return None
    n = cfg.deliveries
    try:
        await _remove_own_keys(client)
        await asyncio.to_thread(send, receiver.url(path), n, body().decode())
        env = child_env({"BENCH_REDIS_URL": REDIS_URL, "BENCH_PEERS_SECRET": secret})
        args = ["--concurrency", str(cfg.concurrency), "--max-seconds", str(bound_s(n) + 120)]
        child = PeerChild("bench.peers.celery_peer", args, env, cfg.log)

        async def settled() -> bool:
            """Every task acknowledged: none queued, none reserved and unacknowledged."""
            return await client.llen(QUEUE) == 0 and await client.hlen("unacked") == 0

        async with child:
            await child.start()
            return await timed_drain(
                receiver, child, expected=n, prefix=path, settled=settled, within=bound_s(n)
            )
    finally:
        await _remove_own_keys(client)
        await client.aclose()


async def _remove_own_keys(client: Any) -> None:
    """Delete the keys this scenario's queue and transport make, and nothing else."""
    for pattern in OWN_KEYS:
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.delete(*keys)


# -- the worker process ----------------------------------------------------------------------------


def _serve_commands(max_seconds: float) -> None:
    """In the ``worker_ready`` signal, before the worker consumes anything: say READY and wait
    for ``go``; then watch stdin for ``stop`` in a thread and report the worker's CPU."""
    timer = threading.Timer(max_seconds, lambda: os.kill(os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
    _say("READY")
    if sys.stdin.readline().strip() != "go":
        _say(orjson.dumps({"sent": 0, **proc_status_kb()}).decode())
        os._exit(0)
    began = time.time()
    cpu_began = time.process_time()

    def watch() -> None:
        sys.stdin.readline()  # "stop", or the end of stdin
        cpu = time.process_time() - cpu_began
        report = {"started": began, "stopped": time.time(), "cpu_s": cpu, **proc_status_kb()}
        _say(orjson.dumps(report).decode())
        os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown

    threading.Thread(target=watch, daemon=True).start()


def worker_argv(concurrency: int) -> list[str]:
    return [
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        f"--queues={QUEUE}",
        f"--hostname=bench-peers-{os.getpid()}@%h",
        "--loglevel=WARNING",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)

    def on_ready(**_kwargs: Any) -> None:
        _serve_commands(args.max_seconds)

    worker_ready.connect(on_ready, weak=False)
    app.worker_main(worker_argv(args.concurrency))


if __name__ == "__main__":
    main()
