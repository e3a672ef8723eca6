"""Users, many at a time: the set-based statements of the write path (one round trip each,
whatever the batch size). Single-user reads and writes are on ``Tx``."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text

from consent_relay.storage import codec, dialect, mapping
from consent_relay.storage.records import UserRecord
from consent_relay.storage.tx import Tx

COLUMNS = (
    ("organization_id", "text"),
    ("id", "text"),
    ("identity_organization_user_id", "text"),
    ("organization_user_id", "text"),
    ("metadata", "text"),
    ("country", "text"),
    ("last_seen_country", "text"),
    ("consents", "text"),
    ("version", "int"),
    ("created_at", "text"),
    ("updated_at", "text"),
    ("seq_counter", "int"),
    ("applied_at", "text"),
    ("applied_seq", "int"),
)


async def lock_many(
    tx: Tx, org_id: str, user_ids: Sequence[str], ouids: Sequence[str]
) -> list[UserRecord]:
    """The organization's users named by id or by organization_user_id, locked for the rest
    of the transaction (in id order, the same for every writer)."""
    if not user_ids and not ouids:
        return []
    rows = await tx.conn.execute(
        text(LOCK_SQL[tx.dialect]),
        {"org": org_id, "ids": codec.dumps(list(user_ids)), "ouids": codec.dumps(list(ouids))},
    )
    return [mapping.user(row) for row in rows]


async def insert_many(tx: Tx, new_users: Sequence[UserRecord]) -> set[tuple[str, str]]:
    """Insert users; returns the (organization, id) of those inserted (a user whose id or
    organization_user_id was taken meanwhile is left out, not an error)."""
    if not new_users:
        return set()
    rows = await tx.conn.execute(text(INSERT_SQL[tx.dialect]), {"rows": rows_json(new_users)})
    return {(row.organization_id, row.id) for row in rows}


async def update_many(tx: Tx, changed: Sequence[UserRecord]) -> None:
    """Write the new state of existing users."""
    if not changed:
        return
    await tx.conn.execute(text(UPDATE_SQL[tx.dialect]), {"rows": rows_json(changed)})


def rows_json(records: Sequence[UserRecord]) -> str:
    """Users as the JSON array the set-based statements take (one row an object)."""
    return codec.dumps([_values(user) for user in records])


def _values(user: UserRecord) -> dict[str, object]:
    # Nested JSON travels as text inside the JSON array: the columns hold JSON text.
    values = mapping.user_values(user)
    return {name: values[name] for name, _ in COLUMNS}


def _lock_sql(name: str) -> str:
    if name == "sqlite":
        # Each name looked up in its unique index, the JSON list driving the join (CROSS
        # JOIN keeps that order): with ``id IN (...) OR organization_user_id IN (...)``
        # SQLite walked every user of the organization (tests/integration/test_write_batch).
        # No FOR UPDATE: SQLite's write transactions are already exclusive.
        return """
            SELECT users.* FROM json_each(:ids) AS named CROSS JOIN users
            WHERE users.organization_id = :org AND users.id = named.value
            UNION
            SELECT users.* FROM json_each(:ouids) AS named CROSS JOIN users
            WHERE users.organization_id = :org AND users.organization_user_id = named.value
            ORDER BY id
        """
    return f"""
        SELECT * FROM users
        WHERE organization_id = :org
          AND (id IN ({dialect.strings(name, "ids")})
               OR organization_user_id IN ({dialect.strings(name, "ouids")}))
        ORDER BY id{dialect.for_update(name)}
    """


def _update_sql(name: str) -> str:
    sets = ", ".join(f"{column} = v.{column}" for column, _ in COLUMNS[2:])
    return f"""
        UPDATE users SET {sets}
        FROM {dialect.rows_source(name, COLUMNS)}
        WHERE users.organization_id = v.organization_id AND users.id = v.id
    """


# Statement texts per dialect (named parameters: SQLAlchemy's text() and sqlite3 both take
# them): lock_many, insert_many (new users' (organization_id, id) returned), update_many.
DIALECTS = ("postgresql", "sqlite")
LOCK_SQL = {name: _lock_sql(name) for name in DIALECTS}
INSERT_SQL = {
    name: dialect.insert_rows(
        name, "users", COLUMNS, "ON CONFLICT DO NOTHING RETURNING organization_id, id"
    )
    for name in DIALECTS
}
UPDATE_SQL = {name: _update_sql(name) for name in DIALECTS}
