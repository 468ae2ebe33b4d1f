"""A local SMTP server that stores every message in a Maildir (``python -m ...``).

Development stand-in for Mailpit: fulfillment sends real SMTP to it, and the web app's
``/dev/mailbox`` and the tests read the Maildir.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


class _CRLFMailbox(Mailbox):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return str(await super().handle_DATA(server, session, envelope))


def start_capture(maildir: Path, host: str, port: int) -> Controller:
    # Maildir(create=True) makes tmp/new/cur only when the folder itself is new.
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    controller = Controller(_CRLFMailbox(maildir), hostname=host, port=port)
    controller.start()
    return controller


def read_maildir(maildir: Path) -> list[mailbox.MaildirMessage]:
    if not maildir.exists():
        return []
    box = mailbox.Maildir(str(maildir), create=False)
    return list(box.values())


def main() -> None:
    parser = argparse.ArgumentParser(description="SMTP capture into a Maildir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    controller = start_capture(args.maildir, args.host, args.port)
    print(f"smtp capture on {args.host}:{args.port} -> {args.maildir}", flush=True)

    async def wait() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
