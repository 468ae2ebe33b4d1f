"""NATS request-reply between services (commands and queries that need an answer now).

Responders run in the answering service's worker with a queue group, so replicas share the load.
A request that nobody answers in time raises ``ServiceUnavailableError``; callers turn that into
a 503/502 with a clear message and change nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.nats import NatsBroker
from pydantic import ValidationError

from shared.contracts.envelope import Reply, Request
from shared.messaging.consumer import current_message
from shared.observability import CORRELATION_HEADER, current_correlation_id, get_logger

log = get_logger(__name__)

Req = TypeVar("Req", bound=Request)
Rep = TypeVar("Rep", bound=Reply)


class ServiceUnavailableError(RuntimeError):
    """No responder answered (service down, NATS down, or timeout)."""


def register_responder(
    broker: NatsBroker,
    request_type: type[Req],
    handler: Callable[[Req], Awaitable[Reply]],
    *,
    queue: str,
    description: str | None = None,
) -> Any:
    subscriber = broker.subscriber(
        request_type.SUBJECT,
        queue=queue,
        title=f"{queue}:{request_type.SUBJECT}",
        description=description or f"answers {request_type.__name__}",
    )

    async def respond(body: bytes) -> bytes:
        try:
            request = request_type.model_validate_json(body)
        except ValidationError as exc:
            reply = Reply(ok=False, error_code="invalid_request", error_message=str(exc)[:500])
            return reply.model_dump_json().encode()
        try:
            reply = await handler(request)
        except Exception as exc:  # answer with a reason instead of letting the caller time out
            log.exception("responder_failed", subject=request_type.SUBJECT)
            reply = Reply(ok=False, error_code="internal_error", error_message=type(exc).__name__)
        return reply.model_dump_json().encode()

    # FastStream decodes JSON bodies by default; take the raw bytes and validate ourselves.
    # No injected parameter: resolving one costs a worker-thread hop (see consumer.handle).
    async def entry() -> bytes:
        return await respond(current_message(broker).body)

    subscriber(entry)
    return subscriber


async def request(
    broker: NatsBroker, payload: Request, reply_type: type[Rep], *, timeout: float = 10.0
) -> Rep:
    headers = {}
    if cid := (payload.correlation_id or current_correlation_id()):
        headers[CORRELATION_HEADER] = cid
    try:
        response = await broker.request(
            payload.model_dump_json().encode(),
            subject=payload.SUBJECT,
            headers=headers,
            timeout=timeout,
        )
    except Exception as exc:
        raise ServiceUnavailableError(
            f"{payload.SUBJECT} did not answer: {type(exc).__name__}"
        ) from exc
    body: bytes = response.body
    try:
        return reply_type.model_validate_json(body)
    except ValidationError:
        generic = Reply.model_validate_json(body)  # an error reply from register_responder
        return reply_type(
            ok=False, error_code=generic.error_code, error_message=generic.error_message
        )
