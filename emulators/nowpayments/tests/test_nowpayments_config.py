"""Configuration from the environment, and the `python -m nowpayments_emulator` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest
from nowpayments_emulator.config import EmulatorConfig
from shared.testing import free_port


def test_defaults() -> None:
    config = EmulatorConfig.from_env({})
    assert config.api_key == "emulator-api-key"
    assert config.ipn_secret == "emulator-ipn-secret"
    assert config.public_url == "http://127.0.0.1:8010"
    assert config.callback_timeout == 3.0
    assert 0 < config.step_delay <= 0.1
    assert config.invoice_lifetime == 7 * 24 * 3600.0  # the deposit window; payments expire
    assert config.ipn_log_limit == 10_000


def test_environment_overrides() -> None:
    config = EmulatorConfig.from_env(
        {
            "NOWPAYMENTS_API_KEY": "k",
            "NOWPAYMENTS_IPN_SECRET": "s",
            "EMULATOR_PUBLIC_URL": "http://localhost:9000/",
            "EMULATOR_STEP_DELAY": "0.2",
            "EMULATOR_IPN_RETRIES": "5",
            "EMULATOR_IPN_RETRY_INTERVAL": "2",
            "EMULATOR_CALLBACK_TIMEOUT": "1.5",
            "EMULATOR_INVOICE_LIFETIME": "60",
            "EMULATOR_MIN_PRICE_USD": "2.50",
            "EMULATOR_DEFAULT_IPN_URL": "http://127.0.0.1:1/ipn",
            "EMULATOR_SEED": "7",
            "EMULATOR_IPN_LOG_LIMIT": "50000",
        }
    )
    assert config == EmulatorConfig(
        api_key="k",
        ipn_secret="s",
        public_url="http://localhost:9000",
        step_delay=0.2,
        ipn_retries=5,
        ipn_retry_interval=2.0,
        callback_timeout=1.5,
        invoice_lifetime=60.0,
        min_price_usd=Decimal("2.50"),
        default_ipn_callback_url="http://127.0.0.1:1/ipn",
        seed=7,
        ipn_log_limit=50_000,
    )


@pytest.mark.parametrize(
    "env",
    [
        {"EMULATOR_STEP_DELAY": "soon"},
        {"EMULATOR_IPN_RETRIES": "-1"},
        {"EMULATOR_MIN_PRICE_USD": "x"},
        {"EMULATOR_IPN_LOG_LIMIT": "many"},
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="EMULATOR_"):
        EmulatorConfig.from_env(env)


def test_cli_serves_the_api_and_links_to_its_own_port() -> None:
    port = free_port()  # not from the ephemeral range: see its docstring
    env = {k: v for k, v in os.environ.items() if k != "EMULATOR_PUBLIC_URL"}
    env["NOWPAYMENTS_API_KEY"] = "cli-key"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nowpayments_emulator",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{base}/v1/status", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.05)
        invoice = httpx.post(
            f"{base}/v1/invoice",
            json={"price_amount": 5, "price_currency": "usd"},
            headers={"x-api-key": "cli-key"},
            timeout=5,
        ).json()
        assert invoice["invoice_url"] == f"{base}/invoice/{invoice['id']}"
        assert httpx.get(invoice["invoice_url"], timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
