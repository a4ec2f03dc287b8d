"""A short-lived, least-recently-used cache of tenant secrets for the ingest hot path."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from enum import Enum

Loader = Callable[[str, str], Awaitable[list[dict[str, str]] | None]]
Entry = tuple[float, list[dict[str, str]] | None]


class Miss(Enum):
    """No fresh entry in the cache (``SecretCache.cached``)."""

    MISS = "miss"


MISS = Miss.MISS

SECRET_CACHE_TTL_S = 5.0
"""How long ingest keeps a tenant's secrets: the longest a value revoked with
``paywatch tenant secret --revoke-previous`` (or one past its grace period) can still verify
in a running ingest process, counted from the revoking commit (plus one in-flight lookup).
The CLI's message and the README quote this number."""


class SecretCache:
    """Caches `valid_secrets` per (tenant, provider) for `ttl` seconds, at most `max_entries`.

    A short TTL keeps rotation, revocation and new tenants visible within seconds while a
    burst of webhooks costs one query (nothing invalidates an entry early: each ingest
    process would need a Postgres LISTEN connection for that). Unknown tenants are cached
    too (as None), so a flood for one unknown name costs one query per TTL. When full, the
    least recently used entry goes: a flood of random tenant names evicts only other cold
    names, never the tenants that are sending webhooks right now (clearing everything made
    every tenant pay a query).
    """

    def __init__(
        self,
        loader: Loader,
        ttl: float = SECRET_CACHE_TTL_S,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._loader = loader
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def cached(self, tenant: str, provider: str) -> list[dict[str, str]] | Miss | None:
        """The fresh entry, without awaiting anything (None: an unknown tenant; MISS: no
        fresh entry, ``get`` loads one). Ingest's hot path skips a coroutine with it."""
        key = (tenant, provider)
        hit = self._entries.get(key)
        if hit is not None and hit[0] > self._clock():
            self._entries.move_to_end(key)
            return hit[1]
        return MISS

    async def get(self, tenant: str, provider: str) -> list[dict[str, str]] | None:
        """Secrets for the tenant/provider, or None for an unknown tenant."""
        hit = self.cached(tenant, provider)
        if hit is not MISS:
            return hit
        key = (tenant, provider)
        value = await self._loader(tenant, provider)
        self._entries[key] = (self._clock() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return value
