"""Rendering helpers and the friendly error pages shared by every router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from web.clients import AdminClient, OrdersClient
from web.security import FLASH_COOKIE, attach_csrf_cookie, csrf_token

PACKAGE_DIR = Path(__file__).parent
templates = Jinja2Templates(directory=str(PACKAGE_DIR / "templates"))


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    ctx: dict[str, Any] = {
        "csrf_token": lambda: csrf_token(request),
        "dev_mailbox": request.app.state.settings.dev_mailbox_enabled,
        **(context or {}),
    }
    response = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    # The template may have minted a CSRF seed while rendering; the browser needs its cookie.
    attach_csrf_cookie(request, response)
    if getattr(request.state, "clear_flash", False):
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return response


def error_page(
    request: Request,
    status_code: int,
    title: str,
    message: str,
    *,
    link: tuple[str, str] | None = None,
) -> Response:
    return render(
        request,
        "error.html",
        {"title": title, "message": message, "link": link},
        status_code=status_code,
    )


def orders_client(request: Request) -> OrdersClient:
    client: OrdersClient = request.app.state.orders
    return client


def admin_client(request: Request) -> AdminClient:
    client: AdminClient = request.app.state.admin
    return client
