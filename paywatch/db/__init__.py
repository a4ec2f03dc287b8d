"""Postgres access: connection pools and schema migrations (run on every start)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import asyncpg

MIGRATIONS = "paywatch.db"
# Any fixed 64-bit number: serialises concurrent migrators (several processes start at once).
_MIGRATION_LOCK = 0x70617977


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open an asyncpg pool with jsonb <-> Python codecs installed.

    TLS comes from the DSN alone: asyncpg reads ``sslmode``, ``sslrootcert``, ``sslcert``...
    from it (``require`` against a server without TLS fails, never falls back to clear).
    Passing ``ssl=`` here would override the DSN's choice, so nothing is passed."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection
    )
    return pool


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every bundled migration, in order."""
    folder = resources.files(MIGRATIONS) / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations in one transaction each; return the names applied."""
    applied: list[str] = []
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    return applied


async def migrate_dsn(dsn: str) -> list[str]:
    """Connect once, migrate, close."""
    conn: Any = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
