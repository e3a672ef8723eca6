"""Running the service: ``serve`` (API and workers), ``api``, ``worker``, ``migrate``, ``demo``."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from consent_relay import crypto, errors, logs
from consent_relay.cli.common import (
    console,
    err,
    print_admin_token,
    process_count,
    run_use_case,
)
from consent_relay.runtime import Context
from consent_relay.settings import Settings

Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        min=1,
        help="API processes sharing the port (PostgreSQL only: SQLite runs one).",
        show_default=False,
    ),
]


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (CONSENT_RELAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (CONSENT_RELAY_PORT).")] = None,
    worker_processes: Annotated[
        int | None,
        typer.Option(
            "--worker-processes",
            min=1,
            help="Delivery worker processes: the API's own and N-1 more "
            "(default: one per core on PostgreSQL; SQLite runs one).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the API and the delivery workers: in one process, and on PostgreSQL also in
    worker processes of its own (one worker per core in all, by default)."""
    import signal
    import threading

    import uvicorn

    from consent_relay import processes
    from consent_relay.api.app import create_app

    settings = Settings()
    logs.configure(settings)
    count = process_count(worker_processes, settings, "worker", None)
    print_admin_token(settings)
    application = create_app(  # the secret key exists now
        settings, workers=True, own_process=True, worker_processes=count
    )
    supervisor = None
    watcher = None
    if count > 1:
        supervisor = processes.Supervisor(
            processes.worker_command(None, None, count), count - 1, grace=settings.lease_ms / 1000
        )
        supervisor.start()

        def watch(supervisor: processes.Supervisor = supervisor) -> None:
            supervisor.wait()
            if supervisor.failed:  # stop the API too: uvicorn shuts down on SIGTERM
                os.kill(os.getpid(), signal.SIGTERM)

        watcher = threading.Thread(target=watch, name="worker-processes", daemon=True)
        watcher.start()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it
    # found: make that one a no-op so a clean shutdown exits 0, not 143.
    signal.signal(signal.SIGTERM, lambda *_: None)
    code = 0
    try:
        uvicorn.run(
            application,
            host=host or settings.host,
            port=port or settings.port,
            log_level=settings.log_level.lower(),
            log_config=None,
            loop="uvloop",
            http="httptools",
        )
    finally:
        if supervisor is not None and watcher is not None:
            supervisor.request_stop()
            watcher.join()
            code = supervisor.stop()
    if supervisor is not None and supervisor.failed:
        err.print(f"[red]error:[/red] {supervisor.failed}", highlight=False)
    if code:
        raise typer.Exit(code)


def api(
    host: Annotated[str | None, typer.Option(help="Listen address (CONSENT_RELAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (CONSENT_RELAY_PORT).")] = None,
    processes_: Processes = None,
) -> None:
    """Run the API only, without delivery workers (run `worker` beside it). With
    --processes N (PostgreSQL), N API processes share the port (uvicorn's supervisor)."""
    import signal

    import uvicorn

    from consent_relay.api.app import create_app

    settings = Settings()
    logs.configure(settings)
    count = process_count(processes_, settings, "API", 1)
    print_admin_token(settings)
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "log_level": settings.log_level.lower(),
        "log_config": None,
        "loop": "uvloop",
        "http": "httptools",
    }
    signal.signal(signal.SIGTERM, lambda *_: None)  # as in serve: a clean stop exits 0
    if count == 1:
        uvicorn.run(create_app(settings, own_process=True), **options)
        return
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    crypto.secret_box(settings)  # a generated key is written once, before the processes start
    # Each process imports the factory and builds its app from the same environment. This is
    # uvicorn.run(..., workers=count), but it exits 0 when a process fails to start (e.g. no
    # database within STARTUP_PATIENCE): here that is exit status 3, as with one process.
    config = uvicorn.Config(
        "consent_relay.api.app:create_app_from_env", factory=True, workers=count, **options
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        err.print("[red]error:[/red] an API process failed to start (see the log above)")
        raise typer.Exit(STARTUP_FAILURE)


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Requests in flight at once (CONSENT_RELAY_WORKER_CONCURRENCY)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on this port (process i of N: port + i)."),
    ] = None,
    processes_: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            help="Worker processes (default: one per core on PostgreSQL; SQLite runs one).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run delivery workers only. Run as many as you like against one PostgreSQL."""
    from consent_relay import processes, runner

    settings = Settings()
    logs.configure(settings)
    count = process_count(processes_, settings, "worker", None)
    if count > 1:
        crypto.secret_box(settings)  # a generated key is written once, before the children
        supervisor = processes.Supervisor(
            processes.worker_command(concurrency, metrics_port, count),
            count,
            grace=settings.lease_ms / 1000,
        )
        supervisor.forward_signals()
        supervisor.start()
        if supervisor.wait_ready():
            console.print(f"worker running ({count} processes); Ctrl-C stops it gracefully")
            supervisor.wait()
        code = supervisor.stop()
        if supervisor.failed:
            err.print(f"[red]error:[/red] {supervisor.failed}", highlight=False)
        raise typer.Exit(code)

    from prometheus_client import start_http_server

    from consent_relay import metrics

    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.host, registry=metrics.REGISTRY)

    def ready() -> None:
        console.print("worker running; Ctrl-C stops it gracefully")

    try:
        import uvloop

        uvloop.run(runner.run_process(settings, concurrency=concurrency, on_ready=ready))
    except errors.ConsentRelayError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from exc


def migrate() -> None:
    """Create or upgrade the database schema (CONSENT_RELAY_DATABASE_URL)."""

    async def work(ctx: Context) -> None:
        return None

    run_use_case(work)
    console.print("[green]database is up to date[/green]")


def demo(
    speed: Annotated[float, typer.Option(help="Play the story faster (2 = twice as fast).")] = 1.0,
    keep: Annotated[
        bool, typer.Option(help="Keep the temporary database folder and print its path.")
    ] = False,
) -> None:
    """Try it in one minute: a local service, receiver and OAuth server on a temporary
    SQLite database, a short consent story, and each webhook shown live as it arrives."""
    from consent_relay import demo as story

    raise typer.Exit(story.main(speed=speed, keep=keep))
