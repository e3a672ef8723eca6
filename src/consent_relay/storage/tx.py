"""``Tx``: every query the service runs, inside one open transaction.

Methods are short and explicit; each reads or writes one kind of row. ``lock=True`` asks
PostgreSQL for ``FOR UPDATE`` (SQLite's write transactions are already exclusive).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from consent_relay.domain.users import FoldItem
from consent_relay.storage import codec, dialect, mapping, webhook_versions
from consent_relay.storage.records import (
    ApiKey,
    DatabaseSession,
    EventRecord,
    Organization,
    UserRecord,
    WebhookRecord,
)
from consent_relay.storage.tables import (
    api_keys,
    attempts,
    deliveries,
    delivery_queues,
    events,
    messages,
    organizations,
    profile_changes,
    users,
    webhooks,
)


class Tx:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.driver: Any = None  # the asyncpg connection, once storage.driver asked for it

    def upsert(self, table: Any) -> Any:
        """INSERT ... ON CONFLICT, in the dialect's own construct."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def ping(self) -> None:
        await self.conn.execute(text("SELECT 1"))

    # -- organizations and API keys ---------------------------------------------------------

    async def insert_organization(self, org: Organization) -> bool:
        stmt = (
            self.upsert(organizations)
            .values(id=org.id, name=org.name, created_at=org.created_at)
            .on_conflict_do_nothing()
        )
        result = await self.conn.execute(stmt)
        return bool(result.rowcount)

    async def get_organization(self, org_id: str) -> Organization | None:
        row = (
            await self.conn.execute(select(organizations).where(organizations.c.id == org_id))
        ).first()
        return Organization(row.id, row.name, row.created_at) if row else None

    async def list_organizations(self) -> list[Organization]:
        rows = await self.conn.execute(select(organizations).order_by(organizations.c.id))
        return [Organization(row.id, row.name, row.created_at) for row in rows]

    async def insert_api_key(self, key: ApiKey, key_hash: str) -> None:
        await self.conn.execute(
            insert(api_keys).values(
                id=key.id,
                organization_id=key.organization_id,
                key_hash=key_hash,
                prefix=key.prefix,
                name=key.name,
                created_at=key.created_at,
            )
        )

    async def organization_for_key(self, key_hash: str) -> str | None:
        row = (
            await self.conn.execute(
                select(api_keys.c.organization_id).where(
                    api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
                )
            )
        ).first()
        return str(row.organization_id) if row else None

    async def list_api_keys(self, org_id: str) -> list[ApiKey]:
        rows = await self.conn.execute(
            select(api_keys).where(api_keys.c.organization_id == org_id).order_by(api_keys.c.id)
        )
        return [
            ApiKey(r.id, r.organization_id, r.prefix, r.name, r.created_at, r.revoked_at)
            for r in rows
        ]

    async def revoke_api_key(self, key_id: str, at: str) -> bool:
        result = await self.conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return bool(result.rowcount)

    # -- users ------------------------------------------------------------------------------

    async def _one_user(self, stmt: Select[Any], lock: bool) -> UserRecord | None:
        if lock and self.dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return mapping.user(row) if row else None

    async def get_user(self, org_id: str, user_id: str, *, lock: bool = False) -> UserRecord | None:
        stmt = select(users).where(users.c.organization_id == org_id, users.c.id == user_id)
        return await self._one_user(stmt, lock)

    async def get_user_by_ouid(
        self, org_id: str, organization_user_id: str, *, lock: bool = False
    ) -> UserRecord | None:
        stmt = select(users).where(
            users.c.organization_id == org_id,
            users.c.organization_user_id == organization_user_id,
        )
        return await self._one_user(stmt, lock)

    async def insert_user(self, user: UserRecord) -> bool:
        """Insert unless the id or organization_user_id is taken (then False, no error)."""
        stmt = self.upsert(users).values(**mapping.user_values(user)).on_conflict_do_nothing()
        result = await self.conn.execute(stmt)
        return bool(result.rowcount)

    async def update_user(self, user: UserRecord) -> None:
        await self.conn.execute(
            update(users)
            .where(users.c.organization_id == user.organization_id, users.c.id == user.id)
            .values(**mapping.user_values(user))
        )

    async def delete_user(self, org_id: str, user_id: str) -> None:
        where_user = (("organization_id", org_id), ("user_id", user_id))
        for table in (events, profile_changes):
            await self.conn.execute(
                delete(table).where(*(table.c[name] == value for name, value in where_user))
            )
        await self.conn.execute(
            delete(users).where(users.c.organization_id == org_id, users.c.id == user_id)
        )

    async def list_users(
        self, org_id: str, *, organization_user_id: str | None, after_pk: int, limit: int
    ) -> list[UserRecord]:
        stmt = select(users).where(users.c.organization_id == org_id, users.c.pk > after_pk)
        if organization_user_id is not None:
            stmt = stmt.where(users.c.organization_user_id == organization_user_id)
        rows = await self.conn.execute(stmt.order_by(users.c.pk).limit(limit))
        return [mapping.user(row) for row in rows]

    # -- events and profile changes ---------------------------------------------------------

    async def insert_event(self, event: EventRecord) -> bool:
        """Insert unless the id exists in the organization (then False)."""
        stmt = self.upsert(events).values(**mapping.event_values(event)).on_conflict_do_nothing()
        return bool((await self.conn.execute(stmt)).rowcount)

    async def get_event(self, org_id: str, event_id: str) -> EventRecord | None:
        row = (
            await self.conn.execute(
                select(events).where(events.c.organization_id == org_id, events.c.id == event_id)
            )
        ).first()
        return mapping.event(row) if row else None

    async def update_event(self, event: EventRecord) -> None:
        await self.conn.execute(
            update(events)
            .where(events.c.organization_id == event.organization_id, events.c.id == event.id)
            .values(**mapping.event_values(event))
        )

    async def delete_event(self, org_id: str, event_id: str) -> None:
        await self.conn.execute(
            delete(events).where(events.c.organization_id == org_id, events.c.id == event_id)
        )

    async def list_events(
        self,
        org_id: str,
        *,
        user_id: str | None,
        status: str | None,
        after_pk: int,
        limit: int,
    ) -> list[EventRecord]:
        stmt = select(events).where(events.c.organization_id == org_id, events.c.pk > after_pk)
        if user_id is not None:
            stmt = stmt.where(events.c.user_id == user_id)
        if status is not None:
            stmt = stmt.where(events.c.status == status)
        rows = await self.conn.execute(stmt.order_by(events.c.pk).limit(limit))
        return [mapping.event(row) for row in rows]

    async def insert_profile_change(
        self, org_id: str, user_id: str, at: str, seq: int, patch: dict[str, Any]
    ) -> None:
        await self.conn.execute(
            insert(profile_changes).values(
                organization_id=org_id, user_id=user_id, at=at, seq=seq, patch=codec.dumps(patch)
            )
        )

    async def fold_items(self, org_id: str, user_id: str) -> list[FoldItem]:
        """Everything the user's state is folded from: confirmed events and profile patches."""
        items: list[FoldItem] = []
        event_rows = await self.conn.execute(
            select(
                events.c.confirmed_at, events.c.seq, events.c.regulation, events.c.document
            ).where(
                events.c.organization_id == org_id,
                events.c.user_id == user_id,
                events.c.confirmed_at.is_not(None),
            )
        )
        for row in event_rows:
            document = codec.loads(row.document)
            items.append(
                FoldItem(
                    at=row.confirmed_at,
                    seq=row.seq,
                    user=document.get("user") or {},
                    regulation=row.regulation,
                    consents=document.get("consents") or {},
                )
            )
        patch_rows = await self.conn.execute(
            select(profile_changes.c.at, profile_changes.c.seq, profile_changes.c.patch).where(
                profile_changes.c.organization_id == org_id, profile_changes.c.user_id == user_id
            )
        )
        for patch in patch_rows:
            items.append(
                FoldItem(at=patch.at, seq=patch.seq, user=codec.loads(patch.patch), is_patch=True)
            )
        return items

    # -- webhooks ---------------------------------------------------------------------------

    async def insert_webhook(self, hook: WebhookRecord) -> None:
        await self.conn.execute(insert(webhooks).values(**mapping.webhook_values(hook)))
        await webhook_versions.bump(self, hook.organization_id)

    async def update_webhook(self, hook: WebhookRecord) -> None:
        await self.conn.execute(
            update(webhooks).where(webhooks.c.id == hook.id).values(**mapping.webhook_values(hook))
        )
        await webhook_versions.bump(self, hook.organization_id)

    async def get_webhook(self, org_id: str | None, webhook_id: str) -> WebhookRecord | None:
        stmt = select(webhooks).where(webhooks.c.id == webhook_id)
        if org_id is not None:
            stmt = stmt.where(webhooks.c.organization_id == org_id)
        row = (await self.conn.execute(stmt)).first()
        return mapping.webhook(row) if row else None

    async def list_webhooks(
        self, org_id: str, *, after_pk: int = 0, limit: int = 10_000
    ) -> list[WebhookRecord]:
        rows = await self.conn.execute(
            select(webhooks)
            .where(webhooks.c.organization_id == org_id, webhooks.c.pk > after_pk)
            .order_by(webhooks.c.pk)
            .limit(limit)
        )
        return [mapping.webhook(row) for row in rows]

    async def list_all_webhooks(self) -> list[WebhookRecord]:
        rows = await self.conn.execute(select(webhooks).order_by(webhooks.c.pk))
        return [mapping.webhook(row) for row in rows]

    async def webhooks_by_id(self, webhook_ids: Collection[str]) -> list[WebhookRecord]:
        """Those of these webhooks that exist, in creation order (a worker's cache reads the
        webhooks it delivers to, not every one: ``delivery.requests.WebhookCache``)."""
        return await self._webhooks_where(webhooks.c.id, webhook_ids)

    async def webhooks_of_organizations(self, org_ids: Collection[str]) -> list[WebhookRecord]:
        """The webhooks of these organizations, in creation order (the broken-webhook gauge
        reads those of the organizations whose webhooks changed: ``metrics.BrokenWebhooks``)."""
        return await self._webhooks_where(webhooks.c.organization_id, org_ids)

    async def _webhooks_where(self, column: Any, values: Collection[str]) -> list[WebhookRecord]:
        """The webhooks whose ``column`` is one of ``values``, in creation order. The values
        travel as one JSON array, as every batch of ids does (``dialect.strings``)."""
        wanted = text(dialect.strings(self.dialect, "ids")).bindparams(
            ids=codec.dumps(sorted(values))
        )
        rows = await self.conn.execute(
            select(webhooks).where(column.in_(wanted)).order_by(webhooks.c.pk)
        )
        return [mapping.webhook(row) for row in rows]

    async def delete_webhook(self, org_id: str, webhook_id: str) -> None:
        """The webhook with its queued deliveries, dead letters and their attempts."""
        owned = select(deliveries.c.id).where(deliveries.c.webhook_id == webhook_id)
        await self.conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(owned)))
        await self.conn.execute(delete(deliveries).where(deliveries.c.webhook_id == webhook_id))
        await self.conn.execute(
            delete(delivery_queues).where(delivery_queues.c.webhook_id == webhook_id)
        )
        await self.conn.execute(
            delete(webhooks).where(
                webhooks.c.organization_id == org_id, webhooks.c.id == webhook_id
            )
        )
        await webhook_versions.bump(self, org_id)

    # -- secret key rotation (PostgreSQL) ----------------------------------------------------

    async def lock_webhooks_against_writes(self) -> None:
        """Until this transaction ends, webhooks can be read but not written (PostgreSQL;
        SQLite's write transactions are exclusive already)."""
        if self.dialect == "postgresql":
            await self.conn.execute(text("LOCK TABLE webhooks IN EXCLUSIVE MODE"))

    async def other_sessions(self) -> list[DatabaseSession]:
        """Every other client session on this PostgreSQL database, oldest first ([] on
        SQLite, whose users are found by ``key_users``)."""
        if self.dialect != "postgresql":
            return []
        rows = await self.conn.execute(
            text(
                "SELECT pid, application_name, host(client_addr) AS client,"
                " to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                " AS since"
                " FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
                " ORDER BY backend_start, pid"
            )
        )
        return [
            DatabaseSession(row.pid, row.application_name or "", row.client, row.since or "")
            for row in rows
        ]

    async def count_rows(self, table_name: str, org_id: str | None = None) -> int:
        """For tests and health: how many rows a table holds (optionally per organization)."""
        table = {t.name: t for t in (messages, deliveries, events, users, webhooks)}[table_name]
        stmt = select(func.count()).select_from(table)
        if org_id is not None:
            stmt = stmt.where(and_(table.c.organization_id == org_id))
        return int((await self.conn.execute(stmt)).scalar_one())
