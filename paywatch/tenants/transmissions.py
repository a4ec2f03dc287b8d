"""PayPal transmission ids already seen, per tenant, in Postgres: the replay guard's memory.

Why Postgres: the guard (``paywatch.providers.paypal.replay``) must hold across ingest
restarts and for every ingest process at once, or a forged body could simply be sent to
another process or after a deploy. One row per (tenant, transmission id) with the SHA-256
of the first body bytes seen; ``INSERT ... ON CONFLICT DO NOTHING`` makes the first writer
win even when two processes race, and a later writer reads that row and compares.

Rows older than the retention (the freshness window plus a margin: the window refuses
those transmissions anyway) are deleted by whichever ingest process notices first, at
most once per ``prune_every_s`` each, so the table stays about one window of PayPal
traffic deep without a separate job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg

from paywatch.errors import Retryable
from paywatch.providers.paypal.replay import body_digest, check_first_body

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def remember(
    conn: asyncpg.Connection, tenant: str, transmission_id: str, digest: bytes, now: datetime
) -> bytes:
    """Record ``digest`` for the id unless one is recorded; return the one recorded first."""
    for _ in range(2):
        first: bytes | None = await conn.fetchval(
            "INSERT INTO paypal_transmissions (tenant, transmission_id, body_sha256, first_seen)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING body_sha256",
            tenant,
            transmission_id,
            digest,
            now,
        )
        if first is None:  # a row exists (a new statement sees it even if just committed)
            first = await conn.fetchval(
                "SELECT body_sha256 FROM paypal_transmissions"
                " WHERE tenant = $1 AND transmission_id = $2",
                tenant,
                transmission_id,
            )
        if first is not None:
            return first
        # Pruned between the two statements: only a row past retention, so insert again.
    raise Retryable("PayPal transmission id could not be recorded; retry")


async def prune(conn: asyncpg.Connection, before: datetime) -> int:
    """Delete rows first seen before ``before``; how many went."""
    status: str = await conn.execute(
        "DELETE FROM paypal_transmissions WHERE first_seen < $1", before
    )
    return int(status.rsplit(" ", 1)[-1])


class TransmissionLedger:
    """The ingest's replay guard for PayPal certificate mode over a connection pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        retention: timedelta | None,
        *,
        prune_every_s: float = PRUNE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._retention = retention
        self._prune_every = prune_every_s
        self._clock = clock
        self._next_prune = clock()  # the first check prunes what earlier runs left

    async def check(self, tenant: str, transmission_id: str, body: bytes, now: datetime) -> None:
        """Refuse (TransmissionReplayed) an id seen before with other bytes; else remember it.

        Retryable when Postgres cannot answer: the ingest answers 503 and PayPal retries.
        """
        digest = body_digest(body)
        try:
            async with self._pool.acquire() as conn:
                first = await remember(conn, tenant, transmission_id, digest, now)
                await self._maybe_prune(conn, now)
        except _DB_ERRORS as exc:
            raise Retryable(f"PayPal transmission ids unavailable: {type(exc).__name__}") from exc
        check_first_body(first, digest)

    async def _maybe_prune(self, conn: asyncpg.Connection, now: datetime) -> None:
        if self._retention is None or self._clock() < self._next_prune:
            return
        self._next_prune = self._clock() + self._prune_every
        try:
            gone = await prune(conn, now - self._retention)
        except _DB_ERRORS as exc:  # the guard itself worked; the next prune catches up
            log.warning("paypal_transmissions not pruned: %s", type(exc).__name__)
            return
        if gone:
            log.info("pruned %d PayPal transmission ids older than %s", gone, self._retention)
