"""Admin console against a fake admin gateway: session, lists, detail, reprocess, errors."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from .conftest import ADMIN_JWT, WebHarness


async def test_console_pages_need_a_session(web: WebHarness) -> None:
    response = await web.client.get("/admin/payments?status=finished")
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert target.path == "/admin/login"
    assert parse_qs(target.query)["next"] == ["/admin/payments?status=finished"]
    assert web.admin.calls == []


async def test_login_sets_an_httponly_session_cookie_and_follows_next(web: WebHarness) -> None:
    _, csrf = await web.form_page("/admin/login?next=/admin/audit")
    response = await web.client.post(
        "/admin/login",
        data={
            "csrf_token": csrf,
            "username": "ops",
            "password": "correct horse",
            "next": "/admin/audit",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/audit"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("bl_admin="))
    assert "HttpOnly" in cookie
    assert "Path=/admin" in cookie
    assert "samesite=strict" in cookie.lower()
    page = await web.client.get("/admin/audit")
    assert page.status_code == 200
    assert 'Signed in as <strong id="operator-name">ops</strong>' in page.text
    assert ADMIN_JWT not in page.text


async def test_wrong_password_is_refused_without_a_cookie(web: WebHarness) -> None:
    _, csrf = await web.form_page("/admin/login")
    response = await web.client.post(
        "/admin/login", data={"csrf_token": csrf, "username": "ops", "password": "guess"}
    )
    assert response.status_code == 401
    assert "Wrong username or password" in response.text
    assert not any(c.startswith("bl_admin=") for c in response.headers.get_list("set-cookie"))
    assert (await web.client.get("/admin/payments")).status_code == 303


async def test_rate_limited_login_says_when_to_retry(web: WebHarness) -> None:
    _, csrf = await web.form_page("/admin/login")
    response = await web.client.post(
        "/admin/login", data={"csrf_token": csrf, "username": "locked", "password": "x"}
    )
    assert response.status_code == 429
    assert "Too many sign-in attempts. Try again in 30 seconds." in response.text


async def test_login_without_csrf_is_refused(web: WebHarness) -> None:
    await web.client.get("/admin/login")
    response = await web.client.post(
        "/admin/login", data={"username": "ops", "password": "correct horse"}
    )
    assert response.status_code == 403


async def test_next_cannot_point_outside_the_console(web: WebHarness) -> None:
    _, csrf = await web.form_page("/admin/login")
    for evil in ("https://evil.example/", "//evil.example/admin", "/\\evil.example"):
        response = await web.client.post(
            "/admin/login",
            data={"csrf_token": csrf, "username": "ops", "password": "correct horse", "next": evil},
        )
        assert response.headers["location"] == "/admin/payments"


async def test_list_forwards_filters_and_paginates(web: WebHarness) -> None:
    await web.login()
    response = await web.client.get(
        "/admin/payments?status=finished&order_id=ord-7&bogus=1&limit=25&offset=25"
    )
    assert response.status_code == 200
    call = web.admin.calls[-1]
    assert call == {
        "resource": "payments",
        "status": "finished",
        "order_id": "ord-7",
        "limit": "25",
        "offset": "25",
    }
    assert "Showing 26 to 50 of 60" in response.text
    prev = re.search(r'id="prev-page" href="([^"]+)"', response.text)
    nxt = re.search(r'id="next-page" href="([^"]+)"', response.text)
    assert prev and nxt
    assert parse_qs(urlsplit(prev.group(1).replace("&amp;", "&")).query)["offset"] == ["0"]
    next_query = parse_qs(urlsplit(nxt.group(1).replace("&amp;", "&")).query)
    assert next_query["offset"] == ["50"]
    assert next_query["status"] == ["finished"]
    # the selected filter stays selected
    assert '<option value="finished" selected>' in response.text
    # a payment row links to its webhook logs
    assert "/admin/webhook-logs?external_id=5000000025" in response.text


async def test_last_page_has_no_next_link_and_limits_are_clamped(web: WebHarness) -> None:
    await web.login()
    response = await web.client.get("/admin/orders?limit=500&offset=-4")
    assert web.admin.calls[-1]["limit"] == "100"
    assert web.admin.calls[-1]["offset"] == "0"
    assert 'id="next-page"' not in response.text
    assert 'id="prev-page"' not in response.text
    assert "Showing 1 to 60 of 60" in response.text


async def test_every_list_page_renders(web: WebHarness) -> None:
    await web.login()
    for slug in ("payments", "orders", "webhook-logs", "dead-letters", "audit"):
        response = await web.client.get(f"/admin/{slug}")
        assert response.status_code == 200, slug
        assert 'id="results"' in response.text
        assert "Showing 1 to 25 of 60" in response.text
        assert web.admin.calls[-1]["resource"] == slug


async def test_expired_token_sends_the_operator_back_to_login(web: WebHarness) -> None:
    await web.login()
    web.admin.expire_tokens = True
    response = await web.client.get("/admin/webhook-logs")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/admin/login?")
    assert "expired=1" in response.headers["location"]
    assert any(
        c.startswith("bl_admin=") and "Max-Age=0" in c
        for c in response.headers.get_list("set-cookie")
    )


async def test_forbidden_is_a_friendly_page(web: WebHarness) -> None:
    await web.login()
    web.admin.forbid = True
    response = await web.client.get("/admin/audit")
    assert response.status_code == 403
    assert "Not allowed" in response.text


async def test_webhook_detail_escapes_the_raw_body(web: WebHarness) -> None:
    await web.login()
    response = await web.client.get("/admin/webhook-logs/42")
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert 'id="raw-body"' in response.text
    assert "x-nowpayments-sig" in response.text
    assert 'id="reprocess-form"' in response.text


async def test_missing_webhook_log_is_404(web: WebHarness) -> None:
    await web.login()
    response = await web.client.get("/admin/webhook-logs/missing")
    assert response.status_code == 404


async def test_reprocess_sends_the_reason_and_shows_the_result(web: WebHarness) -> None:
    await web.login()
    _, csrf = await web.form_page("/admin/webhook-logs/42")
    response = await web.client.post(
        "/admin/webhook-logs/42/reprocess",
        data={"csrf_token": csrf, "reason": "IPN arrived before the payment row"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/webhook-logs/42"
    assert web.admin.reprocessed == [("42", "IPN arrived before the payment row")]
    page = await web.client.get("/admin/webhook-logs/42")
    assert "Reprocess queued. Event evt-42. Audit entry #7." in page.text
    # one-shot: the next view has no message
    again = await web.client.get("/admin/webhook-logs/42")
    assert "Reprocess queued" not in again.text


async def test_reprocess_needs_a_reason_and_a_csrf_token(web: WebHarness) -> None:
    await web.login()
    _, csrf = await web.form_page("/admin/webhook-logs/42")
    short = await web.client.post(
        "/admin/webhook-logs/42/reprocess", data={"csrf_token": csrf, "reason": " x "}
    )
    assert short.status_code == 303
    assert "Give a reason" in (await web.client.get("/admin/webhook-logs/42")).text
    forged = await web.client.post(
        "/admin/webhook-logs/42/reprocess", data={"reason": "a good reason"}
    )
    assert forged.status_code == 403
    assert web.admin.reprocessed == []


async def test_reprocess_outage_is_reported_not_crashed(web: WebHarness) -> None:
    await web.login()
    _, csrf = await web.form_page("/admin/webhook-logs/a-busy")
    response = await web.client.post(
        "/admin/webhook-logs/a-busy/reprocess", data={"csrf_token": csrf, "reason": "retry it"}
    )
    assert response.status_code == 303
    page = await web.client.get("/admin/webhook-logs/a-busy")
    assert "Reprocess failed: webhooks did not answer" in page.text


async def test_rejected_callbacks_offer_no_reprocess(web: WebHarness) -> None:
    await web.login()
    page = await web.client.get("/admin/webhook-logs/r-9")
    assert 'id="reprocess-form"' not in page.text
    assert 'id="cannot-reprocess"' in page.text


async def test_webhook_detail_shows_what_the_callback_caused(web: WebHarness) -> None:
    await web.login()
    page = await web.client.get("/admin/webhook-logs/a-1")
    assert "Caused: transitions" in page.text
    assert "Caused by this" in page.text


async def test_order_detail_and_revoke_downloads(web: WebHarness) -> None:
    await web.login()
    html, csrf = await web.form_page("/admin/orders/ord-1")
    assert "Events" in html
    assert "order_paid" in html
    assert 'href="/admin/payments?order_id=ord-1"' in html
    response = await web.client.post(
        "/admin/orders/ord-1/revoke-downloads", data={"csrf_token": csrf, "reason": "chargeback"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/orders/ord-1"
    page = await web.client.get("/admin/orders/ord-1")
    assert "Revoked 1 link of ord-1. Audit entry #9." in page.text


async def test_payment_detail_links_to_its_webhook_logs(web: WebHarness) -> None:
    await web.login()
    page = await web.client.get("/admin/payments/pay-1")
    assert page.status_code == 200
    assert 'href="/admin/webhook-logs?external_id=5000000001"' in page.text
    missing = await web.client.get("/admin/payments/missing")
    assert missing.status_code == 404


async def test_logout_ends_the_session(web: WebHarness) -> None:
    await web.login()
    _, csrf = await web.form_page("/admin/payments")
    response = await web.client.post("/admin/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert (await web.client.get("/admin/payments")).status_code == 303
