"""Why a request was turned away. Reasons are short, stable codes (metric labels, stored rows)."""

from __future__ import annotations

from typing import Literal

RejectReason = Literal[
    "missing_signature",
    "malformed_signature",
    "invalid_signature",
    "invalid_json",
    "invalid_payload",
    "body_too_large",
    "source_not_allowed",
]

REJECT_REASONS: tuple[RejectReason, ...] = (
    "missing_signature",
    "malformed_signature",
    "invalid_signature",
    "invalid_json",
    "invalid_payload",
    "body_too_large",
    "source_not_allowed",
)


class IpnRejectedError(Exception):
    """The request is refused with a 4xx; nothing reaches the business flow."""

    def __init__(self, reason: RejectReason, detail: str, status_code: int = 400) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail
        self.status_code = status_code


class InvalidJsonError(ValueError):
    """Text that is not one JSON document we are willing to read."""


class ReplayUnavailableError(Exception):
    """A stored IPN could not be turned into an event again (its body no longer parses)."""
