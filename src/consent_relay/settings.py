"""The one settings object, read once at start-up from ``CONSENT_RELAY_*`` variables.

Nothing reads the environment at import time: build ``Settings()`` (or
``Settings(**overrides)`` in tests) and pass it down.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting, with its default. The environment variable is the name upper-cased
    with the ``CONSENT_RELAY_`` prefix, e.g. ``database_url`` -> ``CONSENT_RELAY_DATABASE_URL``."""

    # Errors never echo a value: several are secrets (and a proxy URL may hold a password).
    model_config = SettingsConfigDict(
        env_prefix="CONSENT_RELAY_", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Field(
        Path("./data"), description="Folder for the SQLite file and the generated secret key."
    )
    database_url: str = Field(
        "",
        description="sqlite:///path.db or postgresql://user@host/db. "
        "Default: a SQLite file consent-relay.db in DATA_DIR.",
    )
    host: str = Field("127.0.0.1", description="Address `serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `serve` listens on.")
    admin_token: str = Field(
        "",
        description="Token for /v1/admin routes. Generated into DATA_DIR and printed at first "
        "start when unset.",
    )
    secret_key: str = Field(
        "",
        description="Fernet key (urlsafe base64, 32 bytes) encrypting secrets at rest. "
        "Generated into DATA_DIR/secret.key (mode 0600) when unset.",
    )
    retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 15.0, 30.0, 60.0, 110.0],
        description="Seconds to wait after each failed attempt, comma separated.",
    )
    retry_jitter: float = Field(0.1, ge=0, le=0.5, description="Relative jitter on retry delays.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to a receiver.")
    request_timeout: float = Field(
        10.0, gt=0, description="Total seconds for one delivery attempt, connect included."
    )
    require_https: bool = Field(False, description="Refuse http:// webhook URLs.")
    allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs that webhook and token URLs may reach despite the SSRF guard.",
    )
    egress_source_address: str = Field(
        "", description="Local address every outbound connection is bound to."
    )
    egress_proxy: str = Field(
        "",
        description="HTTP proxy URL for every outbound connection; its address is held to "
        "the SSRF guard like any destination (open it with ALLOWED_NETWORKS).",
    )
    delivery_client: Literal["direct", "aiohttp"] = Field(
        "direct",
        description="What sends a delivery's POST: 'direct' (asyncio and llhttp, aiohttp's "
        "lower layer: about a seventh of aiohttp's CPU a request) or 'aiohttp'. Token requests "
        "and deliveries through EGRESS_PROXY always use aiohttp.",
    )
    egress_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Published egress addresses, for GET /v1/egress."
    )
    worker_concurrency: int = Field(
        200, ge=1, le=10_000, description="Delivery requests in flight per worker process."
    )
    webhook_concurrency: int = Field(
        64, ge=1, le=10_000, description="Requests in flight to one webhook at most."
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a claimed delivery stays a worker's before another may take "
        "it; never shorter than two request timeouts plus the connect timeout.",
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: str = Field("INFO", description="Log level.")
    otel: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry traces, metrics and logs for API "
        "requests, sent to the globally configured providers. Off: no per-request check.",
    )
    max_body_bytes: int = Field(1024 * 1024, description="Largest accepted request body.")
    payload_retention: float = Field(
        30 * 86400.0,
        gt=0,
        description="Seconds a delivered message keeps its payload (and its attempts their "
        "bodies) before the workers purge them; dead letters keep theirs until delivered.",
    )
    erasure_grace: float = Field(
        30 * 86400.0,
        ge=0,
        description="Seconds an erased user's dead letters keep their payload, so that the "
        "user.deleted can still be replayed.",
    )

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must be >= 0")
        return value

    @field_validator("allowed_networks", "egress_ips", mode="before")
    @classmethod
    def _parse_list(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("allowed_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("egress_proxy")
    @classmethod
    def _check_proxy(cls, value: str, info: ValidationInfo) -> str:
        """Refuse at start-up a proxy the SSRF guard would refuse as a destination (a literal
        address never reaches the connection-time check: see ``targets.proxy_refusal``).
        ``allowed_networks`` is declared, so validated, before ``egress_proxy``."""
        if value:
            from consent_relay.security import targets  # aiohttp only once a proxy is set

            allowed = targets.parse_networks(info.data.get("allowed_networks", []))
            refusal = targets.proxy_refusal(value, allowed)
            if refusal is not None:
                raise ValueError(f"CONSENT_RELAY_EGRESS_PROXY is refused: {refusal}")
        return value

    @property
    def lease_ms(self) -> int:
        """The lease always outlives an attempt (a token request and the delivery itself)."""
        floor = 2 * self.request_timeout + self.connect_timeout
        return int(max(self.lease_seconds, floor) * 1000)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'consent-relay.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
