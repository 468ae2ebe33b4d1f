"""Headers, cookies and settings that keep the web app safe by default."""

from __future__ import annotations

import pytest
from shared.settings import SecretNotConfiguredError
from web.main import create_app
from web.security import Signer

from .conftest import EMULATOR, WebHarness, make_settings


async def test_storefront_csp_allows_the_provider_only_as_a_form_target(web: WebHarness) -> None:
    response = await web.client.get("/products/game-key")
    csp = response.headers["content-security-policy"]
    directives = dict(
        ([*part.strip().split(" ", 1), ""])[:2] for part in csp.split(";") if part.strip()
    )
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["form-action"].split() == ["'self'", "https://nowpayments.io", EMULATOR]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-store"


async def test_console_csp_keeps_forms_on_our_origin(web: WebHarness) -> None:
    response = await web.client.get("/admin/login")
    assert "form-action 'self';" in response.headers["content-security-policy"]


async def test_pages_have_no_inline_script_or_style(web: WebHarness) -> None:
    for path in ("/", "/products/game-key", "/admin/login", "/no-such-page"):
        html = (await web.client.get(path)).text
        assert "<script>" not in html
        assert "<style" not in html
        assert " style=" not in html
        assert " onclick=" not in html


async def test_error_pages_carry_the_headers_too(web: WebHarness) -> None:
    response = await web.client.get("/no-such-page")
    assert response.status_code == 404
    assert "Page not found" in response.text
    assert "content-security-policy" in response.headers


async def test_health(web: WebHarness) -> None:
    response = await web.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_static_files_are_served(web: WebHarness) -> None:
    css = await web.client.get("/static/style.css")
    js = await web.client.get("/static/order-status.js")
    assert css.status_code == js.status_code == 200
    assert ":focus-visible" in css.text
    assert "data-status-url" in js.text


def test_the_app_refuses_to_start_without_a_session_secret() -> None:
    with pytest.raises(SecretNotConfiguredError):
        create_app(make_settings(WEB_SESSION_SECRET="changeme"))


def test_signed_values_are_bound_to_their_purpose() -> None:
    signer = Signer("k" * 32)
    token = signer.sign("order:ord-1", "tok")
    assert signer.unsign("order:ord-1", token, 60) == "tok"
    assert signer.unsign("order:ord-2", token, 60) is None
    assert signer.unsign("order:ord-1", token + "x", 60) is None
    assert Signer("other" * 8).unsign("order:ord-1", token, 60) is None


def test_cookies_are_secure_behind_https() -> None:
    assert make_settings(STOREFRONT_URL="https://shop.example").cookie_secure
    assert not make_settings(STOREFRONT_URL="http://127.0.0.1:8000").cookie_secure
