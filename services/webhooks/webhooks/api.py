"""HTTP edge of the webhooks gateway: ``POST /webhooks/nowpayments`` (alias ``/payments/ipn``).

The endpoint is a plain ASGI callable mounted as a Starlette route: it reads the raw body
itself (no FastAPI body parsing, no dependency injection), because the bytes must be verified
before anything parses them and because this is the hottest path of the system.

Answers: 200 stored (new or duplicate); 400 bad signature or body; 403 sender not on the
optional allow-list; 413 over the size cap; 503 storage unavailable (the provider retries).
Never a 500, never a stack trace.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.db import DatabaseUnavailableError
from shared.observability import bind_correlation_id, get_logger
from starlette.types import Receive, Scope, Send

from webhooks import metrics
from webhooks.domain import (
    FailureBudget,
    SourceAllowList,
    storable_headers,
    valid_correlation_id,
)
from webhooks.errors import IpnRejectedError
from webhooks.repository import IpnStore
from webhooks.service import InboundIpn, ingest_ipn, record_rejection

log = get_logger(__name__)

IPN_PATHS = ("/webhooks/nowpayments", "/payments/ipn")

_JSON_HEADERS = [(b"content-type", b"application/json")]
_ACCEPTED = b'{"status":"accepted"}'
_DUPLICATE = b'{"status":"duplicate"}'
_UNAVAILABLE = b'{"error":"unavailable","detail":"storage is unavailable; retry later"}'


class _BodyTooLargeError(Exception):
    def __init__(self, partial: bytes) -> None:
        super().__init__("body too large")
        self.partial = partial


class _ClientGoneError(Exception):
    pass


async def _read_body(receive: Receive, cap: int) -> bytes:
    """The raw body, refusing to buffer more than ``cap`` bytes whatever Content-Length said."""
    message = await receive()
    if message["type"] != "http.request":
        raise _ClientGoneError
    body: bytes = message.get("body", b"")
    if len(body) > cap:
        raise _BodyTooLargeError(body[:cap])
    if not message.get("more_body", False):
        return body  # the usual case: one message
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGoneError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise _BodyTooLargeError(b"".join([*chunks, chunk])[:cap])
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class IpnEndpoint:
    """ASGI app for the IPN routes (Starlette passes a non-function endpoint through as ASGI)."""

    def __init__(
        self,
        store: IpnStore,
        keys: Sequence[bytes],
        *,
        max_body_bytes: int,
        failure_budget: FailureBudget,
        failure_excerpt_bytes: int,
        allowed_sources: SourceAllowList | None = None,
    ) -> None:
        self.store = store
        self.allowed_sources = allowed_sources or SourceAllowList(())
        self.keys = tuple(keys)
        self.max_body_bytes = max_body_bytes
        self.failure_budget = failure_budget
        self.failure_excerpt_bytes = failure_excerpt_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        signature: str | None = None
        signatures = 0
        declared: int | None = None
        correlation: str | None = None
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        for name, value in raw_headers:
            if name == b"x-nowpayments-sig":
                signatures += 1
                signature = value.decode("latin-1")
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif name == b"x-correlation-id":
                correlation = valid_correlation_id(value.decode("latin-1"))
        # The same id in our logs, the response header and the event envelope.
        # A delivery without one starts a new chain named after the event it will publish.
        event_id = uuid.uuid4()
        correlation = correlation or str(event_id)
        reply_headers = [(b"x-correlation-id", correlation.encode())]
        headers = storable_headers(raw_headers)
        # The socket peer, or the X-Forwarded-For client when uvicorn trusts the peer as a
        # proxy (FORWARDED_ALLOW_IPS): uvicorn has already put the right one in the scope.
        client = scope.get("client")
        source_ip = str(client[0])[:64] if client else None

        body = b""
        try:
            if declared is not None and declared > self.max_body_bytes:
                raise _BodyTooLargeError(b"")
            body = await _read_body(receive, self.max_body_bytes)
        except _ClientGoneError:
            return  # nobody is listening for an answer; nothing was stored
        except _BodyTooLargeError as exc:
            ipn = InboundIpn(
                exc.partial,
                signature,
                headers,
                source_ip,
                received_at,
                correlation,
                declared_size=declared,
            )
            rejection = IpnRejectedError(
                "body_too_large", f"body exceeds {self.max_body_bytes} bytes", status_code=413
            )
            await self._reject(send, rejection, ipn, reply_headers)
            return

        ipn = InboundIpn(
            body, signature, headers, source_ip, received_at, correlation, event_id=event_id
        )
        try:
            if not self.allowed_sources.allows(source_ip):
                # Read (bounded) and recorded like any rejection, but nothing is verified or
                # stored: the signature is not even looked at.
                raise IpnRejectedError(
                    "source_not_allowed",
                    f"{source_ip} is not in NOWPAYMENTS_IPN_ALLOWED_IPS",
                    status_code=403,
                )
            if signatures > 1:
                raise IpnRejectedError(
                    "malformed_signature", "x-nowpayments-sig must be sent exactly once"
                )
            accepted = await ingest_ipn(self.store, self.keys, ipn)
        except IpnRejectedError as rejection:
            await self._reject(send, rejection, ipn, reply_headers)
            return
        except DatabaseUnavailableError as exc:
            bind_correlation_id(correlation)
            metrics.UNAVAILABLE.inc()
            log.warning("ipn_storage_unavailable", error=str(exc)[:200])
            await _respond(send, 503, _UNAVAILABLE, [*reply_headers, (b"retry-after", b"5")])
            return
        except Exception:
            # A bug, not bad input: the provider will retry, and the trace stays in our logs.
            bind_correlation_id(correlation)
            metrics.UNAVAILABLE.inc()
            log.exception("ipn_ingest_failed")
            await _respond(send, 503, _UNAVAILABLE, [*reply_headers, (b"retry-after", b"5")])
            return

        stored = accepted.stored
        metrics.RECEIVED.inc()
        metrics.VERIFIED[accepted.verified_by].inc()
        if stored.inserted:
            await _respond(send, 200, _ACCEPTED, reply_headers)
        else:
            metrics.DUPLICATES.inc()
            await _respond(send, 200, _DUPLICATE, reply_headers)
        metrics.INGEST_SECONDS.observe(time.perf_counter() - started)

    async def _reject(
        self,
        send: Send,
        rejection: IpnRejectedError,
        ipn: InboundIpn,
        reply_headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        bind_correlation_id(ipn.correlation_id)
        metrics.REJECTED_BY_REASON[rejection.reason].inc()
        # Logged only within the flood budget, like the stored rows: garbage at line rate must
        # not turn into log lines at line rate.
        context = {
            "reason": rejection.reason,
            "detail": rejection.detail,
            "source_ip": ipn.source_ip,
            "size": len(ipn.body),
        }
        try:
            stored = await record_rejection(
                self.store,
                self.failure_budget,
                rejection,
                ipn,
                excerpt_bytes=self.failure_excerpt_bytes,
            )
            if stored is None:
                metrics.REJECTIONS_DROPPED.inc()
            else:
                log.info("ipn_rejected", failure_id=stored, **context)
        except Exception as exc:  # a rejection stays a rejection even when we cannot record it
            metrics.REJECTIONS_DROPPED.inc()
            log.warning("ipn_rejection_not_recorded", error=repr(exc)[:200], **context)
        body = json.dumps({"error": rejection.reason, "detail": rejection.detail}).encode()
        await _respond(send, rejection.status_code, body, reply_headers)


def _problem(description: str, codes: Sequence[str]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {
                        "error": {"type": "string", "enum": list(codes)},
                        "detail": {"type": "string"},
                    },
                }
            }
        },
    }


def ipn_openapi_operation(path: str) -> dict[str, Any]:
    """OpenAPI for the IPN routes, which bypass FastAPI (so it cannot describe them itself)."""
    amount = {"type": ["number", "string", "null"], "description": "decimal; kept exact"}
    ident = {"type": ["integer", "string", "null"], "description": "carried on as text"}
    return {
        "post": {
            "operationId": "nowpayments_ipn" + path.replace("/", "_"),
            "summary": "NOWPayments IPN callback",
            "description": (
                "Verifies `x-nowpayments-sig` (HMAC-SHA512 of the raw body with the IPN secret; "
                "then of the provider's canonical JSON form; current or previous secret) before "
                "reading the body, stores the IPN once per (payment_id, payment_status, "
                "actually_paid, updated_at) with its `webhooks.ipn_received.v1` event, and "
                "answers. Duplicates are answered 200 and publish nothing."
            ),
            "parameters": [
                {
                    "name": "x-nowpayments-sig",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{128}$"},
                    "description": "Lowercase hex HMAC-SHA512 of the body",
                }
            ],
            "requestBody": {
                "required": True,
                "description": "At most 64 KiB (configurable); keys in any order.",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["payment_id", "payment_status"],
                            "additionalProperties": True,
                            "properties": {
                                "payment_id": ident,
                                "invoice_id": ident,
                                "payment_status": {"type": "string", "maxLength": 32},
                                "order_id": {"type": ["string", "null"], "maxLength": 100},
                                "price_amount": amount,
                                "price_currency": {"type": ["string", "null"]},
                                "pay_amount": amount,
                                "actually_paid": amount,
                                "pay_currency": {"type": ["string", "null"]},
                                "outcome_amount": amount,
                                "outcome_currency": {"type": ["string", "null"]},
                                "updated_at": {
                                    "type": ["integer", "string", "null"],
                                    "description": "epoch milliseconds, or an ISO 8601 time "
                                    "(older IPNs); carried on as epoch milliseconds",
                                },
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Stored (first delivery) or already stored (duplicate)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "string", "enum": ["accepted", "duplicate"]}
                                },
                            }
                        }
                    },
                },
                "400": _problem(
                    "Refused; nothing reaches the business flow",
                    [
                        "missing_signature",
                        "malformed_signature",
                        "invalid_signature",
                        "invalid_json",
                        "invalid_payload",
                    ],
                ),
                "403": _problem(
                    "Sender not in NOWPAYMENTS_IPN_ALLOWED_IPS (when that is set)",
                    ["source_not_allowed"],
                ),
                "413": _problem("Body over the size cap", ["body_too_large"]),
                "503": _problem("Storage unavailable; retry later (Retry-After)", ["unavailable"]),
            },
        }
    }
