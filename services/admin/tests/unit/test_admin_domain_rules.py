"""Pure rules: throttle arithmetic, public ids, usernames, tokens and password hashes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from admin.domain import (
    ThrottlePolicy,
    can_write,
    durable_name,
    parse_webhook_log_id,
    rejected_log_id,
    retry_after_seconds,
    validate_new_password,
    validate_new_username,
    validate_role,
)
from admin.errors import InvalidInputError, NotAuthenticatedError
from admin.security import Passwords, Tokens
from admin.settings import AdminSettings
from shared.settings import SecretNotConfiguredError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = ThrottlePolicy(max_failures=5, window=timedelta(minutes=15))
KEY = "unit-test-key-0123456789abcdefghijklmnop"


def ago(seconds: int) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_fewer_failures_than_the_limit_are_allowed():
    assert retry_after_seconds([ago(10)] * 4, NOW, POLICY) is None


def test_the_lock_lifts_when_enough_failures_leave_the_window():
    # oldest-first: 600, 500, 400, 300, 200 s ago -> the oldest leaves the window in 300 s
    failures = [ago(s) for s in (200, 600, 400, 300, 500)]
    assert retry_after_seconds(failures, NOW, POLICY) == 300
    # seven failures: the lock lasts until only four remain, i.e. the third-oldest expires
    failures = [ago(s) for s in (800, 700, 600, 500, 400, 300, 200)]
    assert retry_after_seconds(failures, NOW, POLICY) == 900 - 600


def test_failures_outside_the_window_do_not_count_and_waits_round_up():
    assert retry_after_seconds([ago(901)] * 10, NOW, POLICY) is None
    almost = [NOW - timedelta(seconds=899, microseconds=500_000)] * 5
    assert retry_after_seconds(almost, NOW, POLICY) == 1


@pytest.mark.parametrize(
    ("raw", "kind", "key"),
    [
        ("a-12", "accepted", "12"),
        ("a-007", "accepted", "7"),
        ("r-3", "rejected", "3"),
        (
            "r-0b0e1c8e-6d47-4ea0-9c0f-3f0e8e3c2a11",
            "rejected",
            "0b0e1c8e-6d47-4ea0-9c0f-3f0e8e3c2a11",
        ),
    ],
)
def test_webhook_log_ids_round_trip(raw, kind, key):
    ref = parse_webhook_log_id(raw)
    assert (ref.kind, ref.key) == (kind, key)
    assert parse_webhook_log_id(ref.public_id) == ref


@pytest.mark.parametrize(
    "raw", ["12", "a-", "a-x", "x-1", "a-1-2", "r-not-a-uuid", "a-99999999999999999999"]
)
def test_malformed_webhook_log_ids_name_the_field(raw):
    with pytest.raises(InvalidInputError) as err:
        parse_webhook_log_id(raw)
    assert err.value.field == "id"


def test_unstored_rejections_are_named_by_their_event():
    event_id = uuid.uuid4()
    assert rejected_log_id(None, event_id) == f"r-{event_id}"
    assert rejected_log_id(4, event_id) == "r-4"
    with pytest.raises(InvalidInputError):
        _ = parse_webhook_log_id("r-4").webhook_log_id


def test_usernames_passwords_and_roles():
    assert validate_new_username("  Alice.Smith@Ops ") == "alice.smith@ops"
    for bad in ("ab", "a b c", "-lead", "x" * 65, "émile"):
        with pytest.raises(InvalidInputError):
            validate_new_username(bad)
    with pytest.raises(InvalidInputError, match="at least 12"):
        validate_new_password("short")
    with pytest.raises(InvalidInputError, match="at most"):
        validate_new_password("x" * 1025)
    with pytest.raises(InvalidInputError, match="viewer"):
        validate_role("admin")
    assert can_write("operator") and not can_write("viewer") and not can_write("")


def test_durable_names_have_no_dots():
    assert durable_name("payments.status_changed.v1") == "admin-payments-status_changed-v1"
    assert durable_name("deadletter.>") == "admin-deadletter-all"


def test_tokens_round_trip_and_pin_the_algorithm():
    tokens = Tokens(KEY, 900)
    issued = tokens.issue("user-1", "viewer")
    claims = tokens.decode(issued.token)
    assert (claims.sub, claims.role, claims.jti) == ("user-1", "viewer", issued.claims.jti)
    assert claims.expires_at - claims.issued_at == timedelta(seconds=900)

    expired = tokens.issue("user-1", "viewer", datetime.now(UTC) - timedelta(seconds=901))
    with pytest.raises(NotAuthenticatedError, match="expired"):
        tokens.decode(expired.token)
    with pytest.raises(NotAuthenticatedError, match="invalid"):
        Tokens("another-key-0123456789abcdefghijklmnopq", 900).decode(issued.token)
    payload = jwt.decode(issued.token, KEY, algorithms=["HS256"])
    unsigned = jwt.encode(payload, None, algorithm="none")
    with pytest.raises(NotAuthenticatedError):
        tokens.decode(unsigned)
    without_jti = jwt.encode({k: v for k, v in payload.items() if k != "jti"}, KEY, "HS256")
    with pytest.raises(NotAuthenticatedError):
        tokens.decode(without_jti)


def test_passwords_verify_and_unknown_users_never_match():
    passwords = Passwords(time_cost=1, memory_kib=1024)
    stored = passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "correct horse batterY")
    assert not passwords.verify(None, "correct horse battery")
    assert not passwords.verify("not-a-hash", "x")
    assert Passwords(time_cost=2, memory_kib=1024).needs_rehash(stored)


def test_settings_read_the_shared_secret_name_and_refuse_placeholders(monkeypatch):
    monkeypatch.setenv("ADMIN_JWT_SECRET", KEY)
    monkeypatch.setenv("ADMIN_LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("ADMIN_CORS_ORIGINS", "https://ops.example, https://b.example/")
    monkeypatch.setenv("STOREFRONT_URL", "http://127.0.0.1:8000/")
    settings = AdminSettings()
    assert settings.jwt_key() == KEY and settings.login_max_failures == 3
    # only what the operator listed: the storefront is not trusted by default
    assert settings.cors_origins == ["https://ops.example", "https://b.example"]
    assert KEY not in repr(settings)
    monkeypatch.setenv("ADMIN_JWT_SECRET", "replace-me")
    with pytest.raises(SecretNotConfiguredError, match="ADMIN_JWT_SECRET"):
        AdminSettings().jwt_key()
