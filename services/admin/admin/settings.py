from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AdminSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADMIN_", extra="ignore", populate_by_name=True)

    port: int = 8003
    worker_port: int = 8103
