"""``python -m admin``: operator accounts and read-model maintenance on the host.

    ADMIN_PASSWORD=... python -m admin create-user --username alice --role operator
    python -m admin create-user --username bob --role viewer      # prompts for the password
    python -m admin rebuild                                       # replay streams into read models

The password is read from ``ADMIN_PASSWORD`` or an interactive prompt, never from the command
line, where it would land in shell history and in every process listing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

import nats
from shared.db import create_engine, make_session_factory
from shared.messaging.broker import ensure_streams
from shared.observability import configure_logging

from admin import service
from admin.domain import Role
from admin.errors import AdminError
from admin.main import passwords_for
from admin.rebuild import rebuild
from admin.settings import AdminSettings


def _read_password() -> str:
    from_env = os.environ.get("ADMIN_PASSWORD")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise AdminError("set ADMIN_PASSWORD or run in a terminal to be prompted")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise AdminError("passwords do not match")
    return first


async def create_user(settings: AdminSettings, username: str, role: str, password: str) -> str:
    engine = create_engine(settings.database_url, pool_size=1, application_name="admin-cli")
    try:
        sessions = make_session_factory(engine)
        async with sessions() as session, session.begin():
            user = await service.create_user(
                session,
                passwords_for(settings),
                username=username,
                password=password,
                role=role,
                actor=service.CLI_ACTOR,
            )
        return f"created {user.role} {user.username} ({user.id})"
    finally:
        await engine.dispose()


async def run_rebuild(settings: AdminSettings) -> str:
    engine = create_engine(settings.database_url, pool_size=2, application_name="admin-rebuild")
    nc = await nats.connect(settings.nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        report = await rebuild(make_session_factory(engine), js)
    finally:
        await nc.close()
        await engine.dispose()
    lines = [
        f"  {name:<12} applied {r.applied:>7}  skipped {r.skipped:>5}"
        for name, r in report.streams.items()
    ]
    return "\n".join(["rebuilt admin read models:", *lines, f"  total applied {report.applied}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admin")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-user", help="create an admin console user")
    create.add_argument("--username", required=True)
    create.add_argument("--role", choices=[r.value for r in Role], default=Role.OPERATOR.value)
    commands.add_parser("rebuild", help="truncate the read models and replay every stream")
    args = parser.parse_args(argv)

    settings = AdminSettings()
    configure_logging("admin-cli", "WARNING", json_logs=False)
    try:
        if args.command == "create-user":
            message = asyncio.run(create_user(settings, args.username, args.role, _read_password()))
        else:
            message = asyncio.run(run_rebuild(settings))
    except AdminError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        print(f"error: database or NATS unreachable ({type(exc).__name__})", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
