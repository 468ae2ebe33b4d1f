"""Errors the admin use cases raise; the API maps each to one status code and a clear message."""

from __future__ import annotations


class AdminError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(AdminError):
    """Bad input: names the field and the reason, and nothing has been changed."""

    status_code = 422

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotAuthenticatedError(AdminError):
    status_code = 401


class ForbiddenError(AdminError):
    status_code = 403


class NotFoundError(AdminError):
    status_code = 404


class ConflictError(AdminError):
    status_code = 409


class ThrottledError(AdminError):
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(AdminError):
    """A dependency (database, NATS, another service) cannot answer now: retry later."""

    status_code = 503
