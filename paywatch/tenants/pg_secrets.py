"""Tenant provider secrets read from Postgres by the worker (thin-webhook fetches)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from paywatch.db import create_pool
from paywatch.settings import Settings
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.store import store_rotated_secrets, valid_secrets

log = logging.getLogger(__name__)


class PgSecrets:
    """Tenant secrets from Postgres for the fetch step (pool opened on first use)."""

    def __init__(self, settings: Settings, dsn: str) -> None:
        self._dsn = dsn
        self._box = SecretBox.from_settings(settings)
        self._grace = timedelta(hours=settings.secret_grace_hours)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._dsn, min_size=1, max_size=2)
            return self._pool

    async def get(self, tenant: str, provider: str) -> list[dict[str, str]] | None:
        """Fresh candidate secret sets (never cached: a rotation must show at once)."""
        async with (await self._get_pool()).acquire() as conn:
            return await valid_secrets(conn, self._box, tenant, provider, self._grace)

    async def store_rotated(self, tenant: str, provider: str, values: dict[str, str]) -> None:
        """Persist a rotated refresh token (idempotent)."""
        async with (await self._get_pool()).acquire() as conn:
            if await store_rotated_secrets(conn, self._box, tenant, provider, values):
                log.info("stored a rotated %s refresh token for tenant %s", provider, tenant)

    async def close(self) -> None:
        """Close the pool if it was opened."""
        if self._pool is not None:
            await self._pool.close()
