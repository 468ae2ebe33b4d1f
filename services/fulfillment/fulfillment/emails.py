"""Email rendering and the three delivery backends chosen by ``EMAIL_BACKEND``.

A message is rendered from the row's stored context, so every attempt of one email produces the
same bytes (the link included: its token is signed with the grant's creation time). That is what
lets Resend's ``Idempotency-Key`` accept a retry and the file backend overwrite instead of
duplicating.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from fulfillment import domain
from fulfillment.settings import FulfillmentSettings

_ENV = Environment(
    loader=PackageLoader("fulfillment", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=False,
)

# template -> (file stem, subject, extra variables)
_TEMPLATES: dict[str, tuple[str, str, dict[str, Any]]] = {
    domain.TEMPLATE_ORDER_COMPLETED: (
        "order_completed",
        "Your BitLoot order {order_id} is ready",
        {"reissue": False},
    ),
    domain.TEMPLATE_REISSUE: (
        "order_completed",
        "A new download link for your BitLoot order {order_id}",
        {"reissue": True},
    ),
    domain.TEMPLATE_UNDERPAID: (
        "underpaid",
        "Your BitLoot order {order_id} was underpaid",
        {},
    ),
    domain.TEMPLATE_PAYMENT_FAILED: (
        "payment_failed",
        "Your payment for BitLoot order {order_id} failed",
        {"expired": False},
    ),
    domain.TEMPLATE_PAYMENT_EXPIRED: (
        "payment_failed",
        "Your payment for BitLoot order {order_id} expired",
        {"expired": True},
    ),
    domain.TEMPLATE_PAYMENT_REFUNDED: (
        "payment_refunded",
        "Your payment for BitLoot order {order_id} was refunded",
        {},
    ),
}


class EmailPermanentError(RuntimeError):
    """The provider refused the message for good (bad address, bad key): do not retry."""


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    sender: str
    subject: str
    text: str
    html: str
    idempotency_key: str
    date: datetime

    @property
    def message_id(self) -> str:
        digest = hashlib.sha256(self.idempotency_key.encode()).hexdigest()[:32]
        domain_part = parseaddr(self.sender)[1].partition("@")[2] or "bitloot.local"
        return f"<{digest}@{domain_part}>"

    def to_mime(self) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = self.to
        msg["Subject"] = self.subject
        msg["Date"] = format_datetime(self.date)
        msg["Message-ID"] = self.message_id
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(self.text)
        msg.add_alternative(self.html, subtype="html")
        return msg


def render(
    template: str,
    context: dict[str, Any],
    *,
    order_id: str,
    recipient: str,
    idempotency_key: str,
    created_at: datetime,
    settings: FulfillmentSettings,
    extra: dict[str, Any] | None = None,
) -> OutgoingEmail:
    stem, subject_format, fixed = _TEMPLATES[template]
    variables = {
        **context,
        **fixed,
        **(extra or {}),
        "order_id": order_id,
        "support_email": settings.support_email,
        "storefront_url": settings.storefront_url,
    }
    subject = subject_format.format(order_id=order_id)
    variables["subject"] = subject
    text = _ENV.get_template(f"emails/{stem}.txt").render(variables)
    html = _ENV.get_template(f"emails/{stem}.html").render(variables)
    return OutgoingEmail(
        to=recipient,
        sender=settings.email_from,
        subject=subject,
        text=text,
        html=html,
        idempotency_key=idempotency_key,
        date=created_at,
    )


def render_page(name: str, **variables: Any) -> str:
    return _ENV.get_template(f"pages/{name}.html").render(variables)


class EmailBackend(Protocol):
    async def send(self, email: OutgoingEmail) -> str | None:
        """Hand the message over; return the provider's id when it gives one."""
        ...


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://[user:pass@]host[:port][?starttls=true]`` or ``smtps://`` (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        raise ValueError("SMTP_URL must look like smtp://host:port or smtps://host:port")
    implicit = parts.scheme == "smtps"
    query = parse_qs(parts.query)
    starttls = query.get("starttls", ["false"])[0].lower() in {"1", "true", "yes"}
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if implicit else 25),
        implicit_tls=implicit,
        starttls=starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class SmtpBackend:
    """smtplib in a thread: one short connection per message keeps failure handling simple."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self._target = parse_smtp_url(url)
        self._timeout = timeout
        # Built once: loading the system's CA bundle costs ~20 ms of CPU, which per email was
        # the fulfillment worker's largest cost. An SSLContext is safe to share across threads.
        self._tls: ssl.SSLContext | None = (
            ssl.create_default_context()
            if self._target.implicit_tls or self._target.starttls
            else None
        )

    def _send_sync(self, email: OutgoingEmail) -> None:
        t = self._target
        context = self._tls
        smtp: smtplib.SMTP
        if t.implicit_tls:
            smtp = smtplib.SMTP_SSL(t.host, t.port, timeout=self._timeout, context=context)
        else:
            smtp = smtplib.SMTP(t.host, t.port, timeout=self._timeout)
        with smtp:
            if t.starttls:
                smtp.starttls(context=context)
            if t.username and t.password:
                smtp.login(t.username, t.password)
            try:
                smtp.send_message(email.to_mime())
            except smtplib.SMTPRecipientsRefused as exc:
                raise EmailPermanentError("recipient refused") from exc

    async def send(self, email: OutgoingEmail) -> str | None:
        await asyncio.to_thread(self._send_sync, email)
        return email.message_id


class FileBackend:
    """Writes one ``.eml`` per email. The name comes from the idempotency key: a retry
    overwrites its own file rather than adding a second one."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path_for(self, email: OutgoingEmail) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", email.idempotency_key)[:150]
        return self.directory / f"{safe}.eml"

    def _write_sync(self, email: OutgoingEmail) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path_for(email)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(email.to_mime().as_bytes())
            os.replace(tmp, target)  # readers never see half a file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    async def send(self, email: OutgoingEmail) -> str | None:
        path = await asyncio.to_thread(self._write_sync, email)
        return path.name


class ResendBackend:
    """Resend's HTTP API. The Idempotency-Key makes a retry after a lost response harmless."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.resend.com",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._api_key = api_key
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )

    async def send(self, email: OutgoingEmail) -> str | None:
        response = await self._client.post(
            "/emails",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Idempotency-Key": email.idempotency_key,
            },
            json={
                "from": email.sender,
                "to": [email.to],
                "subject": email.subject,
                "text": email.text,
                "html": email.html,
                "headers": {"Message-ID": email.message_id},
            },
        )
        if response.is_success:
            data = response.json()
            return str(data.get("id")) if isinstance(data, dict) and data.get("id") else None
        reason = _resend_reason(response)
        # 408/409 (an identical request still in flight)/429/5xx pass with time; others never.
        if response.status_code in {408, 409, 429} or response.status_code >= 500:
            raise RuntimeError(f"resend {response.status_code}: {reason}")
        raise EmailPermanentError(f"resend {response.status_code}: {reason}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _resend_reason(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return "unreadable error body"
    if isinstance(data, dict):
        return str(data.get("name") or data.get("message") or "error")[:200]
    return "error"


def make_backend(settings: FulfillmentSettings) -> EmailBackend:
    if settings.email_backend == "resend":
        key = settings.resend_api_key
        assert key is not None, "settings.check() requires RESEND_API_KEY for this backend"
        return ResendBackend(
            key.get_secret_value(),
            base_url=settings.resend_base_url,
            timeout=settings.email_timeout_seconds,
        )
    if settings.email_backend == "file":
        return FileBackend(settings.email_file_dir)
    return SmtpBackend(settings.smtp_url, timeout=settings.email_timeout_seconds)
