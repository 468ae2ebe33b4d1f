"""Every subject in the system, in one place."""

# orders
ORDER_CREATED = "orders.order_created.v1"
ORDER_PAID = "orders.order_paid.v1"
ORDER_UNDERPAID = "orders.order_underpaid.v1"
ORDER_FAILED = "orders.order_failed.v1"
ORDER_EXPIRED = "orders.order_expired.v1"
ORDER_FULFILLED = "orders.order_fulfilled.v1"
# A paid (or delivered) order whose payment was refunded. Added after v1: old consumers ignore it.
ORDER_REFUNDED = "orders.order_refunded.v1"
ORDERS_EVENTS = (
    ORDER_CREATED,
    ORDER_PAID,
    ORDER_UNDERPAID,
    ORDER_FAILED,
    ORDER_EXPIRED,
    ORDER_FULFILLED,
    ORDER_REFUNDED,
)

# payments
PAYMENT_STATUS_CHANGED = "payments.status_changed.v1"
# Something about a payment that an operator must look at (late money, a child payment, an
# amount discrepancy, an unknown status, a refund …). Added after v1: old consumers ignore it.
PAYMENT_ATTENTION_RAISED = "payments.attention_raised.v1"
PAYMENTS_EVENTS = (PAYMENT_STATUS_CHANGED, PAYMENT_ATTENTION_RAISED)
CREATE_INVOICE = "payments.create_invoice"  # request-reply, not stored in a stream
SETTLE_PAYMENT = "payments.settle"  # request-reply: an operator settles an order as paid
ATTACH_PAYMENT = "payments.attach"  # request-reply: an operator attaches a provider payment

# webhooks
IPN_RECEIVED = "webhooks.ipn_received.v1"
IPN_REJECTED = "webhooks.ipn_rejected.v1"
WEBHOOKS_EVENTS = (IPN_RECEIVED, IPN_REJECTED)
REPROCESS = "webhooks.reprocess"  # request-reply

# fulfillment
ORDER_DELIVERED = "fulfillment.order_delivered.v1"
EMAIL_SENT = "fulfillment.email_sent.v1"
GRANTS_REVOKED = "fulfillment.grants_revoked.v1"
FULFILLMENT_EVENTS = (ORDER_DELIVERED, EMAIL_SENT, GRANTS_REVOKED)
REVOKE_GRANTS = "fulfillment.revoke_grants"  # request-reply
