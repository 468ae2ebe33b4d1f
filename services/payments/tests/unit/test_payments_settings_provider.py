"""Start-up checks against the real provider, the account login variables, trimmed secrets."""

from __future__ import annotations

import pytest
from payments.main import build_client
from payments.settings import PaymentsSettings, unreachable_from_internet
from shared.settings import SecretNotConfiguredError

REAL = "https://api.nowpayments.io/v1"
SANDBOX = "https://api-sandbox.nowpayments.io/v1"
PUBLIC_HOOK = "https://shop.example.com/webhooks/nowpayments"
READY = {
    "nowpayments_api_key": "live-key-0123",
    "nowpayments_email": "merchant@shop.example.com",
    "nowpayments_password": "pw-0123-secret",
    "nowpayments_callback_url": PUBLIC_HOOK,
}


@pytest.mark.parametrize("base", [REAL, SANDBOX])
def test_a_complete_real_configuration_passes(base: str) -> None:
    settings = PaymentsSettings(nowpayments_base=base, **READY)
    assert settings.provider_is_real
    assert settings.check_real_provider() == []
    settings.require_ready_for_provider()
    client = build_client(settings)
    assert client.has_credentials


def test_the_emulator_needs_none_of_it() -> None:
    settings = PaymentsSettings(nowpayments_base="http://127.0.0.1:8010/v1")
    assert not settings.provider_is_real
    assert settings.check_real_provider() == []
    settings.require_ready_for_provider()


def test_every_missing_item_is_named_in_one_message_without_values() -> None:
    settings = PaymentsSettings(
        nowpayments_base=SANDBOX,
        nowpayments_callback_url="http://127.0.0.1:8002/webhooks/nowpayments",
        nowpayments_api_key="changeme",
    )
    problems = settings.check_real_provider()
    text = " | ".join(problems)
    for name in (
        "NOWPAYMENTS_CALLBACK_URL must be an https://",
        "NOWPAYMENTS_CALLBACK_URL host 127.0.0.1",
        "NOWPAYMENTS_API_KEY",
        "NOWPAYMENTS_EMAIL",
        "NOWPAYMENTS_PASSWORD",
    ):
        assert name in text
    assert len(problems) == 5
    with pytest.raises(SecretNotConfiguredError) as caught:
        settings.require_ready_for_provider()
    message = str(caught.value)
    assert all(problem in message for problem in problems)
    assert "changeme" not in message
    # The worker factory runs the check before building the client.
    with pytest.raises(SecretNotConfiguredError, match="NOWPAYMENTS_EMAIL"):
        build_client(settings)


def test_values_never_appear_in_the_failure() -> None:
    settings = PaymentsSettings(
        nowpayments_base=REAL,
        **(READY | {"nowpayments_email": "", "nowpayments_callback_url": "https://10.0.0.5/h"}),
    )
    with pytest.raises(SecretNotConfiguredError) as caught:
        settings.require_ready_for_provider()
    message = str(caught.value)
    assert "NOWPAYMENTS_EMAIL" in message and "NOWPAYMENTS_CALLBACK_URL" in message
    assert READY["nowpayments_password"] not in message
    assert READY["nowpayments_api_key"] not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/webhooks/nowpayments",
        "https://LOCALHOST:8443/h",
        "https://127.0.0.1/h",
        "https://127.5.5.5/h",
        "https://10.1.2.3/h",
        "https://172.16.0.9/h",
        "https://192.168.1.20/h",
        "https://169.254.169.254/h",
        "https://0.0.0.0/h",
        "https://[::1]/h",
        "https://[fd00::1]/h",
        "https://[fe80::1]/h",
        "https://[::ffff:127.0.0.1]/h",
        "https://webhooks.localhost/h",
        "https://gateway.internal/h",
        "https://printer.local/h",
        "https:///no-host",
    ],
)
def test_callback_urls_the_provider_cannot_reach(url: str) -> None:
    assert unreachable_from_internet(url) is not None
    settings = PaymentsSettings(
        nowpayments_base=REAL, **(READY | {"nowpayments_callback_url": url})
    )
    assert any("NOWPAYMENTS_CALLBACK_URL" in p for p in settings.check_real_provider())


@pytest.mark.parametrize(
    "url", [PUBLIC_HOOK, "https://8.8.8.8/h", "https://[2001:4860::8888]/", "https://shop.io:8443/"]
)
def test_public_callback_urls_pass(url: str) -> None:
    assert unreachable_from_internet(url) is None
    settings = PaymentsSettings(
        nowpayments_base=REAL, **(READY | {"nowpayments_callback_url": url})
    )
    assert settings.check_real_provider() == []


def test_plain_http_to_a_public_host_is_still_refused() -> None:
    settings = PaymentsSettings(
        nowpayments_base=REAL,
        **(READY | {"nowpayments_callback_url": "http://shop.example.com/webhooks/nowpayments"}),
    )
    assert settings.check_real_provider() == [
        "NOWPAYMENTS_CALLBACK_URL must be an https:// URL the provider can reach"
    ]


def test_login_and_secrets_come_from_the_global_names_trimmed(monkeypatch) -> None:
    monkeypatch.setenv("NOWPAYMENTS_BASE", f" {SANDBOX}/ ")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "  real-looking-key\n")
    monkeypatch.setenv("NOWPAYMENTS_EMAIL", " merchant@shop.example.com ")
    monkeypatch.setenv("NOWPAYMENTS_PASSWORD", "\tpw with spaces inside \n")
    monkeypatch.setenv("NOWPAYMENTS_CALLBACK_URL", f"{PUBLIC_HOOK}\n")
    monkeypatch.setenv("PAYMENTS_JWT_LIFETIME_SECONDS", "120")
    settings = PaymentsSettings()
    assert settings.nowpayments_base == SANDBOX
    assert settings.api_key().get_secret_value() == "real-looking-key"
    assert settings.nowpayments_email == "merchant@shop.example.com"
    assert settings.nowpayments_password is not None
    assert settings.nowpayments_password.get_secret_value() == "pw with spaces inside"
    assert settings.nowpayments_callback_url == PUBLIC_HOOK
    assert settings.jwt_lifetime_seconds == 120
    assert "pw with spaces" not in repr(settings) and "real-looking-key" not in repr(settings)
    assert settings.check_real_provider() == []


def test_a_blank_password_counts_as_missing() -> None:
    settings = PaymentsSettings(nowpayments_base=REAL, **(READY | {"nowpayments_password": "   "}))
    assert settings.nowpayments_password is None
    assert settings.check_real_provider() == ["NOWPAYMENTS_PASSWORD is missing or a placeholder"]
