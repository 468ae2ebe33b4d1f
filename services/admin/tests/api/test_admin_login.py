"""Login, session cookie, logout, throttling and the audit trail of all of them."""

from __future__ import annotations

import httpx
import jwt
import pytest
from admin.main import build, create_api
from admin.models import AdminUser
from shared.settings import SecretNotConfiguredError
from sqlalchemy import update

from ..conftest import JWT_SECRET, PASSWORD, AdminApi, admin_settings, auth


async def test_login_returns_token_and_sets_a_strict_httponly_cookie(admin_api: AdminApi):
    operator = await admin_api.user("operator", "Alice")
    response = await admin_api.client.post(
        "/admin/login", json={"username": "ALICE", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["role"] == "operator"
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == operator.id and claims["role"] == "operator"
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]

    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"bitloot_admin={body['access_token']};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=900" in cookie
    assert "Secure" not in cookie  # plain http in dev; https requests get Secure (see below)
    assert response.headers["cache-control"] == "no-store"

    # the cookie alone authenticates (the browser console never sees the token)
    me = await admin_api.client.get("/admin/me")
    assert me.json() == {"id": operator.id, "username": "alice", "role": "operator"}

    [entry] = await admin_api.audit("login")
    assert (entry.outcome, entry.actor_id, entry.ip) == ("ok", operator.id, "203.0.113.7")


async def test_cookie_is_secure_over_https(admin_api: AdminApi):
    await admin_api.user("operator", "carol")
    response = await admin_api.client.post(
        "https://admin.test/admin/login", json={"username": "carol", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert "Secure" in response.headers["set-cookie"]


async def test_unknown_user_and_wrong_password_get_the_same_answer(admin_api: AdminApi):
    await admin_api.user("viewer", "dave")
    wrong = await admin_api.client.post(
        "/admin/login", json={"username": "dave", "password": "nope" * 4}
    )
    unknown = await admin_api.client.post(
        "/admin/login", json={"username": "nobody", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "invalid username or password"}
    assert "set-cookie" not in wrong.headers
    outcomes = [(a.actor_username, a.outcome) for a in await admin_api.audit("login")]
    assert outcomes == [("dave", "failed"), ("nobody", "failed")]
    # the password is never part of the audit trail
    assert all(PASSWORD not in str(a.detail) for a in await admin_api.audit())


async def test_login_input_is_bounded(admin_api: AdminApi):
    response = await admin_api.client.post(
        "/admin/login", json={"username": "x" * 65, "password": "p"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "username"]
    assert await admin_api.audit("login") == []


async def test_five_failures_lock_the_username_with_retry_after(admin_api: AdminApi):
    await admin_api.user("operator", "erin")
    for _ in range(5):
        response = await admin_api.client.post(
            "/admin/login", json={"username": "erin", "password": "wrong password!"}
        )
        assert response.status_code == 401
    # locked now, even with the right password, and from another address
    transport = httpx.ASGITransport(app=admin_api.app, client=("198.51.100.1", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as other:
        locked = await other.post("/admin/login", json={"username": "Erin", "password": PASSWORD})
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 900
    assert "set-cookie" not in locked.headers
    outcomes = [a.outcome for a in await admin_api.audit("login")]
    assert outcomes == ["failed"] * 5 + ["throttled"]

    # another operator is not affected by erin's lock
    await admin_api.user("operator", "frank")
    ok = await admin_api.client.post(
        "/admin/login", json={"username": "frank", "password": PASSWORD}
    )
    assert ok.status_code == 200


async def test_many_usernames_from_one_address_lock_the_address(clean_infra):
    from ..conftest import start_api

    async for api in start_api(admin_settings(login_ip_max_failures=3)):
        await api.user("operator", "grace")
        for name in ("u1", "u2", "u3"):
            response = await api.client.post(
                "/admin/login", json={"username": name, "password": "x" * 12}
            )
            assert response.status_code == 401
        blocked = await api.client.post(
            "/admin/login", json={"username": "grace", "password": PASSWORD}
        )
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1


async def test_a_success_resets_the_username_counter(admin_api: AdminApi):
    await admin_api.user("operator", "heidi")
    for _ in range(4):
        await admin_api.client.post(
            "/admin/login", json={"username": "heidi", "password": "wrong password!"}
        )
    assert (
        await admin_api.client.post(
            "/admin/login", json={"username": "heidi", "password": PASSWORD}
        )
    ).status_code == 200
    for _ in range(4):
        response = await admin_api.client.post(
            "/admin/login", json={"username": "heidi", "password": "wrong password!"}
        )
        assert response.status_code == 401


async def test_logout_clears_the_cookie_and_ends_the_token(admin_api: AdminApi):
    await admin_api.user("viewer", "ivan")
    login = await admin_api.client.post(
        "/admin/login", json={"username": "ivan", "password": PASSWORD}
    )
    token = login.json()["access_token"]
    out = await admin_api.client.post("/admin/logout")
    assert out.status_code == 200
    cleared = out.headers["set-cookie"]
    assert cleared.startswith('bitloot_admin="";') and "Max-Age=0" in cleared
    # a copy of the token taken before logout no longer works
    again = await admin_api.client.get("/admin/me", headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 401
    assert [a.outcome for a in await admin_api.audit("logout")] == ["ok"]


async def test_disabling_a_user_or_changing_the_role_applies_to_live_tokens(admin_api: AdminApi):
    user = await admin_api.user("operator", "judy")
    reprocess = "/admin/webhook-logs/a-1/reprocess"
    assert (
        await admin_api.client.post(reprocess, json={"reason": "x"}, headers=auth(user))
    ).status_code == 404
    async with admin_api.ctx.sessions() as session, session.begin():
        await session.execute(update(AdminUser).values(role="viewer"))
    assert (
        await admin_api.client.post(reprocess, json={"reason": "x"}, headers=auth(user))
    ).status_code == 403
    async with admin_api.ctx.sessions() as session, session.begin():
        await session.execute(update(AdminUser).values(disabled=True))
    assert (await admin_api.client.get("/admin/me", headers=auth(user))).status_code == 401


@pytest.mark.parametrize("secret", [None, "changeme", "short-but-not-a-placeholder"])
def test_api_refuses_to_start_without_a_real_jwt_secret(secret):
    with pytest.raises(SecretNotConfiguredError, match="ADMIN_JWT_SECRET"):
        create_api(build(admin_settings(jwt_secret=secret)))
