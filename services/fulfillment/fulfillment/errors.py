"""Errors of the fulfillment use cases, and what each means to a caller."""

from __future__ import annotations

from fulfillment.domain import UndeliverableOrderError
from fulfillment.storage import StorageUnavailableError


class UnknownOrderError(LookupError):
    """No delivery exists for this order (never paid, or not delivered yet)."""


class LicenceMismatchError(RuntimeError):
    """A regenerated file differs from the one delivered (the licence secret changed).

    Serving it would hand out keys the customer never received, so the download stops and an
    operator must look.
    """


__all__ = [
    "LicenceMismatchError",
    "StorageUnavailableError",
    "UndeliverableOrderError",
    "UnknownOrderError",
]
