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


# -- payments that need attention ----------------------------------------------------------------


def _form_value(html: str, form_id: str, name: str) -> str:
    form = html[html.index(f'id="{form_id}"') :]
    form = form[: form.index("</form>")]
    match = re.search(rf'name="{name}" value="([^"]*)"', form)
    assert match, f"{name} missing in {form_id}"
    return match.group(1)


async def test_needs_attention_page_lists_items_with_badge_and_sections(web: WebHarness) -> None:
    await web.login()
    page = await web.client.get("/admin/needs-attention")
    assert page.status_code == 200
    assert web.admin.calls[-1] == {
        "resource": "needs-attention",
        "state": "open",
        "limit": "25",
        "offset": "0",
    }
    html = page.text
    assert 'id="attention-count" aria-label="4 need attention">4</span>' in html
    assert 'href="/admin/orders/ord-7"' in html
    assert "paid after expiry &lt;b&gt;twice&lt;/b&gt;" in html  # escaped
    assert "0.00001000 btc" in html and "19.99 usd" in html
    assert ">2 h<" in html  # age of 7300 s
    assert 'id="ack-form-1"' in html and 'id="settle-form-1"' in html
    assert 'id="dead-letter-count">2<' in html and 'href="/admin/dead-letters"' in html
    assert 'href="/admin/orders/ord-under"' in html  # stuck
    # every console page carries the badge
    other = await web.client.get("/admin/payments")
    assert 'id="attention-count"' in other.text
    filtered = await web.client.get("/admin/needs-attention?state=bogus&kind=late_money")
    assert filtered.status_code == 200
    assert web.admin.calls[-1]["state"] == "open" and web.admin.calls[-1]["kind"] == "late_money"


async def test_acknowledge_sends_the_key_and_reason(web: WebHarness) -> None:
    await web.login()
    html, _ = await web.form_page("/admin/needs-attention")
    csrf = _form_value(html, "ack-form-1", "csrf_token")
    key = _form_value(html, "ack-form-1", "key")
    response = await web.client.post(
        "/admin/attention/6f1c0000-0000-4000-8000-000000000001/acknowledge",
        data={"csrf_token": csrf, "key": key, "reason": "known provider glitch"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/needs-attention"
    assert web.admin.acknowledged == [
        ("6f1c0000-0000-4000-8000-000000000001", "late:5077", "known provider glitch")
    ]
    page = await web.client.get("/admin/needs-attention")
    assert "Acknowledged: the item is off the open list. Audit entry #11." in page.text


async def test_settle_from_the_attention_item_needs_confirmation_and_sends_one_action(
    web: WebHarness,
) -> None:
    await web.login()
    html, _ = await web.form_page("/admin/needs-attention")
    assert "Only settle when you have confirmed the money arrived" in html
    form = {
        "csrf_token": _form_value(html, "settle-form-1", "csrf_token"),
        "idempotency_key": _form_value(html, "settle-form-1", "idempotency_key"),
        "back": _form_value(html, "settle-form-1", "back"),
        "reason": "bank transfer confirmed",
    }
    unconfirmed = await web.client.post("/admin/orders/ord-7/settle", data=form)
    assert unconfirmed.status_code == 303
    assert "Tick the confirmation box" in (await web.client.get("/admin/needs-attention")).text
    assert web.admin.payment_actions == []

    for _ in range(2):  # a double click sends the same form twice
        done = await web.client.post("/admin/orders/ord-7/settle", data={**form, "confirm": "yes"})
        assert done.status_code == 303
        assert done.headers["location"] == "/admin/needs-attention"
    assert web.admin.payment_actions == [
        ("settle", "ord-7", "bank transfer confirmed", form["idempotency_key"], None)
    ]
    page = await web.client.get("/admin/needs-attention")
    assert "Order ord-7 settled as paid. Audit entry #12." in page.text
    assert 'role="status" id="flash"' in page.text  # success, not an alert
    assert 'id="attention-items"' not in page.text  # the item is gone from the open list

    forged = await web.client.post(
        "/admin/orders/ord-7/settle", data={k: v for k, v in form.items() if k != "csrf_token"}
    )
    assert forged.status_code == 403


async def test_order_page_offers_settle_and_attach_with_fresh_keys(web: WebHarness) -> None:
    await web.login()
    html, _ = await web.form_page("/admin/orders/ord-1")
    assert 'id="settle-form"' in html and 'id="attach-form"' in html
    again, _ = await web.form_page("/admin/orders/ord-1")
    key = _form_value(html, "attach-form", "idempotency_key")
    assert key != _form_value(again, "attach-form", "idempotency_key")
    base = {
        "csrf_token": _form_value(html, "attach-form", "csrf_token"),
        "idempotency_key": key,
        "back": _form_value(html, "attach-form", "back"),
        "reason": "top-up in another coin",
        "confirm": "yes",
    }
    bad = await web.client.post(
        "/admin/orders/ord-1/attach-payment", data={**base, "provider_payment_id": "50x77"}
    )
    assert bad.headers["location"] == "/admin/orders/ord-1"
    assert "digits only" in (await web.client.get("/admin/orders/ord-1")).text
    assert web.admin.payment_actions == []
    ok = await web.client.post(
        "/admin/orders/ord-1/attach-payment", data={**base, "provider_payment_id": " 5077125099 "}
    )
    assert ok.headers["location"] == "/admin/orders/ord-1"
    assert web.admin.payment_actions == [
        ("attach", "ord-1", "top-up in another coin", key, "5077125099")
    ]


async def test_settle_failures_are_flashed_with_the_reason(web: WebHarness) -> None:
    await web.login()
    for order_id, expected in (
        ("ord-down", "Settle failed: the payments service is not running"),
        ("ord-refunded", "Settle failed: The payment was refunded."),
    ):
        html, _ = await web.form_page(f"/admin/orders/{order_id}")
        response = await web.client.post(
            f"/admin/orders/{order_id}/settle",
            data={
                "csrf_token": _form_value(html, "settle-form", "csrf_token"),
                "idempotency_key": _form_value(html, "settle-form", "idempotency_key"),
                "back": f"/admin/orders/{order_id}",
                "reason": "confirmed by hand",
                "confirm": "yes",
            },
        )
        assert response.headers["location"] == f"/admin/orders/{order_id}"
        page = await web.client.get(f"/admin/orders/{order_id}")
        assert expected in page.text and 'role="alert" id="flash"' in page.text
    assert web.admin.payment_actions == []
