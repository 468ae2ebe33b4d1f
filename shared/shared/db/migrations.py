"""Alembic, one history per service, each with its version table inside its own schema.

Every service keeps its migrations in ``<package>/migrations`` with a two-line ``env.py`` that
calls :func:`run_env`. ``upgrade("orders", url)`` is what the launcher, the test plugin and the
compose migration jobs call.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def alembic_config(package: str, database_url: str) -> Config:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    location = Path(module.__file__).parent / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("sqlalchemy.url", database_url)
    cfg.attributes["package"] = package
    return cfg


def upgrade(package: str, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(package, database_url), revision)


def run_env(metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``."""
    schema = metadata.schema
    assert schema, "service metadata must carry its schema"
    url = context.config.get_main_option("sqlalchemy.url")
    assert url

    def do_run(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=False,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(do_run)
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, version_table_schema=schema)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(run_async())
