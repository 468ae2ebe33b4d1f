from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

_REGISTRY: dict[str, type[Event]] = {}


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Envelope every event carries. ``subject`` is fixed per class and versioned in its name.

    ``correlation_id`` ties every event of one purchase together; ``causation_id`` is the
    event_id of the message whose handling produced this one (None at the edge).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    SUBJECT: ClassVar[str] = ""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=_now)
    correlation_id: str = Field(default_factory=lambda: str(uuid.uuid4()), max_length=100)
    causation_id: str | None = Field(default=None, max_length=100)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        subject = cls.__dict__.get("SUBJECT")
        # Only the published contracts register; tests may define look-alike events freely.
        if subject and cls.__module__.startswith("shared.contracts."):
            if subject in _REGISTRY and _REGISTRY[subject].__qualname__ != cls.__qualname__:
                raise TypeError(f"two event classes claim subject {subject}")
            _REGISTRY[subject] = cls

    def caused(self) -> dict[str, str]:
        """Envelope fields for an event produced while handling this one."""
        return {"correlation_id": self.correlation_id, "causation_id": str(self.event_id)}


class Request(BaseModel):
    """A NATS request-reply payload (queries and commands between services)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    SUBJECT: ClassVar[str] = ""
    correlation_id: str | None = Field(default=None, max_length=100)


class Reply(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    ok: bool
    error_code: str | None = None
    error_message: str | None = None


def event_types() -> dict[str, type[Event]]:
    """Every event class known to this process, by subject."""
    # Importing the context modules registers their classes.
    from shared.contracts import fulfillment, orders, payments, webhooks  # noqa: F401

    return dict(_REGISTRY)
