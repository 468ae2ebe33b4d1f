"""Prometheus metrics of the webhooks gateway. Publish lag is the relay's
``outbox_oldest_pending_seconds{relay="webhooks"}`` (worker port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from webhooks.errors import REJECT_REASONS

RECEIVED = Counter(
    "webhooks_ipn_received_total", "Verified IPNs stored (first deliveries and duplicates)"
)
DUPLICATES = Counter(
    "webhooks_ipn_duplicates_total", "Verified IPNs whose dedup key was already stored"
)
REJECTED = Counter("webhooks_ipn_rejected_total", "Refused IPN requests", ["reason"])
REJECTIONS_DROPPED = Counter(
    "webhooks_rejections_dropped_total",
    "Rejected requests not stored (flood cap reached or database down)",
)
VERIFIED_BY = Counter(
    "webhooks_ipn_verified_total",
    "Signature checks that passed, by method (raw/canonical) and secret (current/previous)",
    ["method", "secret"],
)
UNAVAILABLE = Counter(
    "webhooks_ipn_unavailable_total", "IPNs answered 503 because storage was unavailable"
)
FAILURES_PRUNED = Counter(
    "webhooks_failures_pruned_total", "webhook_failure rows deleted to respect the table cap"
)
INGEST_SECONDS = Histogram(
    "webhooks_ipn_ingest_seconds",
    "Time from request start to response for IPN deliveries",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

INGEST_BATCH = Histogram(
    "webhooks_ingest_batch_size",
    "Deliveries written by one ingest statement",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)

# Label children resolved once: the hot path should not hash label tuples per request.
REJECTED_BY_REASON = {reason: REJECTED.labels(reason) for reason in REJECT_REASONS}
VERIFIED = {
    f"{method}/{secret}": VERIFIED_BY.labels(method, secret)
    for method in ("raw", "canonical")
    for secret in ("current", "previous")
}
