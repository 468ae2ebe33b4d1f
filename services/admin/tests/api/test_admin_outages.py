"""Infrastructure faults answer 503 with a plain message, never a 500 with a trace."""

from __future__ import annotations

import httpx
from admin.domain import durable_name
from admin.main import build, create_api, create_worker
from admin.projections import DEAD_LETTER_SUBJECT, PROJECTIONS
from admin.security import Tokens
from shared.runtime import running
from shared.testing import free_port

from ..conftest import JWT_SECRET, PASSWORD, admin_settings


async def test_database_down_is_503_for_reads_and_login(infra):
    dead_db = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/bitloot"
    ctx = build(admin_settings(database_url=dead_db))
    app = create_api(ctx)
    token = Tokens(JWT_SECRET, 900).issue("00000000-0000-4000-8000-000000000001", "operator")
    async with running(ctx, subscribers=False):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as client:
            for method, url, body in (
                ("GET", "/admin/payments", None),
                ("POST", "/admin/login", {"username": "someone", "password": PASSWORD}),
                ("POST", "/admin/webhook-logs/a-1/reprocess", {"reason": "x"}),
            ):
                response = await client.request(
                    method, url, json=body, headers={"Authorization": f"Bearer {token.token}"}
                )
                assert response.status_code == 503, (url, response.text)
                assert response.headers["retry-after"] == "5"
                assert "Traceback" not in response.text and "postgres" not in response.text
            ready = await client.get("/ready")
            assert ready.status_code == 503 and "database" in ready.json()["failing"]


def test_the_worker_consumes_every_subject_admin_projects():
    ctx = build(admin_settings())
    create_worker(ctx)
    durables = {sub.config.durable_name for sub in ctx.broker.subscribers}
    expected = {durable_name(s) for s in [*PROJECTIONS, DEAD_LETTER_SUBJECT]}
    assert durables == expected and len(expected) == 15
