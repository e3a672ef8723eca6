"""``consent-relay webhooks``, ``dead-letters`` and ``deliveries``: a webhook's settings, test
sends, its dead letters with replay, a delivery with its attempts."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import Progress
from rich.table import Table

from consent_relay.cli.common import (
    WebhookId,
    console,
    err,
    run_use_case,
)
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.runtime import Context
from consent_relay.schemas import WebhookPatch
from consent_relay.services import deliveries, webhooks
from consent_relay.services.pagination import Page
from consent_relay.services.views import DeliveryOut, TestSentOut, WebhookOut

dead_app = typer.Typer(help="Dead letters: list them, replay them.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Deliveries and their attempts.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhooks: list, show, send a test.", no_args_is_help=True)


@dead_app.command("list")
def dead_letters_list(
    webhook_id: WebhookId,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
) -> None:
    """List a webhook's dead letters, oldest first."""

    async def work(ctx: Context) -> Page[DeliveryOut]:
        org = await deliveries.owner_of(ctx, webhook_id)
        return await deliveries.list_deliveries(ctx, org, webhook_id, status="dead", limit=limit)

    page = run_use_case(work)
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

    count = run_use_case(work)
    console.print(f"replayed {count} dead letters; a running worker sends them now")


@webhooks_app.command("list")
def webhooks_list(org: Annotated[str, typer.Option(help="The organization's id.")]) -> None:
    """List an organization's webhooks."""
    page = run_use_case(lambda ctx: webhooks.list_webhooks(ctx, org, limit=1000))
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

    hook, pending, dead = run_use_case(work)
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

    console.print_json(data=run_use_case(work))


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

    queued = run_use_case(work)
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
    detail = run_use_case(lambda ctx: deliveries.get_delivery(ctx, org, delivery_id))
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
