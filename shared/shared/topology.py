"""The services and apps of the system, by name — module paths only, never imports.

The launcher, the test plugin and the docs generator read this list; nothing here imports a
service, so the "shared imports no service" contract holds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceDef:
    name: str
    port: int
    worker_port: int

    @property
    def package(self) -> str:
        return self.name

    @property
    def schema(self) -> str:
        return self.name

    @property
    def api_factory(self) -> str:
        return f"{self.name}.main:create_api"

    @property
    def worker_factory(self) -> str:
        return f"{self.name}.main:create_worker"


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("webhooks", 8002, 8102),
    ServiceDef("payments", 8005, 8105),
    ServiceDef("orders", 8001, 8101),
    ServiceDef("fulfillment", 8004, 8104),
    ServiceDef("admin", 8003, 8103),
)

WEB_PORT = 8000
EMULATOR_PORT = 8010
SCHEMAS = tuple(s.schema for s in SERVICES)
