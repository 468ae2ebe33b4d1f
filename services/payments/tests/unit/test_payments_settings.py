from __future__ import annotations

import pytest
from payments.main import build_client
from payments.settings import PaymentsSettings
from shared.settings import SecretNotConfiguredError


@pytest.mark.parametrize("value", [None, "", "changeme", "replace-me-with-a-key"])
def test_missing_or_placeholder_api_key_fails_fast_naming_the_variable(value: str | None) -> None:
    settings = PaymentsSettings(nowpayments_api_key=value)
    with pytest.raises(SecretNotConfiguredError) as caught:
        build_client(settings)
    assert "NOWPAYMENTS_API_KEY" in str(caught.value)
    if value:
        assert value not in str(caught.value)


def test_global_names_and_prefixed_knobs_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("NOWPAYMENTS_BASE", "https://api-sandbox.nowpayments.io/v1/")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "real-looking-key")
    monkeypatch.setenv("NOWPAYMENTS_CALLBACK_URL", "https://shop.example/webhooks/nowpayments")
    monkeypatch.setenv("PAYMENTS_POLL_AFTER_SECONDS", "120")
    monkeypatch.setenv("PAYMENTS_CONFIRM_FINAL_WITH_PROVIDER", "false")
    settings = PaymentsSettings()
    assert settings.nowpayments_base == "https://api-sandbox.nowpayments.io/v1"
    assert settings.api_key().get_secret_value() == "real-looking-key"
    assert "real-looking-key" not in repr(settings)
    assert settings.nowpayments_callback_url.endswith("/webhooks/nowpayments")
    assert settings.poll_after_seconds == 120
    assert settings.confirm_final_with_provider is False
    assert (settings.port, settings.worker_port) == (8005, 8105)
