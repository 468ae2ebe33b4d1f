"""Errors of the payments use cases (the provider's own are in ``payments.client``)."""

from __future__ import annotations


class PaymentsError(Exception):
    """Base: ``code`` is what callers see in an error reply."""

    code = "payments_error"
    retryable = False


class OrderConflictError(PaymentsError):
    """The order already has a payment for a different price or currency."""

    code = "order_conflict"


class PaymentNotFoundError(PaymentsError):
    code = "payment_not_found"
