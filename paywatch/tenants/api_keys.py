"""API keys of the query API: create, list, revoke, rotate, authenticate (ARCHITECTURE §5).

A key is ``pw_<role>_<token>``, shown once; only its SHA-256 digest is stored
(``api_keys.key_hash``), with a readable prefix and a public id (``key_`` + 10 base32
characters, drawn by Postgres independently of the secret: migration 012). People, the CLI
and the admin routes name keys by that id, never by the secret.

A key is refused from ``expires_at`` (set at creation from a duration) and from
``revoked_at``: now when it is revoked, or the end of the grace period when it was rotated
with one, so clients can switch to the new key without a gap. Every time comparison uses
the database clock, the one that wrote the instants.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from paywatch.errors import ConfigError, PaywatchError, UnknownTenant
from paywatch.tenants.roles import ROLES, Role
from paywatch.tenants.store import tenant_exists

logger = logging.getLogger(__name__)

State = Literal["active", "expired", "revoked"]
KEY_ID_PATTERN = r"^key_[a-z2-7]{10}$"
"""A key id (the column's CHECK in migration 012)."""
DURATION_PATTERN = r"^[1-9][0-9]{0,5}[smhd]$"
"""A duration: a whole number without leading zeros (at most 999999) and one unit."""
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(DURATION_PATTERN)
LAST_USE_EVERY_S = 60.0
"""At most one last-use write per key per API process in this many seconds."""

_STATE = (
    "CASE WHEN revoked_at <= now() THEN 'revoked'"
    " WHEN expires_at <= now() THEN 'expired' ELSE 'active' END AS state"
)
_COLUMNS = (
    "key_id, tenant, role, prefix, label, created_at, created_by, expires_at, last_used_at,"
    f" revoked_at, revoked_by, replaced_by, {_STATE}"
)
LIST_SELECT = f"{_COLUMNS} FROM api_keys"
"""Columns and table of a key listing (the admin route pages it by created_at, key_id)."""
_ONE = f"SELECT {_COLUMNS} FROM api_keys WHERE tenant = $1 AND key_id = $2"  # noqa: S608
_OF_TENANT = (
    f"SELECT {_COLUMNS} FROM api_keys WHERE tenant = $1"  # noqa: S608
    " ORDER BY created_at DESC, key_id DESC"
)
_INSERT = (
    "INSERT INTO api_keys (tenant, role, key_hash, prefix, label, expires_at, created_by)"  # noqa: S608
    " VALUES ($1, $2, $3, $4, $5, now() + $6::interval, $7)"
    f" RETURNING {_COLUMNS}"
)
_REVOKE = (
    "UPDATE api_keys SET revoked_at = now(), revoked_by = $3"  # noqa: S608
    " WHERE tenant = $1 AND key_id = $2 AND (revoked_at IS NULL OR revoked_at > now())"
    f" RETURNING {_COLUMNS}"
)
_SUCCESSOR = (
    "INSERT INTO api_keys (tenant, role, key_hash, prefix, label, expires_at, created_by)"  # noqa: S608
    " SELECT tenant, role, $3, $4, label, now() + (expires_at - created_at), $5"
    " FROM api_keys WHERE tenant = $1 AND key_id = $2"
    f" RETURNING {_COLUMNS}"
)
_RETIRE = (
    "UPDATE api_keys SET revoked_at = now() + $3::interval, revoked_by = $4, replaced_by = $5"  # noqa: S608
    f" WHERE tenant = $1 AND key_id = $2 RETURNING {_COLUMNS}"
)
# Through the owner's SECURITY DEFINER functions (migration 014): the query API logs in as
# paywatch_api, whose row-level security shows no tenant's keys before one is known.
_AUTHENTICATE = f"SELECT key_id, tenant, role, {_STATE} FROM paywatch_authenticate($1)"  # noqa: S608
_TOUCH = "SELECT paywatch_touch_api_key($1)"


class UnknownApiKey(PaywatchError):
    """No key with that id in that tenant (another tenant's key is unknown too)."""


class KeyNotRotatable(PaywatchError):
    """The key is revoked, or was already rotated: rotating it again would fork its line."""


@dataclass(frozen=True)
class ApiKeyRecord:
    """Everything stored about a key except its hash."""

    key_id: str
    tenant: str
    role: Role
    prefix: str
    label: str | None
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    replaced_by: str | None
    state: State


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: the secret (shown once, never stored) and its record."""

    key: str
    record: ApiKeyRecord


@dataclass(frozen=True)
class Revocation:
    """The revoked key's record; ``changed`` is False when it was already revoked."""

    record: ApiKeyRecord
    changed: bool


@dataclass(frozen=True)
class Rotation:
    """The key a rotation made and the record of the one it replaces."""

    new: NewApiKey
    previous: ApiKeyRecord


@dataclass(frozen=True)
class KeyMatch:
    """The key a request presented, found by its hash, and whether it is usable now."""

    key_id: str
    tenant: str
    role: Role
    state: State


def hash_api_key(key: str) -> bytes:
    """SHA-256 digest (32 raw bytes) of the full API key, as stored in api_keys.key_hash."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or ``45s`` as a timedelta; ConfigError for anything else.

    Strict on purpose (no ``1.5h``, ``90``, ``1h30m``, spaces or ``0d``): a typo in an
    expiry or a grace period must be an error, never a guess about what was meant.
    """
    if not _DURATION.fullmatch(text):
        raise ConfigError(
            f"invalid duration {text!r}: a whole number from 1 to 999999 followed by one unit,"
            " s, m, h or d (e.g. 90d, 12h, 30m)"
        )
    return timedelta(**{_UNITS[text[-1]]: int(text[:-1])})


def record(row: Any) -> ApiKeyRecord:
    """An ApiKeyRecord from a row of LIST_SELECT's columns."""
    return ApiKeyRecord(**{name: row[name] for name in ApiKeyRecord.__dataclass_fields__})


def cli_actor() -> str:
    """Who a CLI change is recorded as: ``cli:<os user>`` (``cli`` when it has no name)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry (some containers)
        return "cli"


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def _check_label(label: str | None) -> str | None:
    if label is not None and not (1 <= len(label) <= 100 and "\x00" not in label):
        raise ConfigError("a label is 1 to 100 characters, without NUL")
    return label


async def _require_tenant(conn: asyncpg.Connection, tenant: str) -> None:
    if not await tenant_exists(conn, tenant):
        raise UnknownTenant(
            f"unknown tenant {tenant!r}: create it with `paywatch tenant create {tenant}`"
        )


def _secret(role: str) -> tuple[str, bytes, str]:
    """A new key for ``role``: the key, its hash and its readable prefix."""
    key = f"pw_{role}_{secrets.token_urlsafe(32)}"
    return key, hash_api_key(key), key[: len(role) + 8]


async def new_api_key(
    conn: asyncpg.Connection,
    tenant: str,
    role: str,
    *,
    expires_in: timedelta | None = None,
    label: str | None = None,
    created_by: str | None = None,
) -> NewApiKey:
    """Create a key (valid for ``expires_in`` when given) and return it with its record."""
    checked = _check_role(role)
    _check_label(label)
    await _require_tenant(conn, tenant)
    key, digest, prefix = _secret(checked)
    row = await conn.fetchrow(
        _INSERT, tenant, checked, digest, prefix, label, expires_in, created_by
    )
    return NewApiKey(key, record(row))


async def create_api_key(conn: asyncpg.Connection, tenant: str, role: str) -> str:
    """Create a key that never expires and return it; only its SHA-256 hash is stored."""
    return (await new_api_key(conn, tenant, role)).key


async def insert_api_key(
    conn: asyncpg.Connection, tenant: str, role: str, key: str, created_by: str = "seed"
) -> None:
    """Store a known key (dev seeding of documented demo keys); idempotent."""
    await conn.execute(
        "INSERT INTO api_keys (tenant, role, key_hash, prefix, created_by)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING",
        tenant,
        role,
        hash_api_key(key),
        key[: len(role) + 8],
        created_by,
    )


async def list_api_keys(conn: asyncpg.Connection, tenant: str) -> list[ApiKeyRecord]:
    """Every key of the tenant, newest first (revoked and expired ones included)."""
    await _require_tenant(conn, tenant)
    return [record(r) for r in await conn.fetch(_OF_TENANT, tenant)]


async def _known(
    conn: asyncpg.Connection, tenant: str, key_id: str, *, lock: bool = False
) -> ApiKeyRecord:
    row = await conn.fetchrow(_ONE + (" FOR UPDATE" if lock else ""), tenant, key_id)
    if row is None:
        await _require_tenant(conn, tenant)
        raise UnknownApiKey(f"tenant {tenant} has no API key {key_id!r}")
    return record(row)


async def revoke_api_key(
    conn: asyncpg.Connection, tenant: str, key_id: str, *, by: str
) -> Revocation:
    """Revoke the key now (also one in its rotation grace period); idempotent."""
    row = await conn.fetchrow(_REVOKE, tenant, key_id, by)
    if row is not None:
        return Revocation(record(row), changed=True)
    return Revocation(await _known(conn, tenant, key_id), changed=False)


async def rotate_api_key(
    conn: asyncpg.Connection,
    tenant: str,
    key_id: str,
    *,
    by: str,
    grace: timedelta | None = None,
) -> Rotation:
    """A new key with the old one's tenant, role, label and expiry length; the old one is
    refused from now, or from the end of ``grace``. An expired key may be rotated (that is
    how it is renewed); a revoked or already rotated one may not (KeyNotRotatable)."""
    async with conn.transaction():
        old = await _known(conn, tenant, key_id, lock=True)  # one rotation at a time
        if old.replaced_by is not None:
            raise KeyNotRotatable(f"API key {key_id} was already rotated to {old.replaced_by}")
        if old.revoked_at is not None:
            raise KeyNotRotatable(f"API key {key_id} is revoked: create a new key instead")
        key, digest, prefix = _secret(old.role)
        new = record(await conn.fetchrow(_SUCCESSOR, tenant, key_id, digest, prefix, by))
        retired = await conn.fetchrow(
            _RETIRE, tenant, key_id, grace or timedelta(0), by, new.key_id
        )
    return Rotation(NewApiKey(key, new), record(retired))


async def authenticate(db: Any, key_hash: bytes) -> KeyMatch | None:
    """The key with this hash and its state now (None: no such key); ``db`` is a pool or
    a connection. The caller decides what an expired or revoked key is answered."""
    row = await db.fetchrow(_AUTHENTICATE, key_hash)
    if row is None:
        return None
    return KeyMatch(row["key_id"], row["tenant"], row["role"], row["state"])


class LastUse:
    """Records when keys were last used without a database write per request.

    At most one UPDATE per key every ``every_s`` seconds in this process, sent as a
    background task: a request never waits for it, and a failed write is logged, never
    raised (the time is informative; a minute of staleness is the price of no write per
    request). Remembers at most ``max_keys`` keys, forgetting the least recently written.
    """

    def __init__(self, every_s: float = LAST_USE_EVERY_S, max_keys: int = 10_000) -> None:
        self._every_s = every_s
        self._max_keys = max_keys
        self._written: dict[str, float] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def touch(self, db: Any, key_id: str, key_hash: bytes) -> bool:
        """Schedule the write of the last use of ``key_id`` (whose hash is ``key_hash``)
        unless one is recent; True if sent."""
        now = time.monotonic()
        last = self._written.pop(key_id, None)
        if last is not None and now - last < self._every_s:
            self._written[key_id] = last
            return False
        self._written[key_id] = now
        if len(self._written) > self._max_keys:
            del self._written[next(iter(self._written))]
        task = asyncio.get_running_loop().create_task(self._write(db, key_id, key_hash))
        self._pending.add(task)  # a loop keeps only weak references to its tasks
        task.add_done_callback(self._pending.discard)
        return True

    async def _write(self, db: Any, key_id: str, key_hash: bytes) -> None:
        try:
            await db.execute(_TOUCH, key_hash)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            logger.warning("could not record the last use of API key %s: %s", key_id, exc)
