"""Settings of the web app, read from the environment (the launcher sets them in dev).

The gateway addresses and ``STOREFRONT_URL`` are global names shared with the services;
``WEB_*`` names are the web app's own. ``WEB_SESSION_SECRET`` has no default: a frontend that
signs cookies with a well-known key would hand out admin sessions to anyone.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from shared.settings import require_secret

# The provider's hosted invoice pages. The checkout form's POST is answered with a redirect
# there, and Chromium checks CSP form-action against every hop of a form's redirect chain.
DEFAULT_PAYMENT_ORIGINS = "https://nowpayments.io,https://sandbox.nowpayments.io"

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    orders_url: str = Field(default="http://127.0.0.1:8001", validation_alias="ORDERS_URL")
    admin_url: str = Field(default="http://127.0.0.1:8003", validation_alias="ADMIN_URL")
    fulfillment_public_url: str = Field(
        default="http://127.0.0.1:8004", validation_alias="FULFILLMENT_PUBLIC_URL"
    )
    storefront_url: str = Field(default="http://127.0.0.1:8000", validation_alias="STOREFRONT_URL")
    session_secret: SecretStr | None = Field(default=None, validation_alias="WEB_SESSION_SECRET")
    dev_maildir: Path | None = Field(default=None, validation_alias="DEV_MAILDIR")
    smtp_url: str | None = Field(default=None, validation_alias="SMTP_URL")
    emulator_public_url: str | None = Field(default=None, validation_alias="EMULATOR_PUBLIC_URL")
    payment_origins_raw: str = Field(
        default=DEFAULT_PAYMENT_ORIGINS, validation_alias="WEB_PAYMENT_ORIGINS"
    )
    backend_timeout: float = Field(default=10.0, validation_alias="WEB_BACKEND_TIMEOUT")
    cookie_secure_override: bool | None = Field(default=None, validation_alias="WEB_COOKIE_SECURE")
    admin_session_max_age: int = Field(
        default=8 * 3600, validation_alias="WEB_ADMIN_SESSION_MAX_AGE"
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_json: bool = Field(default=True, validation_alias="LOG_JSON")

    def secret(self) -> str:
        return require_secret(self.session_secret, "WEB_SESSION_SECRET").get_secret_value()

    @property
    def payment_origins(self) -> tuple[str, ...]:
        """Origins the checkout may redirect to (the provider, and the emulator in dev)."""
        origins = [origin_of(o.strip()) for o in self.payment_origins_raw.split(",") if o.strip()]
        if self.emulator_public_url:
            origins.append(origin_of(self.emulator_public_url))
        return tuple(dict.fromkeys(origins))

    @property
    def cookie_secure(self) -> bool:
        if self.cookie_secure_override is not None:
            return self.cookie_secure_override
        return urlsplit(self.storefront_url).scheme == "https"

    @property
    def dev_mailbox_enabled(self) -> bool:
        """Only with the launcher's embedded SMTP capture: a real mail server's mail is private."""
        if self.dev_maildir is None or not self.smtp_url:
            return False
        return (urlsplit(self.smtp_url).hostname or "") in LOCAL_HOSTS
