from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from shared.settings import ServiceSettings, provider_is_real, require_secret

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhooksSettings(ServiceSettings):
    """Knobs of the webhooks gateway (``WEBHOOKS_*``); provider secrets keep their global names."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", populate_by_name=True)

    port: int = 8002
    worker_port: int = 8102

    ipn_secret: SecretStr | None = Field(default=None, validation_alias="NOWPAYMENTS_IPN_SECRET")
    # Set while rotating: IPNs signed with the old secret keep working until the provider switches.
    ipn_secret_previous: SecretStr | None = Field(
        default=None, validation_alias="NOWPAYMENTS_IPN_SECRET_PREVIOUS"
    )

    # Only to know whether the real provider is configured (then the secret is required even
    # by the worker); the gateway itself never calls the provider.
    nowpayments_base: str = Field(
        default="http://127.0.0.1:8010/v1", validation_alias="NOWPAYMENTS_BASE"
    )
    # Optional allow-list of IPN senders: comma-separated IPs/CIDRs, empty = anyone. Compared
    # with the socket peer as uvicorn resolves it (X-Forwarded-For only from FORWARDED_ALLOW_IPS).
    ipn_allowed_ips: str = Field(default="", validation_alias="NOWPAYMENTS_IPN_ALLOWED_IPS")

    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # How many ingest statements may run at once; deliveries arriving meanwhile are written
    # together by the next one (see repository.IpnStore.ingest). Fewer means larger batches.
    ingest_concurrency: int = Field(default=2, ge=1, le=64)
    ingest_max_batch: int = Field(default=100, ge=1, le=1000)
    # The provider waits about 3 s; answer 503 (it retries) well before that.
    db_timeout_seconds: float = Field(default=2.5, gt=0)

    # Flood cap for rejected requests: rows (and IpnRejected events) per minute per process,
    # and the most rows the worker keeps in webhook_failure.
    failure_rows_per_minute: int = Field(default=60, ge=0)
    failure_rows_max: int = Field(default=100_000, ge=1)
    failure_body_excerpt_bytes: int = Field(default=2048, ge=0, le=64 * 1024)
    failure_prune_seconds: float = Field(default=60.0, gt=0)

    @field_validator("ipn_secret_previous", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("ipn_allowed_ips")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        parse_networks(value)  # fail at start-up, naming the bad entry
        return value

    def ipn_allowed_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.ipn_allowed_ips)

    def require_real_provider_secret(self) -> None:
        """With the real provider (sandbox or production) a process without the IPN secret
        must not start: every genuine IPN would be refused. Names the variable, never the
        value."""
        if provider_is_real(self.nowpayments_base):
            require_secret(self.ipn_secret, "NOWPAYMENTS_IPN_SECRET")

    def ipn_keys(self) -> tuple[bytes, ...]:
        """HMAC keys to try, current first, trimmed as the provider trims its secret (a value
        read from a secrets file keeps its newline). Fails fast naming the variable, never
        the value."""
        keys = [require_secret(self.ipn_secret, "NOWPAYMENTS_IPN_SECRET")]
        if self.ipn_secret_previous is not None:
            keys.append(require_secret(self.ipn_secret_previous, "NOWPAYMENTS_IPN_SECRET_PREVIOUS"))
        return tuple(k.get_secret_value().encode("utf-8") for k in keys)


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"51.89.194.21, 10.0.0.0/8"`` → networks (a bare address is a /32 or /128)."""
    networks: list[Network] = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"NOWPAYMENTS_IPN_ALLOWED_IPS: {entry[:60]!r} is not an IP address or CIDR"
            ) from None
    return tuple(networks)
