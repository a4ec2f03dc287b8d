"""A short-lived cache of tenant secrets for the ingest hot path."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

Loader = Callable[[str, str], Awaitable[list[dict[str, str]] | None]]


class SecretCache:
    """Caches `valid_secrets` per (tenant, provider) for `ttl` seconds.

    A short TTL keeps rotation and new tenants visible within seconds while a burst
    of webhooks costs one query. Unknown tenants are cached too (as None).
    """

    def __init__(self, loader: Loader, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self._loader = loader
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[tuple[str, str], tuple[float, list[dict[str, str]] | None]] = {}

    async def get(self, tenant: str, provider: str) -> list[dict[str, str]] | None:
        """Secrets for the tenant/provider, or None for an unknown tenant."""
        key = (tenant, provider)
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await self._loader(tenant, provider)
        if len(self._entries) >= self._max:
            self._entries.clear()  # bounded: a flood of random tenant names cannot grow memory
        self._entries[key] = (now + self._ttl, value)
        return value
