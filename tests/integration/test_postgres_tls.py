"""A DSN's TLS parameters are honoured by paywatch's pools, never downgraded to clear text.

asyncpg reads ``sslmode``/``sslrootcert``... from the DSN itself and create_pool passes the
DSN through untouched. The embedded Postgres has no TLS, so a DSN that demands it must fail
to connect, saying why, instead of talking in the clear.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import certifi
import pytest

from paywatch.db import create_pool, migrate_dsn


def with_query(dsn: str, query: str) -> str:
    parts = urlsplit(dsn)
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit(parts._replace(query=joined))


@pytest.mark.parametrize("mode", ["require", "verify-full"])
async def test_a_dsn_demanding_tls_is_refused_by_a_server_without_it(
    pg_dsn: str, mode: str
) -> None:
    # verify-full needs a CA file before it even connects: any real bundle will do.
    dsn = with_query(pg_dsn, f"sslmode={mode}&sslrootcert={certifi.where()}")
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        await create_pool(dsn, min_size=1, max_size=1)
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        await migrate_dsn(dsn)


async def test_the_same_server_answers_in_clear_when_the_dsn_allows_it(pg_dsn: str) -> None:
    """The refusal above is about TLS, not a server that is down. ``prefer`` (asyncpg's
    default without ``sslmode``) does fall back to clear text: prod DSNs should say
    ``require`` or ``verify-full``."""
    for mode in ("disable", "prefer"):
        pool = await create_pool(with_query(pg_dsn, f"sslmode={mode}"), min_size=1, max_size=1)
        try:
            assert (
                await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                is False
            )
        finally:
            await pool.close()
