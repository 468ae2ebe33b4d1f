"""Orders settings: global names for shared values, ``ORDERS_`` for this service's knobs."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from shared.settings import ServiceSettings, require_secret


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", populate_by_name=True)

    port: int = 8001
    worker_port: int = 8101

    # Keys the order-token hash. Without it a stolen database would let anyone check a guessed
    # token offline; with it the hash alone is useless.
    order_token_pepper: SecretStr | None = Field(
        default=None, validation_alias="ORDER_TOKEN_PEPPER"
    )
    # Where the customer lands after paying or cancelling on the provider's page.
    storefront_url: str = Field(default="http://127.0.0.1:8000", validation_alias="STOREFRONT_URL")

    # How long checkout waits for payments to answer before saying 503.
    payments_timeout_seconds: float = 10.0

    # Payments is the authority on expiry: it publishes `expired` when the provider's payment
    # expired or nothing was paid within the provider's lifetime. Our own clock is only a
    # backstop for a payment that never reports: an order still waiting for its first payment
    # after the provider's longest lifetime (a floating-rate NOWPayments payment waits 7 days
    # for a deposit) plus a grace period is expired by the worker. Money arriving later still
    # pays the order (expired → paid).
    invoice_lifetime_seconds: float = 7 * 24 * 3600.0
    expiry_grace_seconds: float = 3600.0
    expiry_check_seconds: float = 30.0
    expiry_batch_size: int = 100

    # A retried POST /orders with the same Idempotency-Key is answered from the stored result
    # for this long; afterwards the key (and the seed that re-derives the token) is deleted.
    idempotency_retention_seconds: float = 24 * 3600.0

    def token_pepper(self) -> bytes:
        """The pepper as bytes; fails fast naming the variable when it is not configured."""
        secret = require_secret(self.order_token_pepper, "ORDER_TOKEN_PEPPER")
        return secret.get_secret_value().encode()
