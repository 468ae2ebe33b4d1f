"""Reading the embedded SMTP capture's Maildir for ``/dev/mailbox`` (development only).

Email bodies are never rendered as HTML: the plain-text part (or the HTML part reduced to text)
is escaped, and only http(s) URLs become links.
"""

from __future__ import annotations

import email.policy
import mailbox
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path

from markupsafe import Markup, escape

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._,:=-]{1,200}$")
URL_PATTERN = re.compile(r"https?://[^\s<>\"')\]]+")


@dataclass(frozen=True)
class MailSummary:
    key: str
    sender: str
    to: str
    subject: str
    date: datetime | None


@dataclass(frozen=True)
class MailDetail:
    summary: MailSummary
    body: Markup
    links: list[str]
    has_html: bool


def _open(maildir: Path) -> mailbox.Maildir | None:
    if not maildir.is_dir():
        return None
    return mailbox.Maildir(str(maildir), factory=None, create=False)


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _summary(key: str, message: EmailMessage) -> MailSummary:
    date: datetime | None
    try:
        date = parsedate_to_datetime(str(message["Date"])) if message["Date"] else None
    except (TypeError, ValueError):
        date = None
    return MailSummary(
        key=key,
        sender=str(message["From"] or ""),
        to=str(message["To"] or ""),
        subject=str(message["Subject"] or "(no subject)"),
        date=date,
    )


def list_messages(maildir: Path, limit: int = 200) -> list[MailSummary]:
    box = _open(maildir)
    if box is None:
        return []
    out: list[MailSummary] = []
    for key in box.iterkeys():
        try:
            out.append(_summary(key, _parse(box.get_bytes(key))))
        except (KeyError, OSError):
            continue  # removed while we listed
    epoch = datetime.min.replace(tzinfo=UTC)
    out.sort(key=lambda m: _aware(m.date) or epoch, reverse=True)
    return out[:limit]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _TextFromHtml(HTMLParser):
    """HTML to plain text, keeping each link's address next to its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: list[str | None] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag == "a":
            self._href.append(dict(attrs).get("href"))
        elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            href = self._href.pop()
            if href and URL_PATTERN.fullmatch(href):
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        return re.sub(r"\n{3,}", "\n\n", "".join(self.parts)).strip()


def html_to_text(html: str) -> str:
    parser = _TextFromHtml()
    parser.feed(html)
    parser.close()
    return parser.text()


def linkify(text: str) -> tuple[Markup, list[str]]:
    """Escape ``text``; turn http(s) URLs into links. Returns the markup and the URLs."""
    out: list[str] = []
    links: list[str] = []
    last = 0
    for match in URL_PATTERN.finditer(text):
        url = match.group(0).rstrip(".,;:!?")
        end = match.start() + len(url)
        out.append(str(escape(text[last : match.start()])))
        out.append(f'<a href="{escape(url)}" rel="noopener noreferrer">{escape(url)}</a>')
        links.append(url)
        last = end
    out.append(str(escape(text[last:])))
    return Markup("".join(out)), links  # noqa: S704 - every piece above is escaped


def get_message(maildir: Path, key: str) -> MailDetail | None:
    if not KEY_PATTERN.match(key):
        return None
    box = _open(maildir)
    if box is None:
        return None
    try:
        message = _parse(box.get_bytes(key))
    except (KeyError, OSError):
        return None
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    if plain is not None:
        text = str(plain.get_content())
    elif html is not None:
        text = html_to_text(str(html.get_content()))
    else:
        text = ""
    body, links = linkify(text)
    return MailDetail(_summary(key, message), body, links, has_html=html is not None)
