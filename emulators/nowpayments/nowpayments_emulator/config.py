"""Emulator settings, read from the environment by default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

DEFAULT_PORT = 8010
DEFAULT_PUBLIC_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    api_key: str = "emulator-api-key"
    ipn_secret: str = "emulator-ipn-secret"
    # Base of the links we hand out (invoice_url); the browser must be able to reach it.
    public_url: str = DEFAULT_PUBLIC_URL
    # Pause between two statuses of a payment's playback; tiny so tests and demos stay fast.
    step_delay: float = 0.05
    # Extra attempts after a delivery that got no 2xx in time (the provider retries).
    ipn_retries: int = 3
    ipn_retry_interval: float = 0.5
    callback_timeout: float = 3.0
    # The provider documents no lifetime for an invoice itself, only for its payments (7 days to
    # deposit at a floating rate, 20 min at a fixed rate): the hosted page stays open 7 days.
    invoice_lifetime: float = 7 * 24 * 3600.0
    # Smallest accepted price, valued in USD (the provider refuses dust with AMOUNT_MINIMAL_ERROR).
    min_price_usd: Decimal = Decimal("1")
    # Used when a payment carries no ipn_callback_url, like the account-level IPN URL.
    default_ipn_callback_url: str | None = None
    # Fixes ids, addresses and shuffles for reproducible runs; None draws fresh randomness.
    seed: int | None = None
    # Delivery attempts kept for GET /_emulator/ipn-log (oldest dropped first); a benchmark of
    # thousands of payments raises it to keep every attempt.
    ipn_log_limit: int = 10_000
    # Status of a repeated deposit (an account setting at the provider): partially_paid | finished.
    repeated_deposit_status: str = "partially_paid"
    # "Wrong-Asset Deposits Auto-Processing" (account setting): on = finished, off = held for the
    # merchant to resolve by hand (the child payment stops at confirming).
    wrong_asset_auto_processing: bool = False
    # The merchant's payout coin; None = the payment's own pay_currency (no conversion).
    outcome_currency: str | None = None
    # fee.depositFee / fee.withdrawalFee as a share of the received amount (0.01 = 1 %).
    deposit_fee_rate: Decimal = Decimal(0)
    withdrawal_fee_rate: Decimal = Decimal(0)
    # actually_paid_at_fiat: "zero" as the real provider usually sends, or "value" (converted).
    actually_paid_at_fiat: str = "zero"
    # Delays in seconds before each retry (e.g. 60, 300, 900); empty = `ipn_retries` every
    # `ipn_retry_interval` s. Waits run on the emulator's clock, so advancing it fires them.
    ipn_retry_schedule: tuple[float, ...] = ()
    # What a repeated / wrong-asset deposit quotes in price_amount and pay_amount: "order" (the
    # original's amounts) or "deposit" (pay_amount = what arrived, price_amount = its fiat value
    # at the current rate, as the provider's webhook example for a child payment shows).
    child_quote: str = "order"
    # Dashboard login for POST /v1/auth (the JWT some endpoints want besides the api key).
    email: str = "emulator@bitloot.test"
    password: str = "emulator-password"
    # Seconds a JWT from POST /v1/auth stays valid; the provider's live 5 minutes.
    jwt_lifetime: float = 300.0
    # The provider wants the JWT on GET /v1/payment/ (the list); off = the api key alone is enough.
    require_jwt: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmulatorConfig:
        source = os.environ if env is None else env
        base = cls()
        seed_text = source.get("EMULATOR_SEED")
        return cls(
            api_key=source.get("NOWPAYMENTS_API_KEY", base.api_key),
            ipn_secret=source.get("NOWPAYMENTS_IPN_SECRET", base.ipn_secret),
            public_url=source.get("EMULATOR_PUBLIC_URL", base.public_url).rstrip("/"),
            step_delay=_float(source, "EMULATOR_STEP_DELAY", base.step_delay),
            ipn_retries=int(_float(source, "EMULATOR_IPN_RETRIES", base.ipn_retries)),
            ipn_retry_interval=_float(
                source, "EMULATOR_IPN_RETRY_INTERVAL", base.ipn_retry_interval
            ),
            callback_timeout=_float(source, "EMULATOR_CALLBACK_TIMEOUT", base.callback_timeout),
            invoice_lifetime=_float(source, "EMULATOR_INVOICE_LIFETIME", base.invoice_lifetime),
            min_price_usd=_decimal(source, "EMULATOR_MIN_PRICE_USD", base.min_price_usd),
            default_ipn_callback_url=source.get("EMULATOR_DEFAULT_IPN_URL") or None,
            seed=int(seed_text) if seed_text else None,
            ipn_log_limit=int(_float(source, "EMULATOR_IPN_LOG_LIMIT", base.ipn_log_limit)),
            repeated_deposit_status=_choice(
                source,
                "EMULATOR_REPEATED_DEPOSIT_STATUS",
                base.repeated_deposit_status,
                ("partially_paid", "finished"),
            ),
            wrong_asset_auto_processing=_flag(
                source, "EMULATOR_WRONG_ASSET_AUTO_PROCESSING", base.wrong_asset_auto_processing
            ),
            outcome_currency=(source.get("EMULATOR_OUTCOME_CURRENCY") or "").lower() or None,
            deposit_fee_rate=_decimal(source, "EMULATOR_DEPOSIT_FEE_RATE", base.deposit_fee_rate),
            withdrawal_fee_rate=_decimal(
                source, "EMULATOR_WITHDRAWAL_FEE_RATE", base.withdrawal_fee_rate
            ),
            actually_paid_at_fiat=_choice(
                source,
                "EMULATOR_ACTUALLY_PAID_AT_FIAT",
                base.actually_paid_at_fiat,
                ("zero", "value"),
            ),
            ipn_retry_schedule=_schedule(source, "EMULATOR_IPN_RETRY_SCHEDULE"),
            child_quote=_choice(
                source, "EMULATOR_CHILD_QUOTE", base.child_quote, ("order", "deposit")
            ),
            email=source.get("NOWPAYMENTS_EMAIL", base.email),
            password=source.get("NOWPAYMENTS_PASSWORD", base.password),
            jwt_lifetime=_float(source, "EMULATOR_JWT_LIFETIME", base.jwt_lifetime),
            require_jwt=_flag(source, "EMULATOR_REQUIRE_JWT", base.require_jwt),
        )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or text == "":
        return float(default)
    try:
        value = float(text)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {text!r}") from exc
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def _decimal(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"{name} must be a decimal number, got {text!r}") from exc


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {text!r}")
    return text


def _schedule(env: Mapping[str, str], name: str) -> tuple[float, ...]:
    text = (env.get(name) or "").strip()
    if not text:
        return ()
    delays: list[float] = []
    for part in text.split(","):
        try:
            delay = float(part)
        except ValueError as exc:
            raise ValueError(f"{name} must be comma-separated seconds, got {text!r}") from exc
        if delay < 0:
            raise ValueError(f"{name} must not hold negative delays")
        delays.append(delay)
    return tuple(delays)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {text!r}")
