"""Settings base classes.

Infrastructure addresses (``DATABASE_URL``, ``NATS_URL``, ...) are global names because one
launcher or one compose file points every service at the same infrastructure. Everything else a
service reads carries its own prefix (``ORDERS_PORT``), set with ``env_prefix`` on the subclass.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that show a secret was copied from an example and never set for real.
_PLACEHOLDERS = frozenset(
    {"", "changeme", "change-me", "secret", "placeholder", "xxx", "todo", "replace-me"}
)


class SecretNotConfiguredError(ValueError):
    """A required secret is missing or still holds a placeholder."""


def require_secret(value: SecretStr | None, env_name: str) -> SecretStr:
    """Return ``value`` or fail with a message that names the variable (never the value)."""
    raw = value.get_secret_value() if value is not None else ""
    if raw.strip().lower() in _PLACEHOLDERS or raw.lower().startswith(("replace", "<")):
        raise SecretNotConfiguredError(
            f"{env_name} is missing or a placeholder; set it in the environment "
            f"(make dev generates one in .local/secrets.env)"
        )
    return SecretStr(raw)


def provider_is_real(base_url: str) -> bool:
    """True when ``NOWPAYMENTS_BASE`` points at NOWPayments itself (production or sandbox), not
    at our emulator: then the settings a real account needs are checked at start-up."""
    host = (urlsplit(base_url.strip()).hostname or "").lower()
    return host == "nowpayments.io" or host.endswith(".nowpayments.io")


class InfraSettings(BaseSettings):
    """Where the shared infrastructure lives. Defaults match the embedded dev stack."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/bitloot",
        validation_alias="DATABASE_URL",
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # 1 on a single node (with sync_interval: always); 3 on a cluster so an ack means a quorum.
    stream_replicas: int = Field(default=1, ge=1, le=5, validation_alias="STREAM_REPLICAS")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_json: bool = Field(default=True, validation_alias="LOG_JSON")


class ServiceSettings(InfraSettings):
    """Base for one service's settings. Subclasses set ``env_prefix`` (``ORDERS_``...)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8000
    worker_port: int = 0  # 0: the worker exposes no HTTP port of its own
    db_pool_size: int = 10

    # Outbox relay tuning; see shared.messaging.outbox for why both exist.
    outbox_batch_size: int = 200
    outbox_sweep_seconds: float = 1.0

    # Redelivery policy for durable consumers: attempts, then the dead-letter stream. A
    # connection fault (database, provider, S3, SMTP unreachable) has the longer outage budget.
    consumer_max_deliveries: int = 5
    consumer_outage_max_deliveries: int = Field(default=60, ge=1)
    consumer_concurrency: int = Field(default=8, ge=1, le=256)
    consumer_backoff_seconds: list[float] = Field(default_factory=lambda: [0.2, 1.0, 5.0, 15.0])

    @field_validator("consumer_backoff_seconds", mode="before")
    @classmethod
    def _split_backoff(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value
