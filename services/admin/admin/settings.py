"""Admin settings: global secrets by their shared names, admin knobs with the ``ADMIN_`` prefix."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from shared.settings import SecretNotConfiguredError, ServiceSettings, require_secret

# HS256 keys shorter than the hash output make brute-forcing a captured token cheaper.
MIN_JWT_SECRET_LENGTH = 32


class AdminSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADMIN_", extra="ignore", populate_by_name=True)

    port: int = 8003
    worker_port: int = 8103

    jwt_secret: SecretStr | None = Field(default=None, validation_alias="ADMIN_JWT_SECRET")
    token_ttl_seconds: int = Field(default=900, ge=60, le=24 * 3600)

    # None: Secure exactly when the request arrived over https (uvicorn --proxy-headers honours
    # X-Forwarded-Proto), so plain-http dev works and TLS deployments get Secure without a flag.
    cookie_secure: bool | None = None
    cookie_path: str = "/"

    # Brute-force throttle, counted in the database so every replica sees the same attempts.
    login_max_failures: int = Field(default=5, ge=1)
    login_ip_max_failures: int = Field(default=20, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)

    # argon2id cost; the library's defaults (RFC 9106 low-memory profile) unless tuned.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)

    rpc_timeout_seconds: float = Field(default=10.0, gt=0)

    # Browser origins allowed to call this API with credentials. Empty by default: the admin
    # console calls the API from its server, so no browser origin needs access, and every
    # allowed origin is one more place whose XSS could act with an operator's cookie.
    # Comma-separated in the environment (NoDecode: not JSON).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    def jwt_key(self) -> str:
        """The signing key, or a clear startup failure naming the variable (never its value)."""
        key = require_secret(self.jwt_secret, "ADMIN_JWT_SECRET").get_secret_value()
        if len(key) < MIN_JWT_SECRET_LENGTH:
            raise SecretNotConfiguredError(
                f"ADMIN_JWT_SECRET must be at least {MIN_JWT_SECRET_LENGTH} characters"
            )
        return key
