"""pytest plugin: real PostgreSQL and NATS JetStream for the whole test session.

Started once per session from the wheels (or reused when ``TEST_DATABASE_URL`` and
``TEST_NATS_URL`` point at running ones). Every service's migrations are applied once; tests
that ask for ``clean_infra`` start from empty tables and empty streams. S3 (moto) and an SMTP
capture start lazily, only for the tests that ask for them.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.testing.helpers import free_port

TEST_DB = "bitloot_test"


@dataclass
class Infra:
    database_url: str
    nats_url: str
    schemas: tuple[str, ...]
    home: Path


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str


@dataclass
class SmtpCapture:
    host: str
    port: int
    maildir: Path

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def messages(self) -> list[mailbox.MaildirMessage]:
        from shared.devstack.smtp_capture import read_maildir

        return read_maildir(self.maildir)

    def clear(self) -> None:
        box = mailbox.Maildir(str(self.maildir), create=True)
        for key in list(box.keys()):
            box.remove(key)


def _service_schemas() -> tuple[str, ...]:
    from shared.launcher import installed
    from shared.topology import SERVICES

    return tuple(s.schema for s in SERVICES if installed(s.package))


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    from shared.db.migrations import upgrade
    from shared.devstack.postgres import EmbeddedPostgres, create_database

    home = Path(tempfile.mkdtemp(prefix="bitloot-test-"))
    pg: EmbeddedPostgres | None = None
    nats_proc: subprocess.Popen[bytes] | None = None
    try:
        if os.environ.get("TEST_DATABASE_URL"):
            base_url = os.environ["TEST_DATABASE_URL"]
        else:
            pg = EmbeddedPostgres(home / "pg" / "data", free_port())
            pg.start()
            base_url = pg.url
        create_database(base_url, TEST_DB)
        database_url = base_url.rsplit("/", 1)[0] + f"/{TEST_DB}"

        if os.environ.get("TEST_NATS_URL"):
            nats_url = os.environ["TEST_NATS_URL"]
        else:
            from shared.devstack.nats import start_nats
            from shared.launcher import port_open, wait_until

            port = free_port()
            nats_proc = start_nats(home / "nats", port, free_port(), home / "nats.log")
            wait_until(lambda: port_open("127.0.0.1", port), 30, "nats")
            nats_url = f"nats://127.0.0.1:{port}"

        schemas = _service_schemas()
        for schema in schemas:
            upgrade(schema, database_url)
        from shared.devstack.bootstrap import ensure_nats_streams

        ensure_nats_streams(nats_url)
        os.environ["DATABASE_URL"] = database_url
        os.environ["NATS_URL"] = nats_url
        os.environ.setdefault("LOG_JSON", "false")
        yield Infra(database_url, nats_url, schemas, home)
    finally:
        if nats_proc is not None:
            nats_proc.terminate()
            nats_proc.wait(timeout=10)
        if pg is not None:
            pg.stop("immediate")
        shutil.rmtree(home, ignore_errors=True)


async def _truncate_all(infra: Infra) -> None:
    import asyncpg

    conn = await asyncpg.connect(infra.database_url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname = ANY($1::text[]) "
            "AND tablename <> 'alembic_version'",
            list(infra.schemas),
        )
        if rows:
            names = ", ".join(f'"{r["schemaname"]}"."{r["tablename"]}"' for r in rows)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


async def _reset_streams(infra: Infra) -> None:
    import nats

    from shared.messaging.broker import ensure_streams

    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = stream.config.name
            assert name is not None
            for consumer in await js.consumers_info(name):
                await js.delete_consumer(name, consumer.name)
            await js.purge_stream(name)
        await ensure_streams(js)
    finally:
        await nc.close()


@pytest.fixture
async def clean_infra(infra: Infra) -> Infra:
    """Empty tables in every service schema and empty streams without consumers."""
    await asyncio.gather(_truncate_all(infra), _reset_streams(infra))
    return infra


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        {
            "S3_ENDPOINT_URL": endpoint,
            "S3_BUCKET": "bitloot-test",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    from shared.devstack.bootstrap import ensure_bucket

    ensure_bucket(dict(os.environ))
    try:
        yield S3Server(endpoint, "bitloot-test")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_capture() -> Iterator[SmtpCapture]:
    from shared.devstack.smtp_capture import start_capture

    maildir = Path(tempfile.mkdtemp(prefix="bitloot-mail-")) / "Maildir"
    port = free_port()
    controller = start_capture(maildir, "127.0.0.1", port)
    capture = SmtpCapture("127.0.0.1", port, maildir)
    os.environ["SMTP_URL"] = capture.url
    try:
        yield capture
    finally:
        controller.stop()
        shutil.rmtree(maildir.parent, ignore_errors=True)


@pytest.fixture
def mailbox_capture(smtp_capture: SmtpCapture) -> SmtpCapture:
    """The SMTP capture, emptied for this test."""
    smtp_capture.clear()
    return smtp_capture
