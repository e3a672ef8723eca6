"""What every peer shares: its worker child, started from its own module, and the timed drain.

A peer's worker speaks the line protocol of ``bench.procs`` (``READY``; ``go`` and ``stop``
on stdin; one JSON line with ``cpu_s``, the worker process's CPU seconds from ``go`` to
``stop``, and its peak RSS), so :class:`bench.procs.Child` drives it; only the module it runs
differs. The drain is timed as the engine's is (``bench.scenarios.drain``): from ``go`` until
the receiver counted every delivery and the peer's own queue says every job is finished
(acknowledged, deleted), so a peer that sends fast but records late is not flattered.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from bench import db
from bench.procs import Child
from bench.receiver import ReceiverProcess
from bench.scenarios import Drain

JSON_HEADERS = {"Content-Type": "application/json"}


def bound_s(deliveries: int) -> float:
    """How long a drain may take: generous at 100 deliveries a second."""
    return 300.0 + deliveries / 100


def body() -> bytes:
    """The same 1 KB webhook body the bare client and the engine send."""
    return db.render_body("event.created", db.message_parameters(0, "user-0000000"))


class PeerChild(Child):
    """A :class:`Child` running ``python -m <module> <args>`` instead of ``bench.procs``."""

    def __init__(self, module: str, args: list[str], env: Mapping[str, str], log: Path) -> None:
        super().__init__(args, env, log)
        self.module = module

    async def start(self, within: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                self.module,
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=self.env,
            )
        line = await self._read_until(lambda text: text == "READY", within)
        if line != "READY":
            raise RuntimeError(f"peer {self.module} did not start ({line!r}); see {self.log}")


async def timed_drain(
    receiver: ReceiverProcess,
    child: Child,
    *,
    expected: int,
    prefix: str,
    settled: Callable[[], Awaitable[bool]],
    within: float = 600.0,
    poll: float = 0.02,
) -> Drain:
    """Start the (READY) peer worker and time it until ``expected`` requests reached the
    receiver under ``prefix`` and ``settled()`` is true (its queue holds no job left)."""
    await receiver.reset()
    began = time.time()
    child.send("go")
    arrived_at = await receiver.wait_for(expected, prefix, within=within, interval=poll)
    finished = arrived_at is not None
    done_at = arrived_at or time.time()
    if finished:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await settled():
                done_at = time.time()
                break
            await asyncio.sleep(poll)
        else:
            finished = False
    arrived = await receiver.count(prefix)
    child.send("stop")
    report = await child.finish()
    return Drain(expected, min(arrived, expected), done_at - began, finished, [report])
