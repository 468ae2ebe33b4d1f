"""Signed tokens, email rendering, the SMTP URL, the Resend backend (fake transport), settings."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fulfillment import domain, emails
from fulfillment.emails import EmailPermanentError, OutgoingEmail, ResendBackend
from fulfillment.links import LinkSigner, TokenProblem
from fulfillment.settings import FulfillmentSettings
from shared.settings import SecretNotConfiguredError

SECRET = "unit-test-download-secret-0123456789"


def signer(max_age: int = 3600) -> LinkSigner:
    return LinkSigner(SECRET, max_age_seconds=max_age)


def test_token_round_trip_and_determinism():
    grant = uuid.uuid4()
    issued = datetime.now(UTC)
    token = signer().token_for(grant, issued_at=issued)
    assert token == signer().token_for(grant, issued_at=issued)
    check = signer().check(token)
    assert (check.grant_id, check.problem) == (grant, None)


def flip_signature(token: str) -> str:
    # The first signature character carries six real bits; the last one partly padding, so
    # changing it can leave the decoded signature unchanged.
    head, sig = token.rsplit(".", 1)
    return f"{head}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"


def test_tampered_foreign_and_oversized_tokens_are_invalid():
    grant = uuid.uuid4()
    token = signer().token_for(grant, issued_at=datetime.now(UTC))
    other = LinkSigner("another-secret-entirely-0123456", max_age_seconds=3600)
    for bad in (
        flip_signature(token),
        token.replace(".", "x.", 1),  # payload changed
        token[:-5],
        other.token_for(grant, issued_at=datetime.now(UTC)),
        "x" * 600,
        "",
    ):
        check = signer().check(bad)
        assert (check.grant_id, check.problem) == (None, TokenProblem.INVALID)


def test_token_older_than_the_ceiling_is_expired_but_still_names_its_grant():
    grant = uuid.uuid4()
    token = signer().token_for(grant, issued_at=datetime.now(UTC) - timedelta(hours=2))
    check = signer(max_age=3600).check(token)
    assert (check.grant_id, check.problem) == (grant, TokenProblem.EXPIRED)


def settings(**overrides) -> FulfillmentSettings:
    base = {"download_token_secret": SECRET, "public_url": "https://dl.example"}
    return FulfillmentSettings(**{**base, **overrides})


def test_rendered_email_escapes_html_and_carries_the_link():
    email = emails.render(
        domain.TEMPLATE_ORDER_COMPLETED,
        {
            "items": [{"title": "<script>alert(1)</script>", "quantity": 2}],
            "max_downloads": 5,
        },
        order_id="ord_1",
        recipient="carol@example.com",
        idempotency_key="ord_1:order_completed",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        settings=settings(),
        extra={
            "link": "https://dl.example/downloads/T",
            "reissue_url": "https://dl.example/r",
            "expires_at": "tomorrow",
        },
    )
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html
    assert "https://dl.example/downloads/T" in email.text
    assert 'href="https://dl.example/downloads/T"' in email.html
    mime = email.to_mime()
    assert mime["Message-ID"] == email.message_id
    assert email.message_id.endswith("@bitloot.local>")


def _render(template: str, context: dict) -> OutgoingEmail:
    return emails.render(
        template,
        context,
        order_id="ord_9",
        recipient="carol@example.com",
        idempotency_key=f"ord_9:{template}",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        settings=settings(),
    )


def test_refund_email_says_the_link_no_longer_works_only_when_one_was_sent():
    delivered = _render(domain.TEMPLATE_PAYMENT_REFUNDED, {"delivered": True})
    assert delivered.subject == "Your payment for BitLoot order ord_9 was refunded"
    for body in (delivered.text, delivered.html):
        assert "was refunded" in body and "no longer works" in body
        assert "/downloads/" not in body  # no link, not even the dead one
    never = _render(domain.TEMPLATE_PAYMENT_REFUNDED, {"delivered": False})
    assert "no longer works" not in never.text
    assert "Nothing was delivered" in never.text and "Nothing was delivered" in never.html


def test_underpaid_email_names_the_top_up():
    email = _render(
        domain.TEMPLATE_UNDERPAID,
        {"actually_paid": "0.1", "pay_amount": "0.3", "pay_currency": "BTC"},
    )
    for body in (email.text, email.html):
        assert "same payment address" in body and "not refunded" in body
    assert "0.1 of 0.3 BTC" in email.text


def test_smtp_url_parsing():
    plain = emails.parse_smtp_url("smtp://127.0.0.1:1025")
    assert (plain.host, plain.port, plain.implicit_tls, plain.starttls) == (
        "127.0.0.1",
        1025,
        False,
        False,
    )
    secure = emails.parse_smtp_url("smtps://user%40x:p%3Ass@mail.example")
    assert (secure.port, secure.implicit_tls, secure.username, secure.password) == (
        465,
        True,
        "user@x",
        "p:ss",
    )
    assert emails.parse_smtp_url("smtp://m:587?starttls=true").starttls
    with pytest.raises(ValueError, match="SMTP_URL"):
        emails.parse_smtp_url("http://nope")


def _email() -> OutgoingEmail:
    return OutgoingEmail(
        to="carol@example.com",
        sender="BitLoot <no-reply@bitloot.local>",
        subject="s",
        text="t",
        html="<p>h</p>",
        idempotency_key="ord_1:order_completed",
        date=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_resend_sends_the_idempotency_key_and_reads_the_id():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "re_123"})

    backend = ResendBackend("re_key", transport=httpx.MockTransport(handler))
    assert await backend.send(_email()) == "re_123"
    await backend.aclose()
    [request] = seen
    assert request.url == "https://api.resend.com/emails"
    assert request.headers["Idempotency-Key"] == "ord_1:order_completed"
    assert request.headers["Authorization"] == "Bearer re_key"
    body = json.loads(request.content)
    assert body["to"] == ["carol@example.com"] and body["text"] == "t"


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (429, False), (409, False), (422, True), (401, True)]
)
async def test_resend_errors_are_classified(status, permanent):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"name": "some_error", "message": "m"})

    backend = ResendBackend("re_key", transport=httpx.MockTransport(handler))
    with pytest.raises(RuntimeError) as info:
        await backend.send(_email())
    await backend.aclose()
    assert isinstance(info.value, EmailPermanentError) is permanent
    assert "re_key" not in str(info.value)


@pytest.mark.parametrize("value", [None, "", "changeme", "replace-me"])
def test_missing_or_placeholder_token_secret_fails_fast_naming_the_variable(value):
    with pytest.raises(SecretNotConfiguredError, match="DOWNLOAD_TOKEN_SECRET"):
        FulfillmentSettings(download_token_secret=value).check()


def test_resend_backend_needs_its_key():
    with pytest.raises(SecretNotConfiguredError, match="RESEND_API_KEY"):
        settings(email_backend="resend").check()
    settings(email_backend="resend", resend_api_key="re_live_key").check()


def test_settings_read_the_global_environment_names(monkeypatch):
    monkeypatch.setenv("DOWNLOAD_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("EMAIL_BACKEND", "file")
    monkeypatch.setenv("S3_BUCKET", "b-1")
    monkeypatch.setenv("FULFILLMENT_DOWNLOAD_CAP", "9")
    monkeypatch.setenv("FULFILLMENT_PUBLIC_URL", "https://dl.example")
    s = FulfillmentSettings()
    assert (s.email_backend, s.s3_bucket, s.download_cap, s.public_url) == (
        "file",
        "b-1",
        9,
        "https://dl.example",
    )
    assert SECRET not in repr(s)


def test_empty_endpoint_means_aws_itself():
    s = settings(s3_endpoint_url="", s3_public_endpoint_url=" ")
    assert (s.s3_endpoint_url, s.s3_public_endpoint_url) == (None, None)
