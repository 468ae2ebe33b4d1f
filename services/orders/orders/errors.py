"""Use-case errors. The API maps each to one status code and a body naming field and reason."""

from __future__ import annotations

from collections.abc import Sequence

from orders.domain import FieldProblem


class OrdersError(Exception):
    """Base for errors a client can act on."""


class InvalidOrderError(OrdersError):
    """The request is well-formed but breaks a business rule (422, nothing changed)."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.msg}" for p in problems))
        self.problems = tuple(problems)


class IdempotencyKeyReusedError(InvalidOrderError):
    def __init__(self) -> None:
        super().__init__(
            [
                FieldProblem(
                    ("header", "Idempotency-Key"),
                    "this Idempotency-Key was already used with a different request body; "
                    "use a new key for a new order",
                    "idempotency_key_reused",
                )
            ]
        )


class OrderNotFoundError(OrdersError):
    """Unknown order, or a missing/wrong token: the same answer, so existence never leaks."""


class CheckoutNotAllowedError(OrdersError):
    def __init__(self, status: str) -> None:
        super().__init__(
            f"the order is {status}; checkout is only possible while it is created or "
            "awaiting payment"
        )
        self.status = status


class PaymentsUnavailableError(OrdersError):
    """Payments did not answer in time: nothing changed, the customer may retry."""


class PaymentProviderError(OrdersError):
    """Payments answered, but could not create an invoice (provider refused or failed)."""

    def __init__(self, code: str | None, message: str | None, retryable: bool) -> None:
        text = (message or "the payment provider could not create an invoice")[:300]
        super().__init__(text)
        self.code = code or "provider_error"
        self.retryable = retryable
