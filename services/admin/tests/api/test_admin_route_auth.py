"""Every /admin route, read from the app's route table, refuses anonymous and forged sessions,
and every state-changing route refuses a viewer — so a new route cannot escape the check."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from admin.api import SELF_SERVICE_ROUTES
from admin.domain import SAFE_METHODS
from admin.main import build, create_api
from admin.security import Tokens
from fastapi.routing import iter_route_contexts

from ..conftest import JWT_SECRET, AdminApi, User, admin_settings, start_api

PUBLIC = {("POST", "/admin/login")}
SAMPLE_PATH_VALUES = {"log_id": "a-1", "order_id": "ord-1", "payment_id": str(uuid.uuid4())}


def _admin_routes() -> list[tuple[str, str]]:
    app = create_api(build(admin_settings()))
    found = []
    # iter_route_contexts flattens included routers (app.routes only lists them as groups).
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if path.startswith("/admin"):
            for method in sorted(route.methods or ()):
                if (method, path) not in PUBLIC:
                    found.append((method, path))
    return found


ROUTES = _admin_routes()


def test_route_table_is_not_vacuous():
    writes = [r for r in ROUTES if r[0] not in SAFE_METHODS]
    assert len(ROUTES) >= 12
    assert ("POST", "/admin/webhook-logs/{log_id}/reprocess") in writes
    assert ("POST", "/admin/orders/{order_id}/revoke-downloads") in writes
    assert ("POST", "/admin/orders/{order_id}/settle") in writes
    assert ("POST", "/admin/orders/{order_id}/attach-payment") in writes
    assert ("POST", "/admin/attention/{payment_id}/acknowledge") in writes


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES.get(m.group(1), "x"), path)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _forged_tokens(user_id: str, role: str) -> dict[str, str]:
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "role": role,
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
    }
    return {
        "expired": Tokens(JWT_SECRET, 900).issue(user_id, role, now - timedelta(hours=1)).token,
        "alg_none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "wrong_key": jwt.encode(claims, "another-secret-0123456789abcdefghijkl", "HS256"),
        # the right key under another algorithm: refused by the algorithm pin alone
        "other_alg": jwt.encode(claims, JWT_SECRET, "HS512"),
    }


@pytest.fixture(scope="module")
async def shared_api(infra) -> AsyncIterator[tuple[AdminApi, User, User]]:
    """One API for the whole table (no per-route truncation: users have unique names)."""
    async for api in start_api(admin_settings()):
        yield api, await api.user("viewer"), await api.user("operator")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_every_admin_route_requires_a_valid_session(shared_api, method, path):
    admin_api, viewer, operator = shared_api
    client = admin_api.client
    url = _url(path)
    writes = method not in SAFE_METHODS and (method, path) not in SELF_SERVICE_ROUTES
    body = {"reason": "route table check"} if writes else None

    anonymous = await client.request(method, url, json=body)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["www-authenticate"] == "Bearer"

    for kind, token in _forged_tokens(operator.id, "operator").items():
        for headers, cookie in (({"Authorization": f"Bearer {token}"}, None), ({}, token)):
            client.cookies.clear()
            if cookie:
                client.cookies.set("bitloot_admin", cookie)
            response = await client.request(method, url, json=body, headers=headers)
            assert response.status_code == 401, (kind, response.text)
    client.cookies.clear()

    audited_before = len(await admin_api.audit())
    fresh = Tokens(JWT_SECRET, 900).issue(viewer.id, "viewer").token  # logout revokes its own
    as_viewer = await client.request(
        method, url, json=body, headers={"Authorization": f"Bearer {fresh}"}
    )
    if method in SAFE_METHODS:
        # 404: the sample id names nothing; anything else means the request never got through
        assert as_viewer.status_code in (200, 404), as_viewer.text
    elif (method, path) in SELF_SERVICE_ROUTES:
        assert as_viewer.status_code == 200, as_viewer.text
    else:
        assert as_viewer.status_code == 403, as_viewer.text
        assert as_viewer.json() == {"detail": "this action needs the operator role"}
        # refused before anything happened: no action was even audited as attempted
        assert len(await admin_api.audit()) == audited_before
