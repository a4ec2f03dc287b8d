"""A new generation of read-model tables: made beside the live ones, swapped in at once.

A rebuild (:mod:`paywatch.projections.rebuild`) fills copies of the live tables in a schema
of its own, ``pw_rebuild_<job id>``: each made with ``CREATE TABLE ... (LIKE public.t
INCLUDING ALL)`` (columns, defaults, checks, indexes, column comments), beside its own
``projection_checkpoints``. The sink writes there through ``search_path``, so every read
model's SQL runs unchanged.

`swap` then, in the caller's transaction: moves each live table out to the archive schema
``pw_archive_<job id>`` and its copy into ``public``; gives the copy the live table's
index names, row-level security, policies, grants and table comment as the migrations set
them (read from the catalog, so a later migration's are carried too); and drops the
rebuild schema. Readers keep the old generation until the commit and get the new one
after: ``ALTER TABLE ... SET SCHEMA`` waits for the queries in flight and is atomic with
the rest. Nothing is half swapped: any failure rolls all of it back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from paywatch.projections.merge import quoted

CHECKPOINTS = "projection_checkpoints"
PUBLIC = "public"


class TableChanged(Exception):
    """A live table's columns differ from its copy's (a migration ran during the rebuild)."""


class HasDependents(Exception):
    """A view depends on a live table: moving the table would take the view along."""


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``."""
    return f"{quoted(schema)}.{quoted(table)}"


async def create(conn: Any, schema: str, tables: Sequence[str]) -> None:
    """The schema and an empty copy of each table and of the checkpoints (idempotent)."""
    async with conn.transaction():
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(schema)}")
        for table in (*tables, CHECKPOINTS):
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {qualified(schema, table)}"
                f" (LIKE {qualified(PUBLIC, table)} INCLUDING ALL)"
                " WITH (autovacuum_enabled = false)"  # analysed once, before the swap
            )


_INDEX_UNIQUE = (
    "SELECT c.relname, i.indisunique FROM pg_index i"
    " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass"
)


async def drop_secondary_indexes(conn: Any, schema: str, tables: Sequence[str]) -> None:
    """Drop the copies' non-unique indexes: a bulk load then maintains only the keys, and
    `restore_indexes` builds the rest once, sorted, after it (several times cheaper than
    row by row). The unique ones stay: they are what refuses a key loaded twice."""
    for table in tables:
        for name, unique in await conn.fetch(_INDEX_UNIQUE, qualified(schema, table)):
            if not unique:
                await conn.execute(f"DROP INDEX {qualified(schema, name)}")


async def restore_indexes(pool: Any, schema: str, tables: Sequence[str]) -> None:
    """Build every index a live table has and its copy lacks (by shape, so after a resumed
    job too), under the live index's name, as many at once as `pool` allows."""
    missing = []
    async with pool.acquire() as conn:
        for table in tables:
            have = {_shape(d) for _, d in await conn.fetch(_INDEXES, qualified(schema, table))}
            for name, definition in await conn.fetch(_INDEXES, qualified(PUBLIC, table)):
                if _shape(definition) not in have:
                    unique = "UNIQUE " if definition.startswith("CREATE UNIQUE") else ""
                    rest = _INDEX_NAME.sub("", definition)
                    missing.append(
                        f"CREATE {unique}INDEX {quoted(name)} ON {qualified(schema, table)} {rest}"
                    )

    async def build(statement: str) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")  # sorts in memory
            await conn.execute(statement)

    await asyncio.gather(*(build(statement) for statement in missing))


async def exists(conn: Any, schema: str) -> bool:
    """Does the schema exist?"""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema)
    )


async def drop(conn: Any, schema: str) -> None:
    """Drop a schema and everything in it (a failed or finished generation)."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {quoted(schema)} CASCADE")


_OLD_ARCHIVES = (
    "SELECT n.nspname FROM pg_namespace n JOIN replay_jobs j"
    " ON n.nspname = 'pw_archive_' || j.job_id WHERE j.status = 'done'"
    " ORDER BY j.finished_at DESC NULLS LAST, j.job_id DESC OFFSET $1"
)


async def prune_archives(conn: Any, keep: int) -> list[str]:
    """Drop the archives of replaced tables but the `keep` newest (by when their job
    finished); the schemas dropped."""
    old = [row[0] for row in await conn.fetch(_OLD_ARCHIVES, keep)]
    for schema in old:
        await drop(conn, schema)
    return old


_COLUMNS = (
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
)
_DEPENDENT_VIEWS = (
    "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d"
    " JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class"
    " WHERE d.refobjid = $1::regclass AND d.classid = 'pg_rewrite'::regclass"
    " AND v.oid <> $1::regclass"
)
_INDEXES = (
    "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
    " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass"
)
_SECURITY = (
    "SELECT relrowsecurity, relforcerowsecurity, obj_description(oid, 'pg_class')"
    " FROM pg_class WHERE oid = $1::regclass"
)
_POLICIES = (
    "SELECT policyname, permissive, roles::text[], cmd, qual, with_check FROM pg_policies"
    " WHERE schemaname = $1 AND tablename = $2 ORDER BY policyname"
)
_GRANTS = (
    "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,"
    " a.privilege_type, a.is_grantable"
    " FROM pg_class c, aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee"
    " WHERE c.oid = $1::regclass AND a.grantee <> c.relowner"
)
_INDEX_NAME = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON \S+ ")


def _shape(definition: str) -> str:
    """An index definition without its name and table: what two copies have in common."""
    return _INDEX_NAME.sub(r"CREATE \1INDEX ON ", definition)


async def _columns(conn: Any, relation: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in await conn.fetch(_COLUMNS, relation)]


async def check(conn: Any, schema: str, tables: Sequence[str]) -> None:
    """TableChanged or HasDependents when a table cannot be swapped as it is."""
    for table in tables:
        live, copy = qualified(PUBLIC, table), qualified(schema, table)
        if await _columns(conn, live) != await _columns(conn, copy):
            raise TableChanged(
                f"table {table} changed while it was rebuilt (a migration ran): start a new rebuild"
            )
        views = [r[0] for r in await conn.fetch(_DEPENDENT_VIEWS, live)]
        if views:
            raise HasDependents(f"views {', '.join(views)} depend on table {table}")


async def swap(conn: Any, schema: str, archive: str, tables: Sequence[str]) -> None:
    """Move the live tables to `archive` and the copies in `schema` into public (in the
    caller's transaction), carrying over names, security, grants and comments."""
    await check(conn, schema, tables)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(archive)}")
    live = ", ".join(qualified(PUBLIC, t) for t in tables)
    await conn.execute(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")
    for table in tables:
        await _swap_one(conn, schema, archive, table)


async def _swap_one(conn: Any, schema: str, archive: str, table: str) -> None:
    live = qualified(PUBLIC, table)
    indexes = {_shape(d): name for name, d in await conn.fetch(_INDEXES, live)}
    rls, forced, comment = await conn.fetchrow(_SECURITY, live)
    policies = await conn.fetch(_POLICIES, PUBLIC, table)
    grants = await conn.fetch(_GRANTS, live)
    await conn.execute(f"ALTER TABLE {live} SET SCHEMA {quoted(archive)}")
    await conn.execute(f"ALTER TABLE {qualified(schema, table)} SET SCHEMA {quoted(PUBLIC)}")
    await conn.execute(f"ALTER TABLE {live} RESET (autovacuum_enabled)")
    for name, definition in await conn.fetch(_INDEXES, live):
        wanted = indexes.get(_shape(definition))
        if wanted is not None and wanted != name:
            await conn.execute(f"ALTER INDEX {qualified(PUBLIC, name)} RENAME TO {quoted(wanted)}")
    if rls:
        await conn.execute(f"ALTER TABLE {live} ENABLE ROW LEVEL SECURITY")
    if forced:
        await conn.execute(f"ALTER TABLE {live} FORCE ROW LEVEL SECURITY")
    for policy in policies:
        await conn.execute(_create_policy(live, policy))
    for grantee, privilege, grantable in grants:
        option = " WITH GRANT OPTION" if grantable else ""
        await conn.execute(f"GRANT {privilege} ON {live} TO {grantee}{option}")
    if comment is not None:
        await conn.execute(f"COMMENT ON TABLE {live} IS {_literal(comment)}")


def _create_policy(table: str, policy: Any) -> str:
    name, permissive, roles, cmd, qual, with_check = policy
    to = ", ".join("PUBLIC" if r == "public" else quoted(r) for r in roles)
    sql = f"CREATE POLICY {quoted(name)} ON {table} AS {permissive} FOR {cmd} TO {to}"
    if qual is not None:
        sql += f" USING ({qual})"
    if with_check is not None:
        sql += f" WITH CHECK ({with_check})"
    return sql


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
