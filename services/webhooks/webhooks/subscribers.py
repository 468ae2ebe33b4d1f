"""Worker side of the webhooks service: the ``webhooks.reprocess`` responder and the job that
keeps ``webhook_failure`` under its size cap. The outbox relay comes from shared.runtime."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.contracts.webhooks import ReprocessReply, ReprocessRequest
from shared.db import is_connection_error
from shared.messaging.rpc import register_responder
from shared.observability import get_logger
from shared.runtime import BackgroundJob, ServiceContext

from webhooks import metrics, repository, service
from webhooks.errors import ReplayUnavailableError
from webhooks.settings import WebhooksSettings

log = get_logger(__name__)


def register(ctx: ServiceContext) -> Any:
    async def answer_reprocess(request: ReprocessRequest) -> ReprocessReply:
        try:
            async with ctx.sessions() as session, session.begin():
                event = await service.reprocess(session, request)
        except ReplayUnavailableError as exc:
            return ReprocessReply(ok=False, error_code="unprocessable", error_message=str(exc))
        except Exception as exc:
            if is_connection_error(exc):
                return ReprocessReply(
                    ok=False, error_code="unavailable", error_message="database unavailable"
                )
            raise  # the responder wrapper answers internal_error and logs the trace
        if event is None:
            return ReprocessReply(
                ok=False,
                error_code="not_found",
                error_message=f"webhook_log {request.webhook_log_id} does not exist",
            )
        log.info(
            "ipn_replayed",
            webhook_log_id=request.webhook_log_id,
            event_id=str(event.event_id),
            operator_id=request.operator_id,
        )
        return ReprocessReply(ok=True, event_id=str(event.event_id))

    return register_responder(
        ctx.broker,
        ReprocessRequest,
        answer_reprocess,
        queue="webhooks",
        description="re-publish a stored IPN as a new ipn_received event (replay)",
    )


def prune_failures_job(settings: WebhooksSettings) -> BackgroundJob:
    async def job(ctx: ServiceContext) -> None:
        while True:
            try:
                async with ctx.sessions() as session, session.begin():
                    deleted = await repository.prune_failures(session, settings.failure_rows_max)
                if deleted:
                    metrics.FAILURES_PRUNED.inc(deleted)
                    log.info("webhook_failures_pruned", deleted=deleted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be down; try again next round
                log.warning("webhook_failure_prune_failed", error=repr(exc)[:200])
            await asyncio.sleep(settings.failure_prune_seconds)

    return job
