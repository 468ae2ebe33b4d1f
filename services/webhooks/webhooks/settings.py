from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class WebhooksSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", populate_by_name=True)

    port: int = 8002
    worker_port: int = 8102
