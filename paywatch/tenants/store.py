"""Postgres storage of tenants, provider secrets and API keys (all queries by tenant)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import NamedTuple

import asyncpg

from paywatch.errors import ConfigError, UnknownProvider, UnknownTenant
from paywatch.tenants.crypto import SecretBox
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
    conn: asyncpg.Connection,
    box: SecretBox,
    tenant: str,
    provider: str,
    values: Mapping[str, str],
    *,
    revoke_previous: bool = False,
) -> None:
    """Store new secret values, each sealed to its (tenant, provider, name).

    The values they supersede stay valid for the grace period so a rotation drops no
    webhook; with ``revoke_previous`` every older value of those names stops verifying now
    (a leaked secret must not keep working for the grace period).
    """
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
            if revoke_previous:
                await conn.execute(
                    "UPDATE tenant_secrets SET revoked_at = now() WHERE tenant = $1 "
                    "AND provider = $2 AND name = $3 AND revoked_at IS NULL",
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
                box.seal(value, tenant=tenant, provider=provider, name=name),
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
            if current is None or box.open(current, **_row(tenant, provider, name)) != value:
                changed[name] = value
        if changed:
            await set_secrets(conn, box, tenant, provider, changed)
    return bool(changed)


async def valid_secrets(
    conn: asyncpg.Connection, box: SecretBox, tenant: str, provider: str, grace: timedelta
) -> list[dict[str, str]] | None:
    """Candidate secret sets, newest first (None when the tenant does not exist).

    Set 0 holds every current value; set k the k-th previous value of each name still
    inside the grace period and not revoked (falling back to the current one), so a
    rotation of one name never invalidates webhooks signed with the old value.
    """
    rows = await conn.fetch(
        "SELECT t.tenant, s.name, s.value_enc FROM tenants t LEFT JOIN tenant_secrets s "
        "ON s.tenant = t.tenant AND s.provider = $2 AND s.revoked_at IS NULL "
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
            value = box.open(row["value_enc"], **_row(tenant, provider, row["name"]))
            by_name.setdefault(row["name"], []).append(value)
    depth = max((len(v) for v in by_name.values()), default=0)
    return [
        {name: vals[min(i, len(vals) - 1)] for name, vals in by_name.items()} for i in range(depth)
    ]


def _row(tenant: str, provider: str, name: str) -> dict[str, str]:
    """The binding a sealed value belongs to, as SecretBox.seal/open take it."""
    return {"tenant": tenant, "provider": provider, "name": name}


# Values that can still verify (what valid_secrets reads), so what a master key must open:
# $1 the grace period. $2 the current key id: live values sealed under another key (legacy
# Fernet rows have none), or ($2 a text[]) under neither of the known keys.
_LIVE = "revoked_at IS NULL AND (superseded_at IS NULL OR superseded_at > now() - $1::interval)"
_STALE_BATCH = (
    f"SELECT id, tenant, provider, name, value_enc FROM tenant_secrets WHERE {_LIVE} "  # noqa: S608 (constant)
    "AND master_key_id IS DISTINCT FROM $2 ORDER BY id LIMIT $3 FOR UPDATE"
)
_STALE_COUNT = (
    f"SELECT count(*) FROM tenant_secrets WHERE {_LIVE} "  # noqa: S608 (constant)
    "AND master_key_id IS DISTINCT FROM $2"
)
_STRAY = (
    f"SELECT count(*) OVER () AS n, id, tenant, provider, name, master_key_id FROM tenant_secrets "  # noqa: S608 (constant)
    f"WHERE {_LIVE} AND master_key_id <> ALL($2::text[]) ORDER BY id LIMIT 1"
)


class Rotation(NamedTuple):
    """What `paywatch secrets rotate-key` did."""

    resealed: int
    remaining: int
    """Live values still under another key than PAYWATCH_SECRET_KEY (0: rotation done)."""


async def rotate_master_key(
    conn: asyncpg.Connection, box: SecretBox, grace: timedelta, batch: int = 500
) -> Rotation:
    """Re-seal every live value under the current key, ``batch`` rows per transaction.

    Idempotent and resumable: a value already under the current key is skipped, and an
    interrupted run leaves only whole batches behind. Refuses before writing anything when
    a value carries a key id that neither key has (an unfinished earlier rotation).
    """
    await _refuse_unknown_key_ids(conn, box, grace)
    done = 0
    try:
        while count := await reseal_batch(conn, box, grace, batch):
            done += count
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}. {done} value(s) were re-sealed before it; nothing else changed "
            "(rerun once that row opens or is deleted)"
        ) from exc
    return Rotation(done, await count_not_current(conn, box, grace))


async def reseal_batch(
    conn: asyncpg.Connection, box: SecretBox, grace: timedelta, limit: int
) -> int:
    """Re-seal up to ``limit`` live values not under the current key in one transaction;
    how many (0: none left). A value that does not open rolls the batch back (ConfigError)."""
    async with conn.transaction():
        rows = await conn.fetch(_STALE_BATCH, grace, box.key_id, limit)
        sealed = []
        for row in rows:
            binding = _row(row["tenant"], row["provider"], row["name"])
            try:
                value = box.open(row["value_enc"], **binding)
            except ConfigError as exc:
                raise ConfigError(f"tenant_secrets row {row['id']}: {exc}") from exc
            sealed.append((row["id"], box.seal(value, **binding)))
        await conn.executemany("UPDATE tenant_secrets SET value_enc = $2 WHERE id = $1", sealed)
    return len(rows)


async def count_not_current(conn: asyncpg.Connection, box: SecretBox, grace: timedelta) -> int:
    """Live values sealed under another key than the current one (legacy Fernet included)."""
    count: int = await conn.fetchval(_STALE_COUNT, grace, box.key_id)
    return count


async def _refuse_unknown_key_ids(
    conn: asyncpg.Connection, box: SecretBox, grace: timedelta
) -> None:
    previous = box.previous_key_id
    known = [box.key_id] if previous is None else [box.key_id, previous]
    stray = await conn.fetchrow(_STRAY, grace, known)
    if stray is not None:
        row = f"{stray['tenant']}/{stray['provider']}/{stray['name']}"
        raise ConfigError(
            f"{stray['n']} live provider secret(s) cannot be re-sealed, nothing was: the first, "
            f"tenant_secrets row {stray['id']} ({row}), {box.unknown_key(stray['master_key_id'])}. "
            "Finish the rotation that sealed it first (PAYWATCH_SECRET_KEY_PREVIOUS set to the "
            "key it was sealed under)"
        )
