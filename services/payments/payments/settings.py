"""Payments settings: the provider's address, key and account login (global names) and our own
knobs (``PAYMENTS_`` prefix)."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from shared.settings import (
    SecretNotConfiguredError,
    ServiceSettings,
    provider_is_real,
    require_secret,
)

# Host names the provider can never reach (it calls our IPN URL from the internet).
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".test")


def unreachable_from_internet(url: str) -> str | None:
    """Why the provider could not call ``url`` (loopback, private, link-local ... host), or None.

    Only the URL is inspected (no DNS lookup: start-up must not depend on a resolver)."""
    host = (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
    if not host:
        return "has no host"
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        return f"host {host} is local"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_unspecified
        or address.is_reserved
        or address.is_multicast
    ):
        return f"host {host} is not reachable from the internet"
    return None


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
    # The provider account's dashboard login: POST /auth turns it into the JWT some endpoints
    # want (the payment list by invoice). Optional against the emulator's open list; required
    # by require_ready_for_provider() when NOWPAYMENTS_BASE is NOWPayments itself.
    nowpayments_email: str | None = Field(default=None, validation_alias="NOWPAYMENTS_EMAIL")
    nowpayments_password: SecretStr | None = Field(
        default=None, validation_alias="NOWPAYMENTS_PASSWORD"
    )
    # Used when the token carries no readable ``exp``: the provider's tokens live 5 minutes.
    jwt_lifetime_seconds: float = Field(default=240.0, gt=0)

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
    # A floating-rate NOWPayments payment waits 7 days for a deposit ("expired - the user
    # didn't send the funds … in the 7 days time window", Postman collection, Create payment);
    # only fixed-rate / fee-paid-by-user ones freeze the rate for 20 minutes. We create
    # floating-rate invoices, so an order waits as long as the provider's payment can be paid.
    invoice_lifetime_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Repeated deposits are summed against what the original payment asked for; a sum short by
    # at most this fraction of pay_amount counts as paid (0 = exact, the default).
    underpayment_tolerance: Decimal = Field(default=Decimal(0), ge=0, lt=1)
    # Extra wait past the provider's invoice expiry before we call an invoice without any known
    # payment expired: a payment started in the last second still gets its IPNs through.
    expiry_grace_seconds: float = Field(default=600.0, ge=0)

    @field_validator("nowpayments_base")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @field_validator("nowpayments_callback_url")
    @classmethod
    def _strip_url(cls, value: str) -> str:
        return value.strip()

    @field_validator("nowpayments_email", mode="before")
    @classmethod
    def _strip_email(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("nowpayments_api_key", "nowpayments_password", mode="before")
    @classmethod
    def _strip_secret(cls, value: Any) -> Any:
        # A key pasted with a trailing newline or space (the provider itself trims its IPN
        # secret) must not turn into "Invalid api key" at 3 a.m.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.strip() or None
        return value

    def api_key(self) -> SecretStr:
        """The provider key, or a clear start-up failure naming the variable."""
        return require_secret(self.nowpayments_api_key, "NOWPAYMENTS_API_KEY")

    @property
    def provider_is_real(self) -> bool:
        return provider_is_real(self.nowpayments_base)

    def check_real_provider(self) -> list[str]:
        """What stops a real NOWPayments account (production or sandbox) from working with these
        settings: one line per problem, naming the variable, never its value. Empty against the
        emulator (any ``NOWPAYMENTS_BASE`` outside ``*.nowpayments.io``)."""
        if not self.provider_is_real:
            return []
        problems: list[str] = []
        callback = self.nowpayments_callback_url
        parts = urlsplit(callback)
        if parts.scheme != "https":
            problems.append(
                "NOWPAYMENTS_CALLBACK_URL must be an https:// URL the provider can reach"
            )
        unreachable = unreachable_from_internet(callback)
        if unreachable is not None:
            problems.append(
                f"NOWPAYMENTS_CALLBACK_URL {unreachable}: the provider cannot call it "
                "(use the public address of the webhooks gateway)"
            )
        for name, value in (
            ("NOWPAYMENTS_API_KEY", self.nowpayments_api_key),
            ("NOWPAYMENTS_PASSWORD", self.nowpayments_password),
        ):
            try:
                require_secret(value, name)
            except SecretNotConfiguredError:
                problems.append(f"{name} is missing or a placeholder")
        if not self.nowpayments_email:
            problems.append("NOWPAYMENTS_EMAIL is missing (the provider account's login)")
        elif "@" not in self.nowpayments_email:
            problems.append("NOWPAYMENTS_EMAIL is not an email address")
        return problems

    def require_ready_for_provider(self) -> None:
        """Fail start-up naming every missing or wrong item at once when NOWPAYMENTS_BASE is the
        real provider (a worker that cannot be paid or reached must not look healthy)."""
        problems = self.check_real_provider()
        if problems:
            raise SecretNotConfiguredError(
                f"NOWPAYMENTS_BASE is the real provider ({self.nowpayments_base}) but: "
                + "; ".join(problems)
            )
