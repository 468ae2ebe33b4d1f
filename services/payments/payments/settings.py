from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", populate_by_name=True)

    port: int = 8005
    worker_port: int = 8105
