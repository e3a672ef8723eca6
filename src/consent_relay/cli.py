"""The ``consent-relay`` command (typer + rich)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from consent_relay import crypto, errors
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs
from consent_relay.services.context import Context
from consent_relay.settings import Settings

app = typer.Typer(
    help="Consent Relay: consent events API with reliable, signed, ordered webhooks.",
    no_args_is_help=True,
)
orgs_app = typer.Typer(help="Organizations and their API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of an organization.", no_args_is_help=True)
app.add_typer(orgs_app, name="orgs")
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _run(work: Callable[[Context], Awaitable[T]]) -> T:
    """Run one use case against the configured database, migrated first."""
    from consent_relay.api.app import build_context

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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (CONSENT_RELAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (CONSENT_RELAY_PORT).")] = None,
) -> None:
    """Run the API (and the delivery workers) in one process."""
    import uvicorn

    from consent_relay.api.app import create_app

    settings = Settings()
    token, generated = crypto.admin_token(settings)
    if generated:
        console.print(
            f"[bold]Admin token[/bold] (saved in {settings.data_dir}/admin.token): {token}"
        )
    uvicorn.run(
        create_app(settings, workers=True),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        loop="uvloop",
        http="httptools",
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Requests in flight at once (CONSENT_RELAY_WORKER_CONCURRENCY)."),
    ] = None,
) -> None:
    """Run delivery workers only. Run as many as you like against one PostgreSQL."""
    import signal

    from consent_relay.api.app import build_context
    from consent_relay.delivery import runner

    async def main() -> None:
        ctx = build_context(Settings())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await ctx.store.migrate()
            console.print("worker running; Ctrl-C stops it gracefully")
            await runner.run(ctx, stop, concurrency=concurrency)
        finally:
            await ctx.store.close()

    try:
        import uvloop

        uvloop.run(main())
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


@app.command("generate-key")
def generate_key() -> None:
    """Print a new key for CONSENT_RELAY_SECRET_KEY."""
    console.print(crypto.new_key())


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


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke an API key: it stops working at once."""
    _run(lambda ctx: orgs.revoke_key(ctx, key_id))
    console.print(f"revoked {key_id}")


if __name__ == "__main__":  # pragma: no cover
    app()
