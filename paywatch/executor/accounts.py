"""Which tenants charge which providers live (``charge_accounts``, migration 017).

Enabling checks that the tenant exists and that its credentials for the provider are all
set (names only: values are never read out here), so a tenant cannot be switched to live
charging that could only fail. Disabling is immediate for commands not yet claimed (the
executors re-read the list within live.ACCOUNTS_TTL_S).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from paywatch.charging.registry import CREDENTIALS, LIVE_PROVIDERS
from paywatch.errors import PaywatchError
from paywatch.tenants.policy_store import require_tenant

OPTIONAL = frozenset({"api_base"})
"""Credential names a client can do without (it has a default)."""


class NotChargeable(PaywatchError):
    """Live charging cannot be turned on: unknown provider or credentials missing."""


@dataclass(frozen=True)
class Account:
    """One live (tenant, provider), with its claims' state."""

    provider: str
    enabled_at: datetime
    enabled_by: str | None
    waiting: int
    """Claims without an outcome yet (provider unavailable, or in flight)."""
    last_error: str | None


def required(provider: str) -> tuple[str, ...]:
    """The secret names a provider's client cannot do without."""
    if provider not in LIVE_PROVIDERS:
        raise NotChargeable(
            f"{provider!r} has no live retries in paywatch: one of {', '.join(LIVE_PROVIDERS)}"
        )
    return tuple(n for n in CREDENTIALS[provider] if n not in OPTIONAL)


async def enable(conn: asyncpg.Connection, tenant: str, provider: str, actor: str) -> bool:
    """Turn live charging on; False when it already was. NotChargeable when it cannot be."""
    names = required(provider)
    await require_tenant(conn, tenant)
    have = {
        r["name"]
        for r in await conn.fetch(
            "SELECT DISTINCT name FROM tenant_secrets"
            " WHERE tenant = $1 AND provider = $2 AND revoked_at IS NULL AND superseded_at IS NULL",
            tenant,
            provider,
        )
    }
    missing = [n for n in names if n not in have]
    if missing:
        raise NotChargeable(
            f"tenant {tenant!r} has no {provider} {', '.join(missing)} secret: set it first,"
            f" e.g. printf '{missing[0]}=%s\\n' \"$VALUE\""
            f" | paywatch tenant secret {tenant} {provider} -"
        )
    row = await conn.fetchrow(
        "INSERT INTO charge_accounts (tenant, provider, enabled_by) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING tenant",
        tenant,
        provider,
        actor,
    )
    return row is not None


async def disable(conn: asyncpg.Connection, tenant: str, provider: str) -> bool:
    """Back to the sandbox; False when it was not live."""
    required(provider)
    await require_tenant(conn, tenant)
    done = await conn.fetchval(
        "DELETE FROM charge_accounts WHERE tenant = $1 AND provider = $2 RETURNING tenant",
        tenant,
        provider,
    )
    return done is not None


async def accounts(conn: asyncpg.Connection, tenant: str) -> list[Account]:
    """The tenant's live providers and how their claims stand."""
    await require_tenant(conn, tenant)
    rows = await conn.fetch(
        """
        SELECT a.provider, a.enabled_at, a.enabled_by,
               count(c.command_id) FILTER (WHERE e.command_id IS NULL) AS waiting,
               (array_agg(c.last_error ORDER BY c.lease_until DESC)
                    FILTER (WHERE e.command_id IS NULL AND c.last_error IS NOT NULL))[1]
                   AS last_error
        FROM charge_accounts a
        LEFT JOIN charge_claims c ON c.tenant = a.tenant AND c.provider = a.provider
        LEFT JOIN executed_commands e ON e.tenant = c.tenant AND e.command_id = c.command_id
        WHERE a.tenant = $1
        GROUP BY a.provider, a.enabled_at, a.enabled_by
        ORDER BY a.provider
        """,
        tenant,
    )
    return [Account(**dict(r)) for r in rows]
