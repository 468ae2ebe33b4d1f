"""Fulfillment settings.

Names shared by every process of the system (``S3_BUCKET``, ``DOWNLOAD_TOKEN_SECRET``,
``EMAIL_BACKEND``...) are read under their global names; knobs only this service has carry the
``FULFILLMENT_`` prefix (``FULFILLMENT_DOWNLOAD_CAP``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from shared.settings import ServiceSettings, require_secret

EmailBackendName = Literal["smtp", "resend", "file"]


class FulfillmentSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="FULFILLMENT_", extra="ignore", populate_by_name=True
    )

    port: int = 8004
    worker_port: int = 8104

    # Where customers reach us: the links in emails point here.
    public_url: str = Field(
        default="http://127.0.0.1:8004", validation_alias="FULFILLMENT_PUBLIC_URL"
    )
    storefront_url: str = Field(default="http://127.0.0.1:8000", validation_alias="STOREFRONT_URL")
    download_token_secret: SecretStr | None = Field(
        default=None, validation_alias="DOWNLOAD_TOKEN_SECRET"
    )

    # Object storage. No endpoint means AWS S3 itself; R2/MinIO/moto set one.
    s3_endpoint_url: str | None = Field(default=None, validation_alias="S3_ENDPOINT_URL")
    s3_bucket: str = Field(default="bitloot-deliveries", validation_alias="S3_BUCKET")
    s3_region: str = Field(default="us-east-1", validation_alias="AWS_DEFAULT_REGION")
    # Path style works with moto, MinIO and R2; AWS accepts it too ("virtual" for new buckets).
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"
    # Browsers may need another host than the worker (e.g. a public R2/MinIO domain).
    s3_public_endpoint_url: str | None = None
    s3_key_prefix: str = "deliveries"
    presign_ttl_seconds: int = Field(default=300, ge=30, le=3600)

    # Download links (app-signed tokens, one grant row each).
    link_ttl_seconds: int = Field(default=72 * 3600, ge=60)
    download_cap: int = Field(default=5, ge=1, le=1000)  # per item of the order

    # Reissue rate limits (token buckets kept in the database, shared by replicas).
    reissue_ip_capacity: int = Field(default=5, ge=1)
    reissue_ip_per_hour: float = Field(default=20.0, gt=0)
    reissue_order_capacity: int = Field(default=3, ge=1)
    reissue_order_per_hour: float = Field(default=3.0, gt=0)

    # Email.
    email_backend: EmailBackendName = Field(default="smtp", validation_alias="EMAIL_BACKEND")
    smtp_url: str = Field(default="smtp://127.0.0.1:1025", validation_alias="SMTP_URL")
    resend_api_key: SecretStr | None = Field(default=None, validation_alias="RESEND_API_KEY")
    resend_base_url: str = "https://api.resend.com"
    email_file_dir: str = ".local/mail-out"
    email_from: str = "BitLoot <no-reply@bitloot.local>"
    support_email: str = "support@bitloot.local"
    email_timeout_seconds: float = Field(default=10.0, gt=0)
    email_max_attempts: int = Field(default=8, ge=1)
    email_backoff_base_seconds: float = Field(default=5.0, gt=0)
    email_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    # A claimed email whose sender died is retried after this lease.
    email_claim_lease_seconds: float = Field(default=120.0, gt=0)
    email_sweep_seconds: float = Field(default=2.0, gt=0)
    email_batch_size: int = Field(default=20, ge=1)

    @field_validator("s3_endpoint_url", "s3_public_endpoint_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # Deployments write S3_ENDPOINT_URL="" to mean "AWS itself".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def token_secret(self) -> SecretStr:
        return require_secret(self.download_token_secret, "DOWNLOAD_TOKEN_SECRET")

    def check(self) -> None:
        """Fail at start-up, naming the variable, rather than on the first paid order."""
        self.token_secret()
        if self.email_backend == "resend":
            require_secret(self.resend_api_key, "RESEND_API_KEY")
