"""Postgres access: connection pools and schema migrations (run on every start)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


_BIND = "SELECT set_config('paywatch.tenant', $1, true)"
"""Binds a transaction to a tenant: row-level security (migration 014) compares each row's
tenant with this setting for the paywatch_api role."""


class TenantPool:
    """A pool seen by one tenant under row-level security (migration 014).

    Every statement runs in a transaction that first sets ``paywatch.tenant``
    transaction-locally, so the setting ends with the transaction however it ends: a
    connection always goes back to the pool bound to no tenant (asyncpg rolls back a
    transaction left open). A session-level setting would hang on the connection until
    something reset it. With ``tenant`` None nothing is set, and a role under RLS sees no
    tenant's rows. The surface is the pool's that the query routes use.
    """

    def __init__(self, pool: asyncpg.Pool, tenant: str | None) -> None:
        self.pool = pool
        self.tenant = tenant

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A connection in a transaction bound to the tenant, committed when the block ends
        (rolled back when it raises); transactions opened inside are savepoints."""
        async with self.pool.acquire() as conn, conn.transaction():
            if self.tenant is not None:
                await conn.execute(_BIND, self.tenant)
            yield conn

    async def fetch(self, query: str, *args: Any) -> Any:
        """``Connection.fetch`` in its own tenant-bound transaction."""
        async with self.acquire() as conn:
            return await conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        """``Connection.fetchrow`` in its own tenant-bound transaction."""
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any, column: int = 0) -> Any:
        """``Connection.fetchval`` in its own tenant-bound transaction."""
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, column=column)

    async def execute(self, query: str, *args: Any) -> str:
        """``Connection.execute`` in its own tenant-bound transaction; the status tag."""
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args)
            return status


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
