"""The schema, as SQLAlchemy Core tables (the migrations create exactly this).

JSON documents are stored as text (encoded with orjson by the storage layer), identical on
SQLite and PostgreSQL. API timestamps are normalized ISO-8601 text (they sort as instants);
queue timestamps (``*_ms``) are integer milliseconds since the epoch.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy import Text as _Text
from sqlalchemy.dialects.postgresql import TEXT as _PG_TEXT

metadata = MetaData()

# Every text column compares byte by byte (PostgreSQL's ``COLLATE "C"``, SQLite's default
# ``BINARY``): one order on both databases, whatever the PostgreSQL database's locale, and
# B-tree comparisons by ``memcmp`` instead of the locale's ``strcoll`` (migration 0010: 8-14%
# of the server's CPU a delivery, issue 12). Identifiers, statuses and ISO-8601 timestamps are
# all it holds; no column is sorted for people to read.
Text = _Text().with_variant(_PG_TEXT(collation="C"), "postgresql")

# An autoincrementing integer key on both databases (SQLite needs plain INTEGER for rowid).
PK = BigInteger().with_variant(Integer(), "sqlite")

organizations = Table(
    "organizations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    # Bumped in the transaction of every change to the organization's webhooks (storage/tx.py),
    # so that a process's cached list is known current (services/webhook_cache.py; 0007).
    Column("webhooks_version", Integer, nullable=False, server_default="0"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("organization_id", Text, nullable=False, index=True),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("created_at", Text, nullable=False),
    Column("revoked_at", Text),
)

users = Table(
    "users",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("organization_id", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("identity_organization_user_id", Text),
    Column("organization_user_id", Text),
    Column("metadata", Text, nullable=False),
    Column("country", Text),
    Column("last_seen_country", Text),
    Column("consents", Text, nullable=False),  # {regulation: consents}
    Column("version", Integer, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("seq_counter", Integer, nullable=False),  # last acknowledgement number given
    Column("applied_at", Text, nullable=False),  # order key of the last folded item
    Column("applied_seq", Integer, nullable=False),
    UniqueConstraint("organization_id", "id", name="uq_users_org_id"),
    UniqueConstraint("organization_id", "organization_user_id", name="uq_users_org_ouid"),
)

events = Table(
    "events",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("organization_id", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("regulation", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("confirmed_at", Text),  # null while pending
    Column("seq", Integer),  # acknowledgement number at confirmation, within the user
    Column("document", Text, nullable=False),  # the event as the API returns it
    UniqueConstraint("organization_id", "id", name="uq_events_org_id"),
    Index("ix_events_org_user", "organization_id", "user_id", "pk"),
)

profile_changes = Table(
    "profile_changes",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("organization_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("at", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("patch", Text, nullable=False),
    Index("ix_profile_changes_user", "organization_id", "user_id"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("organization_id", Text, nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("event_types", Text, nullable=False),
    Column("regulations", Text, nullable=False),
    Column("flatten", Boolean, nullable=False),
    Column("headers", Text, nullable=False),
    Column("authentication", Text),  # settings without the secret
    Column("auth_secret", Text),  # encrypted client secret
    Column("signing_secret", Text, nullable=False),  # encrypted
    Column("previous_signing_secret", Text),  # encrypted, signs until it expires
    Column("previous_secret_expires_at", Text),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("rate_limit", Float),  # requests per second; null = none (migration 0006)
    Column("auto_replay", Boolean, nullable=False, server_default=true()),
    Column("disabled_reason", Text),  # why we disabled it (a 410 Gone); null otherwise
    # The claim leaves rate-limited webhooks to ratelimit.take: found through this index.
    Index(
        "ix_webhooks_rate_limited",
        "id",
        postgresql_where=text("rate_limit IS NOT NULL"),
        sqlite_where=text("rate_limit IS NOT NULL"),
    ),
)

# Per-webhook flow state (migration 0006), read and written by the claim: a token bucket for
# ``webhooks.rate_limit`` and a pause a receiver asked for with Retry-After. Kept apart from
# the webhook row so that claims do not churn it.
webhook_flow = Table(
    "webhook_flow",
    metadata,
    Column("webhook_id", Text, primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("refilled_ms", BigInteger, nullable=False),
    Column("paused_until_ms", BigInteger),
    Column("paused_reason", Text),
    Index("ix_webhook_flow_paused", "paused_until_ms"),
)

messages = Table(
    "messages",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("organization_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("regulation", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("parameters", Text),  # null once purged (migration 0005)
    Column("created_at", Text, nullable=False),
    Column("purged_at", Text),
    Column("purge_reason", Text),  # erased | expired
    Index(
        "ix_messages_unpurged",
        "pk",
        postgresql_where=text("purged_at IS NULL"),
        sqlite_where=text("purged_at IS NULL"),
    ),
    Index(
        "ix_messages_user_unpurged",
        "organization_id",
        "user_id",
        postgresql_where=text("purged_at IS NULL"),
        sqlite_where=text("purged_at IS NULL"),
    ),
)

# One row per (webhook, user): hands out sequence numbers and counts what is pending, so
# that exactly one delivery per queue (its head) is ever due. Writers lock this row.
delivery_queues = Table(
    "delivery_queues",
    metadata,
    Column("webhook_id", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("pending", Integer, nullable=False),
    # The queue's head is its delivery of seq ``last_seq - pending + 1`` (sequence numbers
    # are contiguous, and deliveries leave a queue from its head only). Its clock and lease
    # live here, on this narrow row, not on the wide delivery row (migration 0009): set
    # while the queue has a pending delivery, the lease's end while a worker holds it.
    Column("due_ms", BigInteger),
    Column("lease_owner", Text),
    # A webhook's due heads, oldest due first: the main claim's, a webhook at a time
    # (storage/due.py, migration 0012), and a rate-limited webhook's (ratelimit.take); the
    # heads only, however long its backlog (migration 0006, moved here by 0009).
    Index(
        "ix_delivery_queues_webhook_due",
        "webhook_id",
        "due_ms",
        postgresql_where=text("due_ms IS NOT NULL"),
        sqlite_where=text("due_ms IS NOT NULL"),
    ),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("organization_id", Text, nullable=False),
    Column("webhook_id", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("status", Text, nullable=False),  # pending | delivered | dead | superseded
    Column("attempt_count", Integer, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("last_outcome", Text),
    Column("replay_of", Text),  # the dead delivery this one replays
    Column("replayed_by", Text),  # on a dead delivery: its replay
    # What the message is about ("user", "event:<id>"): a delivered one supersedes the dead
    # letters of the same subject in its queue (migration 0006).
    Column("subject", Text),
    # Attempts a receiver asked us to hold (Retry-After, 410): they use up no retry.
    Column("held_attempts", Integer, nullable=False, server_default="0"),
    # When the delivery became a dead letter (the record of its last failed attempt), kept
    # when it is superseded; NULL for the others (migration 0014). The dead letters' indexes
    # are partial on it, not on ``status``: no index names ``status``, so that the record of
    # a delivered one changes no indexed column (a HOT update on PostgreSQL: no new entry in
    # any index, 4 WAL records fewer a delivery; docs/performance-log.md).
    Column("dead_at", Text),
    # Unique (migration 0013): one delivery a place in its queue; declared, the planner
    # knows a head's lookup by these three finds one row, whatever the table's size.
    Index("ix_deliveries_queue", "webhook_id", "user_id", "seq", unique=True),
    # A webhook's deliveries in order (API pages, the dashboard); its pending ones are
    # found through its queues (``deliveries.pending_of``), its dead letters below.
    Index("ix_deliveries_webhook", "webhook_id", "pk"),
    # The dead letters of a queue, for the record to find those a delivered message
    # supersedes (flow.SUPERSEDE_ROW): dead letters only, however long the queue's history
    # or the webhook's dead letters (migrations 0008, 0014).
    Index(
        "ix_deliveries_dead_letters",
        "webhook_id",
        "user_id",
        "seq",
        postgresql_where=text("dead_at IS NOT NULL"),
        sqlite_where=text("dead_at IS NOT NULL"),
    ),
    # A webhook's dead letters (dead or superseded) in order: listings, counts, replays.
    Index(
        "ix_deliveries_letters",
        "webhook_id",
        "pk",
        postgresql_where=text("dead_at IS NOT NULL"),
        sqlite_where=text("dead_at IS NOT NULL"),
    ),
)

attempts = Table(
    "attempts",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False),  # unique as made, not indexed (migration 0011)
    Column("delivery_id", Text, nullable=False),  # looked up through uq_attempts_number
    Column("attempt_number", Integer, nullable=False),
    Column("started_at", Text, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("status_code", Integer),
    Column("response_body", Text),  # at most 4 KiB, NUL and bad UTF-8 replaced by U+FFFD
    Column("request_headers", Text),
    Column("error", Text),
    # The body's size as sent (migration 0003); 64-bit: a declared size is the receiver's
    # choice (migration 0015).
    Column("response_bytes", BigInteger().with_variant(Integer(), "sqlite")),
    UniqueConstraint("delivery_id", "attempt_number", name="uq_attempts_number"),
)

# Dashboard sessions ended by signing out before their signed cookie expired (a cookie copied
# before the sign-out is refused while this row lasts: until the cookie could no longer be
# used anyway). The cookie itself stays self-contained; see dashboard/session.py.
dashboard_logouts = Table(
    "dashboard_logouts",
    metadata,
    Column("session_id", Text, primary_key=True),
    Column("expires_ms", BigInteger, nullable=False, index=True),
)

# The accountability ledger (migration 0005): one entry per delivered message and webhook,
# chained per organization (domain/ledger.py). No personal data beyond the user's id.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", Text, nullable=False),
    Column("delivery_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("webhook_id", Text, nullable=False),
    Column("delivered_at", Text, nullable=False),
    Column("status_code", Integer),
    Column("payload_sha256", Text),
    Column("prev_hash", Text, nullable=False),
    Column("entry_hash", Text, nullable=False),
    Index("ix_ledger_entries_user", "organization_id", "user_id", "seq"),
    Index("ix_ledger_entries_webhook", "organization_id", "webhook_id", "seq"),
)

# Each organization's chain head, locked while a delivered batch appends its entries.
ledger_heads = Table(
    "ledger_heads",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", Text, nullable=False),
)

# Users whose personal data was erased; settled once nothing of theirs waits to be purged.
erasures = Table(
    "erasures",
    metadata,
    Column("organization_id", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("erased_at", Text, nullable=False),
    Column("settled_at", Text),
)
