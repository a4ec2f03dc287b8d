"""One-shot database calls of the command line: connect, migrate, run, close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from paywatch.ops.infra import resolve_endpoints
from paywatch.settings import Settings


def db_call(settings: Settings, fn: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
    """Run `fn(conn)` against the stack's Postgres (migrated first)."""
    from paywatch.db import create_pool, migrate

    async def go() -> Any:
        pool = await create_pool(resolve_endpoints(settings).dsn, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                return await fn(conn)
        finally:
            await pool.close()

    return asyncio.run(go())
