"""What a customer sees for each (order status, payment status): pure, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FINAL_ORDER_STATUSES = frozenset({"fulfilled", "underpaid", "failed", "expired", "refunded"})
CONFIRMING_PAYMENT_STATUSES = frozenset({"confirming", "confirmed", "sending"})

# Shown when orders sends no message of its own; orders' text is the policy of record.
UNDERPAID_POLICY = (
    "We received less than the order total, so this order was not delivered yet. Send the "
    "missing amount to the same payment address and the order completes by itself, or contact "
    "support with your order number (underpayments are not refunded automatically)."
)

HISTORY_LABELS = {
    "created": "Order created",
    "awaiting_payment": "Invoice created — waiting for payment",
    "paid": "Payment confirmed",
    "fulfilled": "Delivered by email",
    "underpaid": "Underpaid",
    "failed": "Payment failed",
    "expired": "Payment window expired",
    "refunded": "Payment refunded — download withdrawn",
}


@dataclass(frozen=True)
class StatusView:
    state: str  # stable key for tests, CSS and the polling script
    title: str
    detail: str
    final: bool
    tone: str  # info | progress | success | warning | error
    can_pay: bool = False
    can_retry: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status_view(
    order_status: str, payment_status: str | None, message: str | None = None
) -> StatusView:
    """``message`` is orders' own text; it states the policy or the failure reason when known."""
    if order_status == "fulfilled":
        return StatusView(
            "fulfilled",
            "Fulfilled — check your email",
            "Your download link is on its way to your inbox. It is valid for a limited time.",
            final=True,
            tone="success",
        )
    if order_status == "paid":
        return StatusView(
            "paid",
            "Paid — preparing your download",
            "We have your payment. Your download link will be emailed to you in a moment.",
            final=False,
            tone="progress",
        )
    if order_status == "underpaid":
        return StatusView(
            "underpaid",
            "Underpaid — the payment was less than the amount due",
            message or UNDERPAID_POLICY,
            final=True,
            tone="warning",
        )
    if order_status == "expired":
        return StatusView(
            "expired",
            "Expired — no payment arrived in time",
            "The invoice expired before a payment reached it. If you paid after all, the order "
            "completes by itself once the payment arrives; otherwise you can start a new order.",
            final=True,
            tone="error",
            can_retry=True,
        )
    if order_status == "failed":
        return StatusView(
            "failed",
            "Payment failed",
            message or "The payment did not go through. Nothing was delivered; you can try again.",
            final=True,
            tone="error",
            can_retry=True,
        )
    if order_status == "refunded":
        return StatusView(
            "refunded",
            "Refunded — the order was cancelled",
            message
            or "Your payment was refunded, so the order was cancelled: its download link no "
            "longer works.",
            final=True,
            tone="error",
        )
    if payment_status in CONFIRMING_PAYMENT_STATUSES:
        return StatusView(
            "confirming",
            "Confirming your payment",
            "Your payment was seen on the network and is waiting for confirmations. "
            "This page updates by itself.",
            final=False,
            tone="progress",
        )
    return StatusView(
        "waiting",
        "Waiting for payment",
        "We have not received your payment yet. If you have paid, it can take a few minutes "
        "to show up here.",
        final=False,
        tone="info",
        can_pay=True,
    )


def history_label(status: str) -> str:
    return HISTORY_LABELS.get(status, status.replace("_", " ").capitalize())
