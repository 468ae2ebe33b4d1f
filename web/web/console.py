"""Admin console: login, the admin gateway's lists, webhook detail and reprocess, the "needs
attention" page with acknowledge / settle / attach-payment, logout.

The operator's JWT from ``POST /admin/login`` stays on the server side of the browser: it sits in
a signed HttpOnly cookie scoped to ``/admin`` and is forwarded as ``Authorization: Bearer``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData
from starlette.responses import Response

from web.clients import (
    ActionResult,
    BackendError,
    BackendUnavailableError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
)
from web.pages import admin_client, error_page, render
from web.security import ADMIN_COOKIE, check_csrf, cookie_secure, pop_flash, set_flash

router = APIRouter(prefix="/admin")

ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
PAGE_SIZES = (10, 25, 50, 100)
DEFAULT_LIMIT = 25
MAX_FILTER_LENGTH = 200
MIN_REASON, MAX_REASON = 3, 500


class LoginRequiredError(Exception):
    """No (valid) operator session: the exception handler sends the browser to the login page."""

    def __init__(self, next_path: str, expired: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.expired = expired


@dataclass(frozen=True)
class Filter:
    name: str
    label: str
    kind: str = "text"  # text | select | datetime
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Resource:
    slug: str
    title: str
    filters: tuple[Filter, ...]
    columns: tuple[tuple[str, str], ...]  # preferred (key, heading), shown when present
    empty: str = "Nothing here yet."
    extra: dict[str, str] = field(default_factory=dict)


PAYMENT_STATUSES = (
    "created", "waiting", "confirming", "confirmed", "sending", "partially_paid",
    "finished", "failed", "refunded", "expired",
)  # fmt: skip
ORDER_STATUSES = (
    "created", "awaiting_payment", "paid", "fulfilled", "underpaid", "failed", "expired",
    "refunded",
)  # fmt: skip
ATTENTION_STATES = ("open", "acknowledged", "resolved", "any")
ATTENTION_KINDS = (
    "late_money", "child_payment", "wrong_asset", "amount_discrepancy", "overpaid",
    "unknown_status", "cancelled", "refunded", "price_mismatch", "provider_refused",
    "settled_by_operator", "attached_by_operator",
)  # fmt: skip
PROVIDER_PAYMENT_ID = re.compile(r"^[0-9]{1,32}$")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{8,100}$")
UUID_TEXT = re.compile(r"^[0-9a-fA-F-]{32,36}$")


def _choices(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return (("", "Any"), *((v, v.replace("_", " ")) for v in values))


def _when(name: str, label: str) -> Filter:
    return Filter(name, label, "datetime")


RESOURCES: dict[str, Resource] = {
    r.slug: r
    for r in (
        Resource(
            "payments",
            "Payments",
            (
                Filter("status", "Status", "select", _choices(PAYMENT_STATUSES)),
                Filter("order_id", "Order id"),
                Filter("provider_payment_id", "Provider payment id"),
                Filter("invoice_id", "Invoice id"),
                _when("created_from", "Created from"),
                _when("created_to", "Created to"),
            ),
            (
                ("payment_id", "Payment"),
                ("order_id", "Order"),
                ("provider_payment_id", "Provider payment"),
                ("invoice_id", "Invoice"),
                ("status", "Status"),
                ("price_amount", "Price"),
                ("price_currency", "Currency"),
                ("pay_amount", "Pay amount"),
                ("actually_paid", "Paid"),
                ("pay_currency", "Coin"),
                ("source", "Source"),
                ("updated_at", "Updated"),
            ),
            "No payments match.",
        ),
        Resource(
            "orders",
            "Orders",
            (
                Filter("status", "Status", "select", _choices(ORDER_STATUSES)),
                Filter("email", "Email"),
                _when("created_from", "Created from"),
                _when("created_to", "Created to"),
            ),
            (
                ("order_id", "Order"),
                ("email", "Email"),
                ("status", "Status"),
                ("total", "Total"),
                ("currency", "Currency"),
                ("reason", "Reason"),
                ("created_at", "Created"),
                ("updated_at", "Updated"),
            ),
            "No orders match.",
        ),
        Resource(
            "webhook-logs",
            "Webhook logs",
            (
                Filter("provider", "Provider"),
                Filter("external_id", "External id (payment or invoice id)"),
                Filter("event_type", "Event type (payment status)"),
                Filter(
                    "accepted",
                    "Accepted",
                    "select",
                    (("", "Any"), ("true", "yes"), ("false", "no")),
                ),
                _when("received_from", "Received from"),
                _when("received_to", "Received to"),
            ),
            (
                ("id", "Log"),
                ("provider", "Provider"),
                ("external_id", "External id"),
                ("order_id", "Order"),
                ("event_type", "Event type"),
                ("accepted", "Accepted"),
                ("actually_paid", "Paid"),
                ("received_count", "Received"),
                ("replay_count", "Replays"),
                ("reason", "Reason"),
                ("received_at", "Received at"),
            ),
            "No webhook deliveries match.",
        ),
        Resource(
            "dead-letters",
            "Dead letters",
            (
                Filter("consumer", "Consumer"),
                Filter("original_subject", "Subject"),
                _when("dead_lettered_from", "From"),
                _when("dead_lettered_to", "To"),
            ),
            (
                ("id", "Id"),
                ("consumer", "Consumer"),
                ("original_subject", "Subject"),
                ("event_id", "Event"),
                ("deliveries", "Deliveries"),
                ("error", "Error"),
                ("dead_lettered_at", "Dead-lettered at"),
            ),
            "No dead letters. Every event was handled.",
        ),
        Resource(
            "audit",
            "Audit log",
            (
                Filter("action", "Action"),
                Filter("actor", "Operator"),
                Filter("target_id", "Target id"),
                Filter("outcome", "Outcome"),
                _when("occurred_from", "From"),
                _when("occurred_to", "To"),
            ),
            (
                ("id", "Id"),
                ("occurred_at", "At"),
                ("actor_username", "Operator"),
                ("action", "Action"),
                ("target_type", "Target type"),
                ("target_id", "Target"),
                ("reason", "Reason"),
                ("outcome", "Outcome"),
                ("detail", "Detail"),
            ),
            "No operator actions recorded yet.",
        ),
    )
}


# -- session -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    token: str
    username: str
    role: str


def _local_next(value: str | None) -> str:
    """Only our own console paths: ``next`` must not become an open redirect."""
    if value and value.startswith("/admin") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/payments"


def _current_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def operator(request: Request) -> Operator:
    max_age = request.app.state.settings.admin_session_max_age
    data = request.app.state.signer.unsign("admin", request.cookies.get(ADMIN_COOKIE), max_age)
    if not isinstance(data, dict) or not isinstance(data.get("t"), str):
        next_path = _current_path(request) if request.method == "GET" else "/admin/payments"
        raise LoginRequiredError(next_path)
    return Operator(data["t"], str(data.get("u", "")), str(data.get("r", "")))


async def console_context(request: Request, who: Operator) -> dict[str, Any]:
    """What every signed-in page's navigation shows, including the "needs attention" badge.
    The badge is best effort: a failing count leaves it out, the page itself still renders."""
    count: int | None = None
    try:
        count = (await admin_client(request).needs_attention_counts(who.token)).total
    except BackendError:
        count = None
    return {
        "operator": who,
        "resources": RESOURCES,
        "attention_count": count,
        "can_act": who.role != "viewer",
    }


def login_redirect(request: Request, next_path: str, expired: bool) -> Response:
    query = {"next": _local_next(next_path)}
    if expired:
        query["expired"] = "1"
    response = RedirectResponse(f"/admin/login?{urlencode(query)}", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


# -- login / logout ----------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def console_home(request: Request) -> Response:
    operator(request)
    return RedirectResponse("/admin/payments", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    return render(
        request,
        "admin/login.html",
        {
            "next": _local_next(request.query_params.get("next")),
            "expired": request.query_params.get("expired") == "1",
            "error": None,
            "username": "",
        },
    )


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    username = str(form.get("username", "")).strip()[:100]
    password = str(form.get("password", ""))[:200]
    next_path = _local_next(str(form.get("next", "")))

    def again(error: str, status_code: int) -> Response:
        return render(
            request,
            "admin/login.html",
            {"next": next_path, "expired": False, "error": error, "username": username},
            status_code=status_code,
        )

    if not username or not password:
        return again("Enter your username and password.", 422)
    try:
        result = await admin_client(request).login(username, password)
    except (UnauthorizedError, ForbiddenError, InvalidInputError):
        return again("Wrong username or password.", 401)
    except RateLimitedError as exc:
        wait = f" Try again in {exc.retry_after} seconds." if exc.retry_after else ""
        return again(f"Too many sign-in attempts.{wait}", 429)
    max_age = max(60, min(result.expires_in, request.app.state.settings.admin_session_max_age))
    session = request.app.state.signer.sign(
        "admin", {"t": result.access_token, "u": username, "r": result.role}
    )
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        ADMIN_COOKIE,
        session,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
        path="/admin",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, form)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(ADMIN_COOKIE, path="/admin")
    return response


# -- lists -------------------------------------------------------------------------------------


def _list_params(request: Request, resource: Resource) -> tuple[dict[str, Any], int, int]:
    q = request.query_params
    params: dict[str, Any] = {}
    for f in resource.filters:
        value = q.get(f.name, "").strip()[:MAX_FILTER_LENGTH]
        if value:
            params[f.name] = value
    try:
        limit = int(q.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = DEFAULT_LIMIT
    try:
        offset = int(q.get("offset", 0))
    except ValueError:
        offset = 0
    return params, max(1, min(limit, 100)), max(0, offset)


def _columns(resource: Resource, items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    present = {key for item in items for key in item}
    chosen: list[tuple[str, str]] = []
    headings: set[str] = set()
    for key, heading in resource.columns:
        if key in present and heading not in headings:
            chosen.append((key, heading))
            headings.add(heading)
    if not chosen and items:
        chosen = [(k, k.replace("_", " ").capitalize()) for k in items[0]]
    return chosen


def cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return text if len(text) <= 120 else text[:117] + "…"
    return str(value)


def _row_links(slug: str, item: dict[str, Any]) -> list[tuple[str, str]]:
    links: list[tuple[str, str]] = []
    if slug == "payments":
        if item.get("payment_id") is not None:
            links.append((f"/admin/payments/{item['payment_id']}", "Details"))
        external = item.get("provider_payment_id") or item.get("invoice_id")
        if external is not None:
            links.append(
                (f"/admin/webhook-logs?{urlencode({'external_id': external})}", "Webhook logs")
            )
    elif slug == "webhook-logs":
        if item.get("id") is not None:
            links.append((f"/admin/webhook-logs/{item['id']}", "Details"))
    elif slug == "orders":
        order_id = item.get("order_id")
        if order_id is not None:
            links.append((f"/admin/orders/{order_id}", "Details"))
            links.append((f"/admin/payments?{urlencode({'order_id': order_id})}", "Payments"))
    return links


def _page_url(request: Request, params: dict[str, Any], limit: int, offset: int) -> str:
    return f"{request.url.path}?{urlencode({**params, 'limit': limit, 'offset': offset})}"


async def _list_page(request: Request, slug: str) -> Response:
    who = operator(request)
    resource = RESOURCES[slug]
    params, limit, offset = _list_params(request, resource)
    error = None
    items: list[dict[str, Any]] = []
    total = 0
    try:
        page = await admin_client(request).list(
            slug, who.token, {**params, "limit": limit, "offset": offset}
        )
        items, total = page.items, page.total
    except InvalidInputError as exc:
        error = f"The filters were refused: {exc.message}"
    columns = _columns(resource, items)
    prev_url = _page_url(request, params, limit, max(0, offset - limit)) if offset > 0 else None
    next_url = (
        _page_url(request, params, limit, offset + limit) if offset + len(items) < total else None
    )
    return render(
        request,
        "admin/list.html",
        {
            **(await console_context(request, who)),
            "resource": resource,
            "values": params,
            "limit": limit,
            "page_sizes": PAGE_SIZES,
            "items": items,
            "rows": [
                ([cell(item.get(key)) for key, _ in columns], _row_links(slug, item))
                for item in items
            ],
            "columns": columns,
            "total": total,
            "first": offset + 1 if items else 0,
            "last": offset + len(items),
            "prev_url": prev_url,
            "next_url": next_url,
            "error": error,
            "flash": pop_flash(request),
        },
    )


@router.get("/payments")
async def payments(request: Request) -> Response:
    return await _list_page(request, "payments")


@router.get("/orders")
async def orders(request: Request) -> Response:
    return await _list_page(request, "orders")


@router.get("/webhook-logs")
async def webhook_logs(request: Request) -> Response:
    return await _list_page(request, "webhook-logs")


@router.get("/dead-letters")
async def dead_letters(request: Request) -> Response:
    return await _list_page(request, "dead-letters")


@router.get("/audit")
async def audit(request: Request) -> Response:
    return await _list_page(request, "audit")


# -- webhook detail and reprocess --------------------------------------------------------------


def _pretty_body(detail: dict[str, Any]) -> str:
    raw = detail.get("raw_body")
    if raw is None:
        raw = detail.get("body_excerpt") or detail.get("payload")
    if raw is None:
        return ""
    if not isinstance(raw, str):
        return json.dumps(raw, indent=2, ensure_ascii=False)
    return raw


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _table(title: str, rows: list[Any]) -> Table:
    columns: list[str] = []
    for row in rows:
        for key in row if isinstance(row, dict) else ():
            if key not in columns:
                columns.append(key)
    return Table(
        title,
        [_label(c) for c in columns],
        [[cell(row.get(c)) for c in columns] for row in rows if isinstance(row, dict)],
    )


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def record_sections(
    data: dict[str, Any], skip: frozenset[str] = frozenset()
) -> tuple[list[tuple[str, str]], list[Table]]:
    """Scalars as facts; lists of records (also one level down) as tables."""
    facts: list[tuple[str, str]] = []
    tables: list[Table] = []
    for key, value in data.items():
        if key in skip:
            continue
        if _is_rows(value):
            tables.append(_table(_label(key), value))
        elif isinstance(value, dict) and value and all(_is_rows(v) for v in value.values()):
            tables.extend(
                _table(f"{_label(key)}: {_label(k).lower()}", v) for k, v in value.items()
            )
        else:
            facts.append((_label(key), cell(value)))
    return facts, tables


WEBHOOK_SKIP = frozenset({"raw_body", "headers", "payload", "body_excerpt"})


@router.get("/webhook-logs/{log_id}")
async def webhook_detail(request: Request, log_id: str) -> Response:
    who = operator(request)
    if not ID.match(log_id):
        return error_page(request, 404, "Not found", "There is no such webhook log.")
    try:
        detail = await admin_client(request).webhook_log(log_id, who.token)
    except (NotFoundError, InvalidInputError):
        return error_page(
            request,
            404,
            "Not found",
            "There is no such webhook log.",
            link=("/admin/webhook-logs", "All webhook logs"),
        )
    headers = detail.get("headers")
    facts, tables = record_sections(detail, WEBHOOK_SKIP)
    return render(
        request,
        "admin/webhook_detail.html",
        {
            **(await console_context(request, who)),
            "log_id": log_id,
            "summary": facts,
            "tables": tables,
            "raw_body": _pretty_body(detail),
            "headers": sorted(headers.items()) if isinstance(headers, dict) else [],
            "can_reprocess": detail.get("can_reprocess", True) is not False,
            "flash": pop_flash(request),
            "min_reason": MIN_REASON,
            "max_reason": MAX_REASON,
        },
    )


async def _record_page(
    request: Request, kind: str, record_id: str, back: tuple[str, str]
) -> Response:
    who = operator(request)
    if not ID.match(record_id):
        return error_page(request, 404, "Not found", f"There is no such {kind}.", link=back)
    try:
        data = await admin_client(request).record(f"{kind}s", record_id, who.token)
    except (NotFoundError, InvalidInputError):
        return error_page(request, 404, "Not found", f"There is no such {kind}.", link=back)
    facts, tables = record_sections(data)
    return render(
        request,
        "admin/record.html",
        {
            **(await console_context(request, who)),
            "kind": kind,
            "record_id": record_id,
            "facts": facts,
            "tables": tables,
            "back": back,
            "data": data,
            "flash": pop_flash(request),
            "min_reason": MIN_REASON,
            "max_reason": MAX_REASON,
            "idempotency_key": new_idempotency_key(),
        },
    )


@router.get("/orders/{order_id}")
async def order_detail(request: Request, order_id: str) -> Response:
    return await _record_page(request, "order", order_id, ("/admin/orders", "All orders"))


@router.get("/payments/{payment_id}")
async def payment_detail(request: Request, payment_id: str) -> Response:
    return await _record_page(request, "payment", payment_id, ("/admin/payments", "All payments"))


def _reason(form_value: object) -> str | None:
    reason = str(form_value or "").strip()
    return reason if MIN_REASON <= len(reason) <= MAX_REASON else None


Call = Callable[[FormData, str, str], Awaitable[ActionResult]]
Check = Callable[[FormData], str | None]


async def _action(
    request: Request, back: str, what: str, call: Call, check: Check | None = None
) -> Response:
    """POST/redirect/GET for an operator action: CSRF, a reason, then a one-shot message.

    ``call`` gets the form, the reason and the operator's token; ``check`` may refuse the form
    (with the message to show) before anything is sent.
    """
    form = await request.form()
    check_csrf(request, form)
    who = operator(request)
    response = RedirectResponse(back, status_code=303)
    reason = _reason(form.get("reason"))
    if reason is None:
        message = f"Give a reason ({MIN_REASON} to {MAX_REASON} characters)."
        set_flash(request, response, "error", message, "/admin")
        return response
    if check is not None and (refused := check(form)) is not None:
        set_flash(request, response, "error", refused, "/admin")
        return response
    try:
        result = await call(form, reason, who.token)
    except (InvalidInputError, NotFoundError, BackendUnavailableError) as exc:
        set_flash(request, response, "error", f"{what} failed: {exc.message}", "/admin")
        return response
    message = result.message or f"{what} done."
    if result.event_id:
        message += f" Event {result.event_id}."
    if result.audit_id is not None:
        message += f" Audit entry #{result.audit_id}."
    set_flash(request, response, "success" if result.ok else "error", message, "/admin")
    return response


@router.post("/webhook-logs/{log_id}/reprocess")
async def reprocess(request: Request, log_id: str) -> Response:
    if not ID.match(log_id):
        return error_page(request, 404, "Not found", "There is no such webhook log.")
    client = admin_client(request)
    return await _action(
        request,
        f"/admin/webhook-logs/{log_id}",
        "Reprocess",
        lambda _, reason, token: client.reprocess(log_id, reason, token),
    )


@router.post("/orders/{order_id}/revoke-downloads")
async def revoke(request: Request, order_id: str) -> Response:
    if not ID.match(order_id):
        return error_page(request, 404, "Not found", "There is no such order.")
    client = admin_client(request)
    return await _action(
        request,
        f"/admin/orders/{order_id}",
        "Revoke",
        lambda _, reason, token: client.revoke_downloads(order_id, reason, token),
    )


# -- payments that need attention ----------------------------------------------------------------


def new_idempotency_key() -> str:
    """One per rendered form: submitting that form twice (a double click, a resent POST) sends
    the same key, and admin answers the second with the first one's result."""
    return uuid.uuid4().hex


def age(seconds: Any) -> str:
    try:
        total = int(seconds)
    except (TypeError, ValueError):
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if total >= size:
            return f"{total // size} {unit}"
    return f"{total} s"


def _attention_params(request: Request) -> tuple[dict[str, str], int, int]:
    q = request.query_params
    params: dict[str, str] = {}
    state = q.get("state", "open")
    params["state"] = state if state in ATTENTION_STATES else "open"
    kind = q.get("kind", "").strip()
    if kind in ATTENTION_KINDS:
        params["kind"] = kind
    order_id = q.get("order_id", "").strip()
    if order_id and ID.match(order_id):
        params["order_id"] = order_id
    _, limit, offset = _list_params(request, RESOURCES["payments"])
    return params, limit, offset


@router.get("/needs-attention")
async def needs_attention(request: Request) -> Response:
    who = operator(request)
    params, limit, offset = _attention_params(request)
    client = admin_client(request)
    error = None
    try:
        page = await client.needs_attention(who.token, {**params, "limit": limit, "offset": offset})
    except InvalidInputError as exc:
        error = f"The filters were refused: {exc.message}"
        page = await client.needs_attention(who.token, {"limit": limit})
    items = page.items
    prev_url = _page_url(request, params, limit, max(0, offset - limit)) if offset > 0 else None
    next_url = (
        _page_url(request, params, limit, offset + limit)
        if offset + len(items) < page.total
        else None
    )
    context = await console_context(request, who)
    context["attention_count"] = page.counts.total  # the page's own numbers, one snapshot
    return render(
        request,
        "admin/attention.html",
        {
            **context,
            "page": page,
            "items": items,
            "values": params,
            "states": ATTENTION_STATES,
            "kinds": ATTENTION_KINDS,
            "limit": limit,
            "page_sizes": PAGE_SIZES,
            "first": offset + 1 if items else 0,
            "last": offset + len(items),
            "prev_url": prev_url,
            "next_url": next_url,
            "error": error,
            "age": age,
            "cell": cell,
            "flash": pop_flash(request),
            "min_reason": MIN_REASON,
            "max_reason": MAX_REASON,
            "new_key": new_idempotency_key,
        },
    )


def _back(form: FormData, order_id: str) -> str:
    """Where the form came from: the attention list or the order page, nothing else."""
    back = str(form.get("back", ""))
    if back == "/admin/needs-attention":
        return back
    return f"/admin/orders/{order_id}"


@router.post("/attention/{payment_id}/acknowledge")
async def acknowledge(request: Request, payment_id: str) -> Response:
    if not UUID_TEXT.match(payment_id):
        return error_page(request, 404, "Not found", "There is no such attention item.")
    client = admin_client(request)

    def check(form: FormData) -> str | None:
        key = str(form.get("key", ""))
        return None if 0 < len(key) <= 120 else "That attention item is not valid."

    return await _action(
        request,
        "/admin/needs-attention",
        "Acknowledge",
        lambda form, reason, token: client.acknowledge_attention(
            payment_id, str(form.get("key", "")), reason, token
        ),
        check,
    )


def _confirmed(form: FormData) -> str | None:
    if form.get("confirm") != "yes":
        return "Tick the confirmation box: this action moves money state."
    if not IDEMPOTENCY_KEY.match(str(form.get("idempotency_key", ""))):
        return "The form has expired; reload the page and try again."
    return None


async def _payment_action(
    request: Request, order_id: str, what: str, call: Call, check: Check
) -> Response:
    if not ID.match(order_id):
        return error_page(request, 404, "Not found", "There is no such order.")
    # The form is read (and cached by Starlette) here to pick the redirect target.
    back = _back(await request.form(), order_id)
    return await _action(request, back, what, call, check)


@router.post("/orders/{order_id}/settle")
async def settle(request: Request, order_id: str) -> Response:
    client = admin_client(request)
    return await _payment_action(
        request,
        order_id,
        "Settle",
        lambda form, reason, token: client.settle(
            order_id, reason, str(form.get("idempotency_key")), token
        ),
        _confirmed,
    )


@router.post("/orders/{order_id}/attach-payment")
async def attach_payment(request: Request, order_id: str) -> Response:
    client = admin_client(request)

    def check(form: FormData) -> str | None:
        if not PROVIDER_PAYMENT_ID.match(str(form.get("provider_payment_id", "")).strip()):
            return "The provider payment id is the NOWPayments payment_id: digits only."
        return _confirmed(form)

    return await _payment_action(
        request,
        order_id,
        "Attach payment",
        lambda form, reason, token: client.attach_payment(
            order_id,
            str(form.get("provider_payment_id", "")).strip(),
            reason,
            str(form.get("idempotency_key")),
            token,
        ),
        check,
    )
