"""Payments settings: the provider's address and key (global names) and our own knobs
(``PAYMENTS_`` prefix)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from shared.settings import ServiceSettings, require_secret


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", populate_by_name=True)

    port: int = 8005
    worker_port: int = 8105

    # The provider. Global names: the launcher and compose files set them once for everyone.
    nowpayments_base: str = Field(
        default="http://127.0.0.1:8010/v1", validation_alias="NOWPAYMENTS_BASE"
    )
    nowpayments_api_key: SecretStr | None = Field(
        default=None, validation_alias="NOWPAYMENTS_API_KEY"
    )
    nowpayments_callback_url: str = Field(
        default="http://127.0.0.1:8002/webhooks/nowpayments",
        validation_alias="NOWPAYMENTS_CALLBACK_URL",
    )

    # HTTP client. Reads (GET) are retried on connection errors and 5xx; POST /invoice is not.
    # The IPN consumer confirms final statuses inside its handler, so attempts x timeout plus
    # backoff (3 x 5 s + ~1 s by default) must stay well under the consumer's 30 s ack wait.
    http_connect_timeout: float = Field(default=3.0, gt=0)
    http_timeout: float = Field(default=5.0, gt=0)
    read_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=0.2, ge=0)
    retry_backoff_max_seconds: float = Field(default=2.0, ge=0)

    # IPN handling.
    confirm_final_with_provider: bool = True
    # NAK delay when an IPN refers to a payment row that is not committed yet, or when the
    # provider cannot confirm a final status right now.
    not_visible_retry_seconds: float = Field(default=2.0, gt=0)
    provider_unavailable_retry_seconds: float = Field(default=10.0, gt=0)

    # Reconciliation poller.
    poll_enabled: bool = True
    poll_after_seconds: float = Field(default=300.0, ge=0)  # "not final after N minutes"
    poll_interval_seconds: float = Field(default=60.0, gt=0)  # first gap, doubles per check
    poll_max_interval_seconds: float = Field(default=1800.0, gt=0)
    poll_tick_seconds: float = Field(default=5.0, gt=0)
    poll_batch_size: int = Field(default=50, ge=1, le=1000)
    # GET /payment/?invoiceId= finds a payment whose IPNs all got lost. The real endpoint also
    # wants a JWT; when the provider refuses it we fall back to expiring after the lifetime.
    poll_lookup_by_invoice: bool = True
    invoice_lifetime_seconds: float = Field(default=20 * 60.0, gt=0)
    # Extra wait past the provider's invoice expiry before we call an invoice without any known
    # payment expired: a payment started in the last second still gets its IPNs through.
    expiry_grace_seconds: float = Field(default=600.0, ge=0)

    @field_validator("nowpayments_base")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def api_key(self) -> SecretStr:
        """The provider key, or a clear start-up failure naming the variable."""
        return require_secret(self.nowpayments_api_key, "NOWPAYMENTS_API_KEY")
