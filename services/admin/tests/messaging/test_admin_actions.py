"""Operator actions over NATS request-reply, answered by fake responders on a test broker."""

from __future__ import annotations

import pytest
from admin.projections import project_ipn_received, project_order
from shared.contracts.fulfillment import RevokeGrantsReply, RevokeGrantsRequest
from shared.contracts.webhooks import ReprocessReply, ReprocessRequest
from shared.messaging import Delivery

from ..conftest import PASSWORD, AdminApi, auth, ipn_received, order_created


async def _seed_log(api: AdminApi, webhook_log_id: int) -> None:
    event = ipn_received(webhook_log_id)
    async with api.ctx.sessions() as session, session.begin():
        await project_ipn_received(session, event, Delivery(event.SUBJECT, 1, 1))


async def test_reprocess_reaches_webhooks_with_operator_and_reason_and_is_audited(
    admin_api: AdminApi, responder
):
    operator = await admin_api.user("operator", "olga")
    await _seed_log(admin_api, 5)
    received: list[ReprocessRequest] = []

    async def answer(request: ReprocessRequest) -> ReprocessReply:
        received.append(request)
        return ReprocessReply(ok=True, event_id="3f9c7d1e-0000-4000-8000-000000000001")

    await responder(ReprocessRequest, answer, "webhooks")
    response = await admin_api.client.post(
        "/admin/webhook-logs/a-5/reprocess",
        json={"reason": "  IPN lost at the proxy "},
        headers=auth(operator),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["ok"] is True and body["event_id"] == "3f9c7d1e-0000-4000-8000-000000000001"
    assert body["message"].startswith("reprocess queued")

    [request] = received
    assert (request.webhook_log_id, request.operator_id, request.reason) == (
        5,
        operator.id,
        "IPN lost at the proxy",
    )
    assert request.correlation_id == response.headers["x-correlation-id"]

    [entry] = await admin_api.audit("webhook.reprocess")
    assert (entry.actor_id, entry.actor_username, entry.target_id, entry.reason, entry.outcome) == (
        operator.id,
        "olga",
        "a-5",
        "IPN lost at the proxy",
        "ok",
    )
    assert entry.detail["event_id"] == body["event_id"] and entry.completed_at is not None
    assert body["audit_id"] == entry.id

    listed = await admin_api.client.get(
        "/admin/audit", params={"action": "webhook.reprocess"}, headers=auth(operator)
    )
    [item] = listed.json()["items"]
    assert (item["actor_username"], item["target_id"], item["outcome"]) == ("olga", "a-5", "ok")


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (
            ReprocessReply(
                ok=False,
                error_code="unprocessable",
                error_message="payment 5077125051 is already final (finished); nothing changed",
            ),
            409,
        ),
        (
            ReprocessReply(
                ok=False, error_code="not_found", error_message="webhook_log 6 does not exist"
            ),
            404,
        ),
        (
            ReprocessReply(
                ok=False, error_code="unavailable", error_message="database unavailable"
            ),
            503,
        ),
    ],
)
async def test_the_reply_message_reaches_the_operator(
    admin_api: AdminApi, responder, reply, status
):
    operator = await admin_api.user("operator")
    await _seed_log(admin_api, 6)

    async def answer(request: ReprocessRequest) -> ReprocessReply:
        return reply

    await responder(ReprocessRequest, answer, "webhooks")
    response = await admin_api.client.post(
        "/admin/webhook-logs/a-6/reprocess", json={"reason": "check"}, headers=auth(operator)
    )
    assert response.status_code == status
    body = response.json()
    assert (body["ok"], body["message"], body["detail"]) == (
        False,
        reply.error_message,
        reply.error_message,
    )
    assert body["error_code"] == reply.error_code
    [entry] = await admin_api.audit("webhook.reprocess")
    assert entry.outcome == ("unavailable" if status == 503 else "refused")
    assert entry.detail["message"] == reply.error_message


async def test_reprocess_when_webhooks_does_not_answer_is_503_and_audited(admin_api: AdminApi):
    operator = await admin_api.user("operator")
    await _seed_log(admin_api, 8)
    response = await admin_api.client.post(
        "/admin/webhook-logs/a-8/reprocess", json={"reason": "retry"}, headers=auth(operator)
    )
    assert response.status_code == 503
    assert "did not answer" in response.json()["detail"]
    [entry] = await admin_api.audit("webhook.reprocess")
    assert entry.outcome == "unavailable"


@pytest.mark.parametrize(
    ("log_id", "body", "status", "field"),
    [
        ("a-9", {}, 422, "reason"),
        ("a-9", {"reason": ""}, 422, "reason"),
        ("a-9", {"reason": "   "}, 422, "reason"),
        ("a-9", {"reason": "x" * 501}, 422, "reason"),
        ("a-9", {"reason": "ok", "extra": 1}, 422, "extra"),
        ("r-11", {"reason": "ok"}, 409, None),
        ("a-404", {"reason": "ok"}, 404, None),
        ("zz-1", {"reason": "ok"}, 422, "id"),
    ],
)
async def test_bad_reprocess_requests_change_nothing(
    admin_api: AdminApi, responder, log_id, body, status, field
):
    operator = await admin_api.user("operator")
    await _seed_log(admin_api, 9)
    received: list[ReprocessRequest] = []

    async def answer(request: ReprocessRequest) -> ReprocessReply:
        received.append(request)
        return ReprocessReply(ok=True)

    await responder(ReprocessRequest, answer, "webhooks")
    response = await admin_api.client.post(
        f"/admin/webhook-logs/{log_id}/reprocess", json=body, headers=auth(operator)
    )
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if field is not None:
        assert detail[0]["loc"][-1] == field
    else:
        assert isinstance(detail, str) and detail
    assert received == []
    assert await admin_api.audit("webhook.reprocess") == []


async def test_revoke_downloads_asks_fulfillment_and_is_audited(admin_api: AdminApi, responder):
    operator = await admin_api.user("operator", "pat")
    created = order_created("ord-rv")
    async with admin_api.ctx.sessions() as session, session.begin():
        await project_order(session, created, Delivery(created.SUBJECT, 1, 1))
    received: list[RevokeGrantsRequest] = []

    async def answer(request: RevokeGrantsRequest) -> RevokeGrantsReply:
        received.append(request)
        return RevokeGrantsReply(ok=True, revoked=2)

    await responder(RevokeGrantsRequest, answer, "fulfillment")
    response = await admin_api.client.post(
        "/admin/orders/ord-rv/revoke-downloads",
        json={"reason": "chargeback"},
        headers=auth(operator),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["ok"], body["revoked"]) == (True, 2)
    assert body["message"] == "2 download link(s) revoked"
    [request] = received
    assert (request.order_id, request.operator_id, request.reason) == (
        "ord-rv",
        operator.id,
        "chargeback",
    )
    [entry] = await admin_api.audit("order.revoke_downloads")
    assert (entry.actor_username, entry.target_id, entry.outcome, entry.detail["revoked"]) == (
        "pat",
        "ord-rv",
        "ok",
        2,
    )

    unknown = await admin_api.client.post(
        "/admin/orders/nope/revoke-downloads", json={"reason": "x"}, headers=auth(operator)
    )
    assert unknown.status_code == 404
    assert len(received) == 1


async def test_a_cookie_session_cannot_be_driven_by_a_plain_form_post(
    admin_api: AdminApi, responder
):
    """SameSite=strict still lets same-site pages (another port of this host) send the cookie;
    a form can only send form or text bodies, and write routes accept JSON only."""
    await admin_api.user("operator", "quinn")
    await _seed_log(admin_api, 12)
    received: list[ReprocessRequest] = []

    async def answer(request: ReprocessRequest) -> ReprocessReply:
        received.append(request)
        return ReprocessReply(ok=True)

    await responder(ReprocessRequest, answer, "webhooks")
    login = await admin_api.client.post(
        "/admin/login", json={"username": "quinn", "password": PASSWORD}
    )
    assert login.status_code == 200 and "bitloot_admin" in admin_api.client.cookies
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        forged = await admin_api.client.post(
            "/admin/webhook-logs/a-12/reprocess",
            content=b'{"reason": "csrf"}',
            headers={"Content-Type": content_type},
        )
        assert forged.status_code == 422, forged.text
    assert received == []
    assert await admin_api.audit("webhook.reprocess") == []
    done = await admin_api.client.post(
        "/admin/webhook-logs/a-12/reprocess", json={"reason": "real"}
    )
    assert done.status_code == 202 and len(received) == 1
