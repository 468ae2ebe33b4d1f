"""Public HTTP boundary (port 8004): download links and link reissue. Browsers, so HTML.

Every response carries ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``: the
token is in the URL, and neither a shared cache nor the S3 host should ever see it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError, field_validator
from shared.db import DatabaseUnavailableError, is_connection_error
from shared.observability import current_correlation_id, get_logger
from shared.runtime import ServiceContext
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fulfillment import domain, service
from fulfillment.emails import render_page
from fulfillment.errors import LicenceMismatchError
from fulfillment.service import (
    DownloadProblem,
    Fulfillment,
    ItemList,
    Problem,
    Redirect,
)
from fulfillment.storage import StorageUnavailableError

log = get_logger(__name__)

router = APIRouter()

SAFE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
}
MAX_REISSUE_BODY = 4096
REISSUE_ACCEPTED = (
    "If that order exists and the email matches it, we have sent a new download link to the "
    "address on the order. It can take a few minutes to arrive."
)

_PROBLEM_PAGES: dict[DownloadProblem, tuple[int, str, str, bool]] = {
    # problem: (status, title, message, offer a reissue form)
    DownloadProblem.INVALID: (
        404,
        "This link is not valid",
        "The download link is incomplete or was changed. Copy the whole link from your email, "
        "or ask for a new one below.",
        True,
    ),
    DownloadProblem.EXPIRED: (
        410,
        "This link has expired",
        "Download links only work for a limited time. You can ask for a new one below.",
        True,
    ),
    DownloadProblem.REVOKED: (
        403,
        "This link has been withdrawn",
        "Downloads for this order were stopped by our team. Please contact support.",
        False,
    ),
    DownloadProblem.REFUNDED: (
        403,
        "This link no longer works",
        "The payment for this order was refunded, so its download link no longer works.",
        False,
    ),
    DownloadProblem.EXHAUSTED: (
        403,
        "Download limit reached",
        "This link has been used as many times as it allows. You can ask for a new one below.",
        True,
    ),
    DownloadProblem.NO_SUCH_ITEM: (
        404,
        "No such item",
        "This order has no item at that address. Go back to the link in your email.",
        False,
    ),
}


def _ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def _f(request: Request) -> Fulfillment:
    f: Fulfillment = request.app.state.ctx.extras["fulfillment"]
    return f


def _page(
    request: Request,
    status: int,
    title: str,
    message: str,
    *,
    offer_reissue: bool = False,
    order_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    f = _f(request)
    html = render_page(
        "problem",
        title=title,
        message=message,
        offer_reissue=offer_reissue,
        order_id=order_id,
        reissue_action=f.reissue_url,
        support_email=f.settings.support_email,
    )
    return HTMLResponse(html, status_code=status, headers={**SAFE_HEADERS, **(headers or {})})


def _problem_page(request: Request, problem: Problem) -> HTMLResponse:
    status, title, message, offer = _PROBLEM_PAGES[problem.kind]
    return _page(request, status, title, message, offer_reissue=offer, order_id=problem.order_id)


@router.get("/downloads/reissue", response_class=HTMLResponse)
async def reissue_form(request: Request) -> HTMLResponse:
    return _page(
        request,
        200,
        "Get a new download link",
        "Enter your order number and the email address you used when ordering.",
        offer_reissue=True,
    )


class ReissueForm(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")

    order_id: str = Field(min_length=1, max_length=domain.MAX_ORDER_ID_LENGTH)
    email: EmailStr = Field(max_length=domain.MAX_EMAIL_LENGTH)

    @field_validator("order_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text")
        return value


def _wants_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == "application/json"


def _parse_body(request: Request, body: bytes) -> dict[str, Any]:
    if _wants_json(request):
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data
    fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
    return {key: values[0] for key, values in fields.items()}


def _invalid(request: Request, errors: list[dict[str, str]]) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": errors}, status_code=422, headers=SAFE_HEADERS)
    reasons = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return _page(
        request,
        422,
        "Please check the form",
        f"Some fields are not right — {reasons}.",
        offer_reissue=True,
    )


@router.post("/downloads/reissue")
async def reissue(request: Request) -> Response:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_REISSUE_BODY):
        return _invalid_size(request)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REISSUE_BODY:
            return _invalid_size(request)
    try:
        form = ReissueForm.model_validate(_parse_body(request, body))
    except ValidationError as exc:
        return _invalid(
            request,
            [
                {"field": ".".join(str(p) for p in err["loc"]) or "body", "reason": err["msg"]}
                for err in exc.errors()
            ],
        )
    except (ValueError, UnicodeDecodeError):
        return _invalid(request, [{"field": "body", "reason": "not valid JSON or form data"}])

    f = _f(request)
    client_ip = request.client.host if request.client else "unknown"
    async with _ctx(request).sessions() as session, session.begin():
        decision = await service.allow_reissue(
            session, f, client_ip=client_ip, order_id=form.order_id
        )
        if decision.allowed:
            # Whether it matched stays in here: the answer below is the same either way.
            await service.reissue_link(
                session,
                f,
                order_id=form.order_id,
                email=str(form.email),
                correlation_id=current_correlation_id(),
            )
    if not decision.allowed:
        headers = {"Retry-After": str(decision.retry_after)}
        message = "Too many requests for a new link. Please try again later."
        if _wants_json(request):
            return JSONResponse(
                {"detail": message}, status_code=429, headers={**SAFE_HEADERS, **headers}
            )
        return _page(request, 429, "Please wait a little", message, headers=headers)
    if _wants_json(request):
        return JSONResponse(
            {"status": "accepted", "message": REISSUE_ACCEPTED},
            status_code=202,
            headers=SAFE_HEADERS,
        )
    html = render_page(
        "reissue_done",
        title="Check your inbox",
        message=REISSUE_ACCEPTED,
        support_email=f.settings.support_email,
    )
    return HTMLResponse(html, status_code=202, headers=SAFE_HEADERS)


def _invalid_size(request: Request) -> Response:
    reason = f"at most {MAX_REISSUE_BODY} bytes"
    if _wants_json(request):
        return JSONResponse(
            {"detail": [{"field": "body", "reason": reason}]}, status_code=413, headers=SAFE_HEADERS
        )
    return _page(request, 413, "Request too large", f"The form may hold {reason}.")


async def _download(request: Request, token: str, position: int | None) -> Response:
    f = _f(request)
    async with _ctx(request).sessions() as session, session.begin():
        outcome = await service.open_download(session, f, token, position)
    if isinstance(outcome, Redirect):
        return RedirectResponse(outcome.url, status_code=302, headers=SAFE_HEADERS)
    if isinstance(outcome, ItemList):
        html = render_page(
            "items",
            title="Your downloads",
            order_id=outcome.order_id,
            items=[
                {
                    "href": f"{f.public_url}/downloads/{token}/{item.position}",
                    "title": item.title,
                    "quantity": item.quantity,
                }
                for item in outcome.items
            ],
            remaining=outcome.remaining,
            expires_at=service.human_time(outcome.expires_at),
            support_email=f.settings.support_email,
        )
        return HTMLResponse(html, headers=SAFE_HEADERS)
    return _problem_page(request, outcome)


@router.get("/downloads/{token}")
async def download(request: Request, token: str) -> Response:
    return await _download(request, token, None)


@router.get("/downloads/{token}/{position}")
async def download_item(request: Request, token: str, position: str) -> Response:
    if not position.isdigit() or not 1 <= int(position) <= domain.MAX_ITEMS_PER_ORDER:
        return _problem_page(request, Problem(DownloadProblem.NO_SUCH_ITEM))
    return await _download(request, token, int(position))


class ErrorPages:
    """Turns an escaped exception into a page: 503 for an infrastructure fault, else 500.

    Pure ASGI and inside Starlette's error middleware, so nothing re-raises into the server
    and no stack trace reaches the customer (it goes to the log).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            if isinstance(exc, LicenceMismatchError):
                response = _page(
                    request,
                    503,
                    "Temporarily unavailable",
                    "We cannot serve this file right now. Our team has been "
                    "alerted; please contact support if it persists.",
                    headers={"Retry-After": "300"},
                )
            elif isinstance(exc, StorageUnavailableError | DatabaseUnavailableError) or (
                is_connection_error(exc)
            ):
                log.warning("dependency_unavailable", error=repr(exc)[:300], path=scope.get("path"))
                response = _page(
                    request,
                    503,
                    "Temporarily unavailable",
                    "Downloads are briefly unavailable. Please try again in a minute.",
                    headers={"Retry-After": "30"},
                )
            else:
                log.exception("unhandled_error", path=scope.get("path"))
                response = _page(
                    request,
                    500,
                    "Something went wrong",
                    "An unexpected error occurred. Please try again later.",
                )
            await response(scope, receive, send)
