"""Postgres storage of tenants, provider secrets and API keys (all queries by tenant)."""

from __future__ import annotations

import re
import secrets as pysecrets
from collections.abc import Mapping
from datetime import timedelta

import asyncpg

from paywatch.errors import ConfigError, UnknownProvider, UnknownTenant
from paywatch.tenants.api_keys import hash_api_key
from paywatch.tenants.crypto import SecretBox
from paywatch.tenants.roles import ROLES
from paywatch.tenants.secret_names import SECRET_NAMES

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""A tenant name, matched whole (``fullmatch``: ``$`` would let a trailing newline in)."""


def check_tenant_name(name: str) -> str:
    """Return the name if it is a valid tenant name, else raise ConfigError."""
    if not TENANT_RE.fullmatch(name):
        raise ConfigError(
            f"invalid tenant name {name!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


async def create_tenant(conn: asyncpg.Connection, name: str) -> bool:
    """Create a tenant; False when it already existed."""
    row = await conn.fetchrow(
        "INSERT INTO tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING RETURNING tenant",
        check_tenant_name(name),
    )
    return row is not None


async def tenant_exists(conn: asyncpg.Connection, name: str) -> bool:
    """True when the tenant exists."""
    return bool(await conn.fetchval("SELECT 1 FROM tenants WHERE tenant = $1", name))


async def _require_tenant(conn: asyncpg.Connection, name: str) -> None:
    if not await tenant_exists(conn, name):
        raise UnknownTenant(
            f"unknown tenant {name!r}: create it with `paywatch tenant create {name}`"
        )


def check_secret_names(provider: str, values: Mapping[str, str]) -> None:
    """Raise when the provider or one of the secret names is unknown, or a value is empty."""
    allowed = SECRET_NAMES.get(provider)
    if allowed is None:
        raise UnknownProvider(f"unknown provider {provider!r}: one of {', '.join(SECRET_NAMES)}")
    if not values:
        raise ConfigError(f"no secrets given: use NAME=VALUE with NAME in {', '.join(allowed)}")
    for name, value in values.items():
        if name not in allowed:
            raise ConfigError(
                f"unknown secret {name!r} for {provider}: expected one of {', '.join(allowed)}"
            )
        if not value:
            raise ConfigError(f"secret {name!r} is empty")


async def set_secrets(
    conn: asyncpg.Connection, box: SecretBox, tenant: str, provider: str, values: Mapping[str, str]
) -> None:
    """Store new secret values; the previous ones stay valid for the grace period."""
    check_secret_names(provider, values)
    async with conn.transaction():
        await _require_tenant(conn, tenant)
        for name, value in values.items():
            await conn.execute(
                "UPDATE tenant_secrets SET superseded_at = now() WHERE tenant = $1 "
                "AND provider = $2 AND name = $3 AND superseded_at IS NULL",
                tenant,
                provider,
                name,
            )
            await conn.execute(
                "INSERT INTO tenant_secrets (tenant, provider, name, value_enc) "
                "VALUES ($1, $2, $3, $4)",
                tenant,
                provider,
                name,
                box.seal(value),
            )


async def store_rotated_secrets(
    conn: asyncpg.Connection, box: SecretBox, tenant: str, provider: str, values: Mapping[str, str]
) -> bool:
    """Store values a provider rotated (OAuth refresh tokens) unless already current.

    Idempotent: the fetch step reports the newest refresh token until the stored one
    catches up, possibly from several workers; only a value that differs from the
    current one is written (the previous one then stays valid for the grace period).
    Returns True when something was written.
    """
    check_secret_names(provider, values)
    async with conn.transaction():
        # One writer per tenant/provider at a time, so two workers never both rotate.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{tenant}/{provider}")
        changed: dict[str, str] = {}
        for name, value in values.items():
            current = await conn.fetchval(
                "SELECT value_enc FROM tenant_secrets WHERE tenant = $1 AND provider = $2 "
                "AND name = $3 AND superseded_at IS NULL ORDER BY created_at DESC, id DESC "
                "LIMIT 1",
                tenant,
                provider,
                name,
            )
            if current is None or box.open(current) != value:
                changed[name] = value
        if changed:
            await set_secrets(conn, box, tenant, provider, changed)
    return bool(changed)


async def valid_secrets(
    conn: asyncpg.Connection, box: SecretBox, tenant: str, provider: str, grace: timedelta
) -> list[dict[str, str]] | None:
    """Candidate secret sets, newest first (None when the tenant does not exist).

    Set 0 holds every current value; set k the k-th previous value of each name still
    inside the grace period (falling back to the current one), so a rotation of one
    name never invalidates webhooks signed with the old value.
    """
    rows = await conn.fetch(
        "SELECT t.tenant, s.name, s.value_enc FROM tenants t LEFT JOIN tenant_secrets s "
        "ON s.tenant = t.tenant AND s.provider = $2 "
        "AND (s.superseded_at IS NULL OR s.superseded_at > now() - $3::interval) "
        "WHERE t.tenant = $1 ORDER BY s.created_at DESC, s.id DESC",
        tenant,
        provider,
        grace,
    )
    if not rows:
        return None
    by_name: dict[str, list[str]] = {}
    for row in rows:
        if row["name"] is not None:
            by_name.setdefault(row["name"], []).append(box.open(row["value_enc"]))
    depth = max((len(v) for v in by_name.values()), default=0)
    return [
        {name: vals[min(i, len(vals) - 1)] for name, vals in by_name.items()} for i in range(depth)
    ]


async def create_api_key(conn: asyncpg.Connection, tenant: str, role: str) -> str:
    """Create an API key and return it; only its SHA-256 hash is stored."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    await _require_tenant(conn, tenant)
    key = f"pw_{role}_{pysecrets.token_urlsafe(32)}"
    await conn.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ($1, $2, $3, $4)",
        tenant,
        role,
        hash_api_key(key),
        key[: len(role) + 8],
    )
    return key


async def insert_api_key(conn: asyncpg.Connection, tenant: str, role: str, key: str) -> None:
    """Store a known key (dev seeding of documented demo keys); idempotent."""
    await conn.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (key_hash) DO NOTHING",
        tenant,
        role,
        hash_api_key(key),
        key[: len(role) + 8],
    )
