"""Settings base classes.

Infrastructure addresses (``DATABASE_URL``, ``NATS_URL``, ...) are global names because one
launcher or one compose file points every service at the same infrastructure. Everything else a
service reads carries its own prefix (``ORDERS_PORT``), set with ``env_prefix`` on the subclass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
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


def is_placeholder(raw: str | None) -> bool:
    """True for a value that is unset, blank, or one copied from an example (``replace-me``)."""
    text = (raw or "").strip().lower()
    return text in _PLACEHOLDERS or text.startswith(("replace", "<"))


def require_secret(value: SecretStr | None, env_name: str) -> SecretStr:
    """Return ``value`` trimmed, or fail with a message that names the variable (never the
    value). Trimmed because a secret read from a file usually ends in a newline, and the
    provider trims its IPN secret too: ``"s3cret\n"`` must sign and verify as ``"s3cret"``."""
    raw = value.get_secret_value().strip() if value is not None else ""
    if is_placeholder(raw):
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


# What a real NOWPayments account needs from us, besides a public callback URL: the API key
# (x-api-key), the IPN secret (signatures), and the account login for the JWT some endpoints
# want (``POST /auth``).
REAL_PROVIDER_SECRETS = (
    "NOWPAYMENTS_API_KEY",
    "NOWPAYMENTS_IPN_SECRET",
    "NOWPAYMENTS_EMAIL",
    "NOWPAYMENTS_PASSWORD",
)
# Names that only resolve inside a private network (RFC 6761/6762, common LAN suffixes) or are
# documentation placeholders copied from an example.
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".test", ".invalid")
_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")


def callback_url_problem(url: str | None) -> str | None:
    """Why the provider could not POST IPNs to ``url`` (None: it looks reachable).

    NOWPayments calls the callback from the internet and cannot call localhost, so it must be
    ``https://`` on a public name or a global IP address. A name is not resolved here (that
    would make start-up depend on DNS); only what is certain from the text is refused.
    """
    text = (url or "").strip()
    if not text:
        return "NOWPAYMENTS_CALLBACK_URL is missing"
    parts = urlsplit(text)
    if parts.scheme.lower() != "https":
        return "NOWPAYMENTS_CALLBACK_URL must start with https://"
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return "NOWPAYMENTS_CALLBACK_URL has no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or "." not in host or host.endswith(_PRIVATE_SUFFIXES):
            return f"NOWPAYMENTS_CALLBACK_URL host {host!r} is not reachable from the internet"
        if any(host == d or host.endswith("." + d) for d in _EXAMPLE_DOMAINS):
            return f"NOWPAYMENTS_CALLBACK_URL host {host!r} is an example placeholder"
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global:
        return (
            f"NOWPAYMENTS_CALLBACK_URL host {host} is a loopback/private address; "
            "the provider cannot call it"
        )
    return None


def real_provider_problems(env: Mapping[str, str]) -> list[str]:
    """Everything missing for a real provider, one line each (names, never values).

    Empty when ``NOWPAYMENTS_BASE`` is not the real provider (the emulator needs nothing)."""
    if not provider_is_real(env.get("NOWPAYMENTS_BASE", "")):
        return []
    problems: list[str] = []
    callback = callback_url_problem(env.get("NOWPAYMENTS_CALLBACK_URL"))
    if callback is not None:
        problems.append(callback)
    for name in REAL_PROVIDER_SECRETS:
        value = (env.get(name) or "").strip()
        if is_placeholder(value):
            problems.append(f"{name} is missing or a placeholder")
        elif value.lower().startswith("emulator") or value.lower().endswith(".test"):
            problems.append(f"{name} is the emulator's dev value, not the account's")
        elif name == "NOWPAYMENTS_EMAIL" and "@" not in value:
            problems.append("NOWPAYMENTS_EMAIL is not an email address (the account login)")
    return problems


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
