"""The API in its own uvicorn process, as ``consent-relay serve`` runs it (uvloop, httptools),
with the in-process delivery workers switched on or off (``--workers`` / ``--no-workers``).

``serve`` always runs the workers; the ingest benchmark measures the API alone, so it starts
this instead. :class:`ApiServer` starts either this or the real ``consent-relay serve`` (with
one worker process: the latency row measures what it always did), or any ``command``, e.g.
:func:`cli_command` ``("api", "--processes", "2")``; its CPU is summed over the process and
its children (:meth:`ApiServer.cpu_s`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import aiohttp


def cli_command(*args: str) -> list[str]:
    """``consent-relay <args>``: the script beside this interpreter, else the one on PATH."""
    script = Path(sys.executable).parent / "consent-relay"
    return [
        str(script) if script.exists() else shutil.which("consent-relay") or "consent-relay",
        *args,
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args(argv)
    import uvicorn

    from consent_relay.api.app import create_app
    from consent_relay.settings import Settings

    settings = Settings()
    uvicorn.run(
        create_app(settings, workers=args.workers, own_process=True),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop="uvloop",
        http="httptools",
    )


class ApiServer:
    """One API process on 127.0.0.1:``port``; ``cli=True`` runs ``consent-relay serve``."""

    def __init__(
        self,
        env: Mapping[str, str],
        port: int,
        log: Path,
        *,
        workers: bool,
        cli: bool = False,
        command: list[str] | None = None,
    ) -> None:
        self.env = dict(env)
        self.port = port
        self.log = log
        self.workers = workers
        self.cli = cli
        self.proc: asyncio.subprocess.Process | None = None
        self.command: list[str] = command or []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float:
        """CPU seconds used so far by the API process and every process it started (its
        API processes under ``api --processes N``); compare two readings."""
        from bench import db

        return sum(db.proc_cpu_s(pid) for pid in [self.pid, *db.descendants(self.pid)])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ApiServer:
        script = Path(sys.executable).parent / "consent-relay"
        if self.command:
            pass
        elif self.cli and self.workers and (script.exists() or shutil.which("consent-relay")):
            self.command = cli_command("serve", "--worker-processes", "1")
        else:
            flag = "--workers" if self.workers else "--no-workers"
            self.command = [sys.executable, "-m", "bench.apiproc", flag]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
            )
        await self._wait_ready(60.0)
        return self

    async def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise RuntimeError(f"the API process exited; see {self.log}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.base + "/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the API did not become ready in {within:.0f} s; see {self.log}")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


if __name__ == "__main__":
    main()
