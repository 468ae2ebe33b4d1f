"""The launcher's configuration: who wins (environment > .env > generated dev secrets), what
the emulator is given, and what a real provider must have before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from shared.launcher import Child, Launcher, base_env, configure, main, read_env_file
from shared.settings import (
    SecretNotConfiguredError,
    callback_url_problem,
    real_provider_problems,
    require_secret,
)

from shared import launcher

SANDBOX = "https://api-sandbox.nowpayments.io/v1"
REAL = {
    "NOWPAYMENTS_BASE": SANDBOX,
    "NOWPAYMENTS_CALLBACK_URL": "https://ipn.bitloot.shop/webhooks/nowpayments",
    "NOWPAYMENTS_API_KEY": "sandbox-api-key-0123",
    "NOWPAYMENTS_IPN_SECRET": "sandbox-ipn-secret-0123",
    "NOWPAYMENTS_EMAIL": "merchant@bitloot.shop",
    "NOWPAYMENTS_PASSWORD": "sandbox-login-password",
}


def generated(home: Path) -> dict[str, str]:
    """What an earlier ``make dev`` left in .local/secrets.env."""
    return launcher.load_secrets(home / "secrets.env")


def test_the_environment_wins_over_the_generated_dev_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = generated(tmp_path)
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", "from-the-operator")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "key-1")
    monkeypatch.delenv("NOWPAYMENTS_BASE", raising=False)
    env = launcher.base_env(tmp_path)  # the process environment, as `make dev` sees it
    assert env["NOWPAYMENTS_IPN_SECRET"] == "from-the-operator"
    assert env["NOWPAYMENTS_API_KEY"] == "key-1"
    # What the operator did not set still comes from the generated file, unchanged.
    assert env["ADMIN_JWT_SECRET"] == old["ADMIN_JWT_SECRET"]
    assert env["NOWPAYMENTS_PASSWORD"] == old["NOWPAYMENTS_PASSWORD"]


def test_dotenv_sits_between_the_environment_and_the_generated_secrets(tmp_path: Path) -> None:
    old = generated(tmp_path)
    dotenv_file = tmp_path / ".env"
    dotenv_file.write_text(
        "# compose-style file\n"
        "export NOWPAYMENTS_IPN_SECRET='from-dotenv'\n"
        'NOWPAYMENTS_API_KEY="dotenv-key"\n'
        "ORDER_TOKEN_PEPPER=pepper$NOT_EXPANDED\n"
        "EMPTY_NAME\n"
    )
    dotenv = read_env_file(dotenv_file)
    assert dotenv["ORDER_TOKEN_PEPPER"] == "pepper$NOT_EXPANDED"
    assert "EMPTY_NAME" not in dotenv
    env = base_env(tmp_path, environ={"NOWPAYMENTS_API_KEY": "env-key"}, dotenv=dotenv)
    assert env["NOWPAYMENTS_API_KEY"] == "env-key"  # environment > .env
    assert env["NOWPAYMENTS_IPN_SECRET"] == "from-dotenv"  # .env > generated
    assert env["ORDER_TOKEN_PEPPER"] == "pepper$NOT_EXPANDED"
    assert env["DOWNLOAD_TOKEN_SECRET"] == old["DOWNLOAD_TOKEN_SECRET"]  # generated
    assert read_env_file(tmp_path / "absent.env") == {}
    assert read_env_file(None) == {}


def test_placeholders_copied_from_the_example_fall_back_to_generated_ones(tmp_path: Path) -> None:
    old = generated(tmp_path)
    config = configure(
        tmp_path,
        environ={"WEB_SESSION_SECRET": "  "},
        dotenv={"NOWPAYMENTS_IPN_SECRET": "replace-me"},
    )
    assert config.env["NOWPAYMENTS_IPN_SECRET"] == old["NOWPAYMENTS_IPN_SECRET"]
    assert config.env["WEB_SESSION_SECRET"] == old["WEB_SESSION_SECRET"]
    assert len(config.notes) == 2
    assert all("replace-me" not in note for note in config.notes)  # names, never values


def test_emulator_and_services_get_the_same_trimmed_credentials(tmp_path: Path) -> None:
    env = base_env(
        tmp_path,
        environ={"NOWPAYMENTS_IPN_SECRET": "file-secret\n", "NOWPAYMENTS_PASSWORD": " pw \n"},
    )
    assert env["NOWPAYMENTS_IPN_SECRET"] == "file-secret"
    assert env["NOWPAYMENTS_PASSWORD"] == "pw"
    # The JWT login both sides use in dev: the emulator's e-mail and a generated password.
    assert base_env(tmp_path, environ={})["NOWPAYMENTS_EMAIL"] == "emulator@bitloot.test"
    assert base_env(tmp_path, environ={"NOWPAYMENTS_EMAIL": "me@x.io"})["NOWPAYMENTS_EMAIL"] == (
        "me@x.io"
    )


def _start_apps(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    spawned: dict[str, dict[str, str]] = {}

    def spawn(self: Launcher, name: str, argv: list[str], ready: str | None, env: dict) -> Child:
        spawned[name] = env
        return Child(name, argv, ready, env, tmp_path / f"{name}.log")

    monkeypatch.setattr(Launcher, "spawn", spawn)
    monkeypatch.setattr(Launcher, "wait_ready", lambda self, child, timeout=60: None)
    Launcher(tmp_path).start_apps(env)
    return spawned


def test_the_emulator_gets_exactly_the_services_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = base_env(tmp_path, environ={"NOWPAYMENTS_IPN_SECRET": "shared-secret"})
    spawned = _start_apps(env, monkeypatch, tmp_path)
    assert spawned["emulator"] is spawned["webhooks-api"] is spawned["payments-worker"]
    assert spawned["emulator"]["NOWPAYMENTS_IPN_SECRET"] == "shared-secret"


def test_with_the_real_provider_no_emulator_and_no_invented_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated(tmp_path)
    config = configure(tmp_path, environ=REAL, dotenv={})
    assert config.real_provider and config.problems() == []
    for name, value in REAL.items():
        assert config.env[name] == value
    assert "EMULATOR_PUBLIC_URL" not in config.env
    spawned = _start_apps(config.env, monkeypatch, tmp_path)
    assert "emulator" not in spawned and "webhooks-api" in spawned

    bare = configure(tmp_path, environ={"NOWPAYMENTS_BASE": SANDBOX}, dotenv={})
    for name in ("NOWPAYMENTS_IPN_SECRET", "NOWPAYMENTS_API_KEY", "NOWPAYMENTS_PASSWORD"):
        assert name not in bare.env  # a generated value would pass the check and then fail
    assert "NOWPAYMENTS_CALLBACK_URL" not in bare.env  # no loopback default


def test_real_provider_without_its_settings_stops_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in REAL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOWPAYMENTS_BASE", SANDBOX)
    monkeypatch.setenv("NOWPAYMENTS_CALLBACK_URL", "http://127.0.0.1:8002/webhooks/nowpayments")
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "a-real-looking-key")
    started: list[str] = []
    monkeypatch.setattr(Launcher, "claim_pidfile", lambda self: started.append("pidfile"))
    monkeypatch.setattr(Launcher, "start_infrastructure", lambda self, env: started.append("x"))

    with pytest.raises(SystemExit) as exit_info:
        main(["--home", str(tmp_path / "home"), "--env-file", ""])

    message = str(exit_info.value.code)
    assert started == []
    assert "NOWPAYMENTS_CALLBACK_URL must start with https://" in message
    for name in ("NOWPAYMENTS_IPN_SECRET", "NOWPAYMENTS_EMAIL", "NOWPAYMENTS_PASSWORD"):
        assert f"{name} is missing" in message
    assert "NOWPAYMENTS_API_KEY" not in message  # it was set
    assert "a-real-looking-key" not in message + capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (None, "missing"),
        ("http://ipn.bitloot.shop/webhooks/nowpayments", "https://"),
        ("https://localhost/webhooks/nowpayments", "not reachable"),
        ("https://127.0.0.1:8002/webhooks/nowpayments", "loopback/private"),
        ("https://10.1.2.3/webhooks/nowpayments", "loopback/private"),
        ("https://192.168.1.20/webhooks/nowpayments", "loopback/private"),
        ("https://[::1]/webhooks/nowpayments", "loopback/private"),
        ("https://[::ffff:172.16.0.9]/ipn", "loopback/private"),
        ("https://webhooks.internal/ipn", "not reachable"),
        ("https://webhooks/ipn", "not reachable"),
        ("https://ipn.example.com/webhooks/nowpayments", "example"),
    ],
)
def test_callback_urls_the_provider_cannot_call(url: str | None, reason: str) -> None:
    problem = callback_url_problem(url)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    "url", ["https://ipn.bitloot.shop/webhooks/nowpayments", "https://8.8.8.8/ipn"]
)
def test_public_https_callback_urls_pass(url: str) -> None:
    assert callback_url_problem(url) is None


def test_real_provider_problems_are_only_for_the_real_provider() -> None:
    assert real_provider_problems({}) == []
    assert real_provider_problems({"NOWPAYMENTS_BASE": "http://127.0.0.1:8010/v1"}) == []
    assert real_provider_problems(REAL) == []
    assert real_provider_problems({**REAL, "NOWPAYMENTS_EMAIL": "merchant"}) == [
        "NOWPAYMENTS_EMAIL is not an email address (the account login)"
    ]
    assert len(real_provider_problems({"NOWPAYMENTS_BASE": "https://api.nowpayments.io/v1"})) == 5
    emulator_values = {
        **REAL,
        "NOWPAYMENTS_EMAIL": "emulator@bitloot.test",
        "NOWPAYMENTS_IPN_SECRET": "emulator-ipn-secret",
    }
    assert real_provider_problems(emulator_values) == [
        "NOWPAYMENTS_IPN_SECRET is the emulator's dev value, not the account's",
        "NOWPAYMENTS_EMAIL is the emulator's dev value, not the account's",
    ]


def test_require_secret_trims_like_the_provider() -> None:
    assert require_secret(SecretStr("s3cret-value\n"), "X").get_secret_value() == "s3cret-value"
    assert require_secret(SecretStr("  s3cret-value\r\n"), "X").get_secret_value() == (
        "s3cret-value"
    )
    for blank in ("\n", "   ", " replace-me\n"):
        with pytest.raises(SecretNotConfiguredError, match=r"^X is missing"):
            require_secret(SecretStr(blank), "X")
