"""``/dev/mailbox``: the embedded SMTP capture's messages, so the download link is one click away.

Registered only when ``DEV_MAILDIR`` is set and ``SMTP_URL`` points at the local capture.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from web.devmail import get_message, list_messages
from web.pages import error_page, render

router = APIRouter(prefix="/dev")


@router.get("/mailbox")
async def mailbox_list(request: Request) -> Response:
    maildir = request.app.state.settings.dev_maildir
    messages = await asyncio.to_thread(list_messages, maildir)
    return render(request, "dev/mailbox.html", {"messages": messages})


@router.get("/mailbox/{key}")
async def mailbox_message(request: Request, key: str) -> Response:
    maildir = request.app.state.settings.dev_maildir
    message = await asyncio.to_thread(get_message, maildir, key)
    if message is None:
        return error_page(
            request,
            404,
            "No such email",
            "It may have been deleted.",
            link=("/dev/mailbox", "Mailbox"),
        )
    return render(request, "dev/message.html", {"message": message})
