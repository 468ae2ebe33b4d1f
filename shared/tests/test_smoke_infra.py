from shared.testing.plugin import Infra


async def test_infra_starts(clean_infra: Infra) -> None:
    import asyncpg

    conn = await asyncpg.connect(clean_infra.database_url.replace("+asyncpg", ""))
    try:
        tables = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE tablename IN ('outbox','inbox')"
        )
    finally:
        await conn.close()
    assert {(r["schemaname"], r["tablename"]) for r in tables} >= {("orders", "outbox")}
