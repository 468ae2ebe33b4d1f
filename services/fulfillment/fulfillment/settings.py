from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class FulfillmentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FULFILLMENT_", extra="ignore", populate_by_name=True)

    port: int = 8004
    worker_port: int = 8104
