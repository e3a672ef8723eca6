"""The ``consent-relay`` command (typer + rich)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from consent_relay import cli_privacy, crypto, errors, logs
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn, WebhookPatch
from consent_relay.services import deliveries, orgs, webhooks
from consent_relay.services.pagination import Page
from consent_relay.services.views import DeliveryOut, TestSentOut, WebhookOut
from consent_relay.settings import Settings

app = typer.Typer(
    help="Consent Relay: consent events API with reliable, signed, ordered webhooks.",
    no_args_is_help=True,
)
orgs_app = typer.Typer(help="Organizations and their API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of an organization.", no_args_is_help=True)
dead_app = typer.Typer(help="Dead letters: list them, replay them.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Deliveries and their attempts.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhooks: list, show, send a test.", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs")
app.add_typer(keys_app, name="keys")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(cli_privacy.ledger_app, name="ledger")
app.add_typer(cli_privacy.users_app, name="users")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _run(work: Callable[[Context], Awaitable[T]]) -> T:
    """Run one use case against the configured database, migrated first."""
    from consent_relay.runtime import build_context

    async def main() -> T:
        ctx = build_context(Settings())
        try:
            await ctx.store.migrate()
            return await work(ctx)
        finally:
            await ctx.store.close()

    try:
        return asyncio.run(main())
    except errors.ConsentRelayError as exc:
        err.print(f"[red]error:[/red] {exc.detail}")
        for field_error in exc.errors:
            err.print(f"  {field_error.field}: {field_error.message}")
        raise typer.Exit(1) from exc


Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        min=1,
        help="API processes sharing the port (PostgreSQL only: SQLite runs one).",
        show_default=False,
    ),
]


def _process_count(
    requested: int | None, settings: Settings, what: str, default: int | None
) -> int:
    """How many processes to run; a refusal (N > 1 on SQLite) says why and exits 2."""
    from rich.markup import escape as plain

    from consent_relay import processes

    try:
        return processes.process_count(
            requested, sqlite=settings.is_sqlite, what=what, default=default
        )
    except processes.ProcessCountRefused as exc:
        err.print(f"[red]error:[/red] {plain(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc


def _print_admin_token(settings: Settings) -> None:
    token, generated = crypto.admin_token(settings)
    if generated:
        console.print(
            f"[bold]Admin token[/bold] (saved in {settings.data_dir}/admin.token): {token}"
        )


@app.command()
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
    count = _process_count(worker_processes, settings, "worker", None)
    _print_admin_token(settings)
    application = create_app(settings, workers=True)  # the secret key exists from here on
    supervisor = None
    watcher = None
    if count > 1:
        supervisor = processes.Supervisor(
            processes.worker_command(None, None), count - 1, grace=settings.lease_ms / 1000
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


@app.command()
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
    count = _process_count(processes_, settings, "API", 1)
    _print_admin_token(settings)
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
        uvicorn.run(create_app(settings), **options)
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


@app.command()
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
    count = _process_count(processes_, settings, "worker", None)
    if count > 1:
        crypto.secret_box(settings)  # a generated key is written once, before the children
        supervisor = processes.Supervisor(
            processes.worker_command(concurrency, metrics_port),
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


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (CONSENT_RELAY_DATABASE_URL)."""

    async def work(ctx: Context) -> None:
        return None

    _run(work)
    console.print("[green]database is up to date[/green]")


@app.command()
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


@app.command("generate-key")
def generate_key() -> None:
    """Print a new key for CONSENT_RELAY_SECRET_KEY."""
    console.print(crypto.new_key())


@app.command("rotate-secret-key")
def rotate_secret_key(
    new_key: Annotated[
        str | None, typer.Option(help="The new key (default: a generated one).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rotate even while other processes use the database (then restart them "
            "with the new key).",
        ),
    ] = False,
) -> None:
    """Re-encrypt every stored secret under a new key. With the key in DATA_DIR/secret.key
    the file is replaced; with CONSENT_RELAY_SECRET_KEY set, put the printed key there.
    Stop every serve and worker first: it refuses while one uses the database."""
    from consent_relay import key_users
    from consent_relay.services import secret_keys
    from consent_relay.storage.store import Store

    settings = Settings()
    key_file = settings.data_dir / "secret.key"
    old_key = settings.secret_key or (key_file.read_text().strip() if key_file.exists() else "")
    if not old_key:
        err.print("[red]error:[/red] no secret key yet: nothing is encrypted, nothing to rotate")
        raise typer.Exit(1)
    key = new_key or crypto.new_key()
    crypto.SecretBox([key])  # refuse a malformed key before touching anything

    async def main() -> int:
        store = Store(settings.resolved_database_url, pool_size=1)
        try:
            await store.migrate()
            await store.engine.dispose()  # our own idle connection is not another session
            return await secret_keys.reencrypt(store, old_key, key, force=force)
        finally:
            await store.close()

    lock = key_users.lock_path(settings.resolved_database_url)
    with contextlib.ExitStack() as stack:
        if lock is not None:
            users = stack.enter_context(key_users.exclusive(lock, force=force))
            if users:
                _refused(secret_keys.refusal(users))
        staged = None if settings.secret_key else secret_keys.stage_key_file(key_file, key)
        try:
            count = asyncio.run(main())
        except errors.ConsentRelayError as exc:
            if staged is not None:
                staged.unlink()
            _refused(exc)
        if staged is not None:
            os.replace(staged, key_file)  # before the lock goes: starters read the new key
    if staged is None:
        console.print(f"re-encrypted {count} secrets. Set CONSENT_RELAY_SECRET_KEY={key}")
    else:
        console.print(f"re-encrypted {count} secrets; new key written to {key_file}")


def _refused(exc: errors.ConsentRelayError) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from exc


@orgs_app.command("create")
def orgs_create(
    org_id: Annotated[str, typer.Argument(help="Organization id: lowercase letters, digits, - _")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Create an organization and print its first API key (shown once)."""

    async def work(ctx: Context) -> dict[str, Any]:
        try:
            data = OrganizationIn(id=org_id, name=name)
        except ValueError as exc:
            raise errors.Unprocessable(f"invalid organization id {org_id!r}: {exc}") from exc
        return await orgs.create_organization(ctx, data)

    result = _run(work)
    console.print(f"organization [bold]{result['organization']['id']}[/bold] created")
    console.print(f"API key (shown once): {result['api_key']}")


@orgs_app.command("list")
def orgs_list() -> None:
    """List organizations."""
    rows = _run(orgs.list_organizations)
    table = Table("id", "name", "created_at")
    for row in rows:
        table.add_row(row["id"], row["name"], row["created_at"])
    console.print(table)


@keys_app.command("create")
def keys_create(
    org_id: Annotated[str, typer.Argument(help="Organization id.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create another API key for an organization (shown once)."""
    result = _run(lambda ctx: orgs.create_key(ctx, org_id, name))
    console.print(f"API key {result['id']} (shown once): {result['api_key']}")


@keys_app.command("list")
def keys_list(org_id: Annotated[str, typer.Argument(help="Organization id.")]) -> None:
    """List an organization's API keys (their prefixes; keys are stored hashed)."""
    rows = _run(lambda ctx: orgs.list_keys(ctx, org_id))
    table = Table("id", "prefix", "name", "created", "revoked")
    for row in rows:
        table.add_row(
            row["id"], row["prefix"], row["name"], row["created_at"], row["revoked_at"] or ""
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke an API key: it stops working at once."""
    _run(lambda ctx: orgs.revoke_key(ctx, key_id))
    console.print(f"revoked {key_id}")


WebhookId = Annotated[str, typer.Argument(help="The webhook's id (wh_...).")]


@dead_app.command("list")
def dead_letters_list(
    webhook_id: WebhookId,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
) -> None:
    """List a webhook's dead letters, oldest first."""

    async def work(ctx: Context) -> Page[DeliveryOut]:
        org = await deliveries.owner_of(ctx, webhook_id)
        return await deliveries.list_deliveries(ctx, org, webhook_id, status="dead", limit=limit)

    page = _run(work)
    table = Table("id", "type", "user", "attempts", "last outcome", "created", "replayed by")
    for row in page["data"]:
        table.add_row(
            row["id"],
            row["type"],
            row["user_id"],
            str(row["attempt_count"]),
            row["last_outcome"] or "",
            row["created_at"],
            row["replayed_by"] or "",
        )
    console.print(table)
    if page["next_cursor"]:
        console.print(f"(more: raise --limit, at most {1000})")


@dead_app.command("replay")
def dead_letters_replay(
    webhook_id: WebhookId,
    delivery_id: Annotated[
        list[str] | None, typer.Option("--id", help="Replay these dead letters (repeatable).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Created at or after (ISO-8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Created before (ISO-8601).")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="With --id: replay superseded ones too (an older consent state)."
        ),
    ] = False,
) -> None:
    """Send dead letters again (same webhook-id, fresh retries). Without --id, every dead
    letter not replayed yet (within --since/--until), but superseded ones."""

    if delivery_id and (since or until):
        err.print("[red]error:[/red] give either --id or --since/--until, not both")
        raise typer.Exit(2)

    async def work(ctx: Context) -> int:
        org = await deliveries.owner_of(ctx, webhook_id)
        total = len(delivery_id) if delivery_id else await deliveries.count_dead(ctx, webhook_id)
        done = 0
        with Progress(console=console) as progress:
            bar = progress.add_task("replaying", total=total)
            if delivery_id:
                for start in range(0, len(delivery_id), 500):
                    chunk = delivery_id[start : start + 500]
                    done += await deliveries.replay(
                        ctx, org, webhook_id, delivery_ids=chunk, force=force
                    )
                    progress.update(bar, completed=done)
            else:
                while True:
                    count = await deliveries.replay(
                        ctx, org, webhook_id, since=since, until=until, limit=500
                    )
                    if count == 0:
                        break
                    done += count
                    progress.update(bar, completed=done)
            progress.update(bar, total=done, completed=done)
        return done

    count = _run(work)
    console.print(f"replayed {count} dead letters; a running worker sends them now")


@webhooks_app.command("list")
def webhooks_list(org: Annotated[str, typer.Option(help="The organization's id.")]) -> None:
    """List an organization's webhooks."""
    page = _run(lambda ctx: webhooks.list_webhooks(ctx, org, limit=1000))
    table = Table("id", "url", "enabled", "event types", "regulations", "flatten", "OAuth")
    for hook in page["data"]:
        table.add_row(
            hook["id"],
            hook["url"],
            "yes" if hook["enabled"] else "no",
            ", ".join(hook["event_types"]) or "all",
            ", ".join(hook["regulations"]),
            "yes" if hook["flatten"] else "no",
            "yes" if hook["authentication"] else "no",
        )
    console.print(table)


@webhooks_app.command("show")
def webhooks_show(webhook_id: WebhookId) -> None:
    """Show a webhook's settings (never its secrets) and its queue."""

    async def work(ctx: Context) -> tuple[WebhookOut, int, int]:
        org = await deliveries.owner_of(ctx, webhook_id)
        hook = await webhooks.get_webhook(ctx, org, webhook_id)
        pending = await deliveries.list_deliveries(
            ctx, org, webhook_id, status="pending", limit=1000
        )
        return hook, len(pending["data"]), await deliveries.count_dead(ctx, webhook_id)

    hook, pending, dead = _run(work)
    console.print_json(data=hook)
    more = "+" if pending == 1000 else ""
    console.print(f"pending deliveries: {pending}{more}; dead letters not replayed: {dead}")


@webhooks_app.command("set")
def webhooks_set(
    webhook_id: WebhookId,
    rate_limit: Annotated[
        float | None,
        typer.Option(help="Requests per second at most, all workers together (0: no limit)."),
    ] = None,
    auto_replay: Annotated[
        bool | None,
        typer.Option(
            "--auto-replay/--no-auto-replay",
            help="Replay dead letters automatically once the receiver delivers again.",
        ),
    ] = None,
    enable: Annotated[
        bool, typer.Option("--enable", help="Enable it again (after a 410 Gone, say).")
    ] = False,
) -> None:
    """Change a webhook's flow settings: rate limit, automatic replay, enabled."""
    fields: dict[str, object] = {}
    if rate_limit is not None:
        fields["rate_limit"] = rate_limit or None
    if auto_replay is not None:
        fields["auto_replay"] = auto_replay
    if enable:
        fields["enabled"] = True
    if not fields:
        err.print("[red]error:[/red] give --rate-limit, --[no-]auto-replay or --enable")
        raise typer.Exit(2)
    try:
        patch = WebhookPatch.model_validate(fields)
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from exc

    async def work(ctx: Context) -> WebhookOut:
        org = await deliveries.owner_of(ctx, webhook_id)
        return await webhooks.update_webhook(ctx, org, webhook_id, patch)

    console.print_json(data=_run(work))


@webhooks_app.command("test")
def webhooks_test(
    webhook_id: WebhookId,
    event_type: Annotated[
        str, typer.Option("--type", help="The sample's event type, e.g. user.updated.")
    ] = "user.updated",
) -> None:
    """Queue a sample message to this webhook only; a running worker sends it."""
    if event_type not in EVENT_TYPES:
        err.print(f"[red]error:[/red] --type must be one of {', '.join(EVENT_TYPES)}")
        raise typer.Exit(2)

    async def work(ctx: Context) -> TestSentOut:
        org = await deliveries.owner_of(ctx, webhook_id)
        return await webhooks.send_test(ctx, org, webhook_id, event_type)

    queued = _run(work)
    console.print(
        f"queued {queued['type']} as delivery {queued['delivery_id']} "
        f"(webhook-id {queued['message_id']}); see it with: consent-relay deliveries show "
        f"{queued['delivery_id']} --org <org>"
    )


@deliveries_app.command("show")
def deliveries_show(
    delivery_id: Annotated[str, typer.Argument(help="The delivery's id (dlv_...).")],
    org: Annotated[str, typer.Option(help="The organization it belongs to.")],
) -> None:
    """Show a delivery with every attempt."""
    detail = _run(lambda ctx: deliveries.get_delivery(ctx, org, delivery_id))
    console.print(
        f"[bold]{detail['id']}[/bold] {detail['type']} to {detail['webhook_id']}: "
        f"{detail['status']} after {detail['attempt_count']} attempts"
    )
    table = Table("#", "started", "ms", "outcome", "status", "response")
    for attempt in detail["attempts"]:
        table.add_row(
            str(attempt["attempt_number"]),
            attempt["started_at"],
            str(attempt["duration_ms"]),
            attempt["outcome"],
            str(attempt["status_code"] or ""),
            (attempt["response_body"] or attempt["error"] or "")[:80],
        )
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
