"""The dev mailbox: only with the local capture; email bodies escaped, links clickable."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path

from web.devmail import html_to_text, linkify

from .conftest import HarnessFactory, make_settings

LINK = "http://127.0.0.1:8004/downloads/abc.def?x=1&y=2"


def _deliver(maildir: Path, subject: str, text: str | None, html: str | None = None) -> str:
    message = EmailMessage()
    message["From"] = "BitLoot <no-reply@bitloot.test>"
    message["To"] = "buyer@example.com"
    message["Subject"] = subject
    message["Date"] = "Wed, 01 Jan 2025 10:00:00 +0000"
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html or "", subtype="html")
    return mailbox.Maildir(str(maildir), create=True).add(message)


async def test_mailbox_lists_and_opens_captured_mail(
    make_web: HarnessFactory, maildir: Path
) -> None:
    key = _deliver(
        maildir,
        "Your download <ready>",
        f"Hello <b>friend</b>,\nDownload: {LINK}.\nThanks",
        "<p>ignored in favour of text</p>",
    )
    web = make_web(make_settings(DEV_MAILDIR=str(maildir), SMTP_URL="smtp://127.0.0.1:1025"))

    listing = await web.client.get("/dev/mailbox")
    assert listing.status_code == 200
    assert "Your download &lt;ready&gt;" in listing.text
    assert f'href="/dev/mailbox/{key}"' in listing.text

    page = await web.client.get(f"/dev/mailbox/{key}")
    assert page.status_code == 200
    assert "&lt;b&gt;friend&lt;/b&gt;" in page.text
    assert "<b>friend</b>" not in page.text
    assert f'<a href="{LINK.replace("&", "&amp;")}" rel="noopener noreferrer">' in page.text
    assert "also has an HTML version" in page.text


async def test_html_only_mail_is_reduced_to_text_with_its_links(
    make_web: HarnessFactory, maildir: Path
) -> None:
    key = _deliver(
        maildir,
        "HTML only",
        None,
        f'<html><head><style>p{{}}</style></head><body><p>Get it <a href="{LINK}">here</a>'
        '<script>alert(1)</script> <img src=x onerror="alert(2)"></p></body></html>',
    )
    web = make_web(make_settings(DEV_MAILDIR=str(maildir), SMTP_URL="smtp://localhost:1025"))
    page = await web.client.get(f"/dev/mailbox/{key}")
    assert "Get it here (" in page.text
    assert "alert(1)" not in page.text
    assert "onerror" not in page.text
    assert f'href="{LINK.replace("&", "&amp;")}"' in page.text


async def test_unknown_or_odd_keys_are_404(make_web: HarnessFactory, maildir: Path) -> None:
    web = make_web(make_settings(DEV_MAILDIR=str(maildir), SMTP_URL="smtp://127.0.0.1:1025"))
    assert (await web.client.get("/dev/mailbox/nope")).status_code == 404
    assert (await web.client.get("/dev/mailbox/..%2F..%2Fetc%2Fpasswd")).status_code == 404


async def test_mailbox_is_off_with_a_real_mail_server(
    make_web: HarnessFactory, maildir: Path
) -> None:
    _deliver(maildir, "private", "secret")
    web = make_web(make_settings(DEV_MAILDIR=str(maildir), SMTP_URL="smtp://mail.example:587"))
    assert (await web.client.get("/dev/mailbox")).status_code == 404
    off = make_web(make_settings(SMTP_URL="smtp://127.0.0.1:1025"))
    assert (await off.client.get("/dev/mailbox")).status_code == 404
    assert "Dev mailbox" not in (await off.client.get("/")).text


def test_linkify_escapes_everything_but_the_links() -> None:
    markup, links = linkify('<i>x</i> see https://a.example/p?q=1&r="2" and javascript:alert(1)')
    assert links == ["https://a.example/p?q=1&r="]
    assert "<i>" not in markup
    assert "javascript:alert(1)" in markup  # text, not a link
    assert markup.count("<a ") == 1


def test_html_to_text_keeps_only_http_links() -> None:
    text = html_to_text(
        '<a href="javascript:alert(1)">bad</a> <a href="https://ok.example/">ok</a>'
    )
    assert "javascript" not in text
    assert "ok (https://ok.example/)" in text
