"""Tenant recovery policies in Postgres: read the one in force, change it, list its history.

A change is an event: ``PolicyChanged`` is appended to ``recovery.policies`` (key tenant)
through an idempotent acks=all producer and counts only once the broker acknowledged it
(Kafka down: ``Retryable``, nothing changed). The ``tenant_policies`` row and its history
row are then upserted directly, so a read right after the change sees it; the projector
writes the same rows again later, which changes nothing. Changes of one tenant are
serialised by a Postgres advisory lock held from reading the policy in force to the
upsert, so every change names the revision it replaced and ``changed_at`` never goes back.
Changing to the revision in force (stored, or the defaults) is a no-op: no event.

Shared by the API and the CLI; validation is :mod:`paywatch.tenants.policy_input`, the log
:mod:`paywatch.tenants.policy_log`, the rows :mod:`paywatch.tenants.policy_rows`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from paywatch.errors import UnknownTenant
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PolicyChanged
from paywatch.tenants import policy_rows as rows
from paywatch.tenants.policy_input import canonical_json, parse_policy
from paywatch.tenants.policy_log import PolicyLog
from paywatch.tenants.store import tenant_exists

_LOCK = "SELECT pg_advisory_xact_lock(hashtext($1))"
_IN_FORCE = (
    "SELECT policy, revision, previous_revision, changed_at, changed_by, reason"
    " FROM tenant_policies WHERE tenant = $1"
)
_HISTORY = (
    'SELECT topic, partition, "offset", revision, previous_revision, policy, changed_at,'
    " changed_by, reason FROM tenant_policy_changes WHERE tenant = $1{after}"
    ' ORDER BY changed_at DESC, topic DESC, partition DESC, "offset" DESC LIMIT {limit}'
)
_AFTER = ' AND (changed_at, topic, partition, "offset") < ($2, $3, $4, $5)'
_MILLI = timedelta(milliseconds=1)

Source = Literal["stored", "default"]
HistoryKey = tuple[datetime, str, int, int]
"""(changed_at, topic, partition, offset): the newest-first order of a tenant's changes."""


@dataclass(frozen=True)
class CurrentPolicy:
    """A tenant's policy now: the stored one, or the defaults when none was ever stored."""

    tenant: str
    policy: TenantPolicy
    revision: str
    source: Source
    previous_revision: str | None = None
    changed_at: datetime | None = None
    changed_by: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PolicyChange:
    """What `change_policy` did: `changed` is False for a no-op (no event written)."""

    policy: TenantPolicy
    revision: str
    previous_revision: str | None
    changed: bool
    at: Coords | None = None
    """Where the PolicyChanged record sits in Kafka (None for a no-op)."""


@dataclass(frozen=True)
class PolicyHistoryRow:
    """One PolicyChanged of a tenant, as projected into ``tenant_policy_changes``."""

    revision: str
    previous_revision: str | None
    policy: dict[str, Any]
    changed_at: datetime
    changed_by: str
    reason: str | None
    at: Coords

    @property
    def key(self) -> HistoryKey:
        """Its place in the newest-first order (the cursor of a history page)."""
        return (self.changed_at, self.at.topic, self.at.partition, self.at.offset)


def _stored(data: Any) -> TenantPolicy:
    """A policy read back from jsonb (a dict, or its text on a connection without codecs)."""
    return parse_policy(json.loads(data) if isinstance(data, str) else data)


async def require_tenant(conn: asyncpg.Connection, tenant: str) -> None:
    """UnknownTenant unless the tenant exists."""
    if not await tenant_exists(conn, tenant):
        raise UnknownTenant(
            f"unknown tenant {tenant!r}: create it with `paywatch tenant create {tenant}`"
        )


async def policy_in_force(conn: asyncpg.Connection, tenant: str) -> CurrentPolicy:
    """The tenant's stored policy, else the defaults (source ``default``)."""
    row = await conn.fetchrow(_IN_FORCE, tenant)
    if row is None:
        defaults = TenantPolicy()
        return CurrentPolicy(tenant, defaults, defaults.revision, "default")
    return CurrentPolicy(
        tenant=tenant,
        policy=_stored(row["policy"]),
        revision=row["revision"],
        source="stored",
        previous_revision=row["previous_revision"],
        changed_at=row["changed_at"],
        changed_by=row["changed_by"],
        reason=row["reason"],
    )


async def change_policy(
    conn: asyncpg.Connection,
    log: PolicyLog,
    tenant: str,
    policy: TenantPolicy,
    *,
    changed_by: str,
    reason: str | None,
    now: datetime,
) -> PolicyChange:
    """Make `policy` the tenant's policy: event first (after the ack), then the read model."""
    policy = parse_policy(policy.model_dump(mode="json"))  # canonical, whatever the caller
    async with conn.transaction():
        await conn.execute(_LOCK, f"tenant-policy/{tenant}")
        await require_tenant(conn, tenant)
        current = await policy_in_force(conn, tenant)
        if current.revision == policy.revision:
            return PolicyChange(policy, policy.revision, current.previous_revision, False)
        change = PolicyChanged(
            tenant=tenant,
            revision=policy.revision,
            policy_json=canonical_json(policy),
            previous_revision=current.revision if current.source == "stored" else None,
            changed_at=_after(now, current.changed_at),
            changed_by=changed_by,
            reason=reason,
        )
        at = await log.append(change)
        values = rows.row(change, at)
        await conn.execute(rows.INSERT_CHANGE, *values)
        await conn.execute(rows.UPSERT, *values)
    return PolicyChange(policy, policy.revision, change.previous_revision, True, at)


def _after(now: datetime, previous: datetime | None) -> datetime:
    """`now` at millisecond precision (Avro timestamp-millis), later than `previous`."""
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    return now if previous is None or now > previous else previous + _MILLI


async def policy_history(
    conn: asyncpg.Connection, tenant: str, limit: int, before: HistoryKey | None = None
) -> list[PolicyHistoryRow]:
    """The tenant's changes, newest first, strictly after the `before` key when given."""
    args: list[object] = [tenant, *(before or ())]
    args.append(limit)
    # Only constant fragments are formatted in; every value is a $n parameter.
    query = _HISTORY.format(after=_AFTER if before else "", limit=f"${len(args)}")
    found = await conn.fetch(query, *args)
    return [_history_row(r) for r in found]


def _history_row(row: Any) -> PolicyHistoryRow:
    policy = row["policy"]
    return PolicyHistoryRow(
        revision=row["revision"],
        previous_revision=row["previous_revision"],
        policy=json.loads(policy) if isinstance(policy, str) else policy,
        changed_at=row["changed_at"],
        changed_by=row["changed_by"],
        reason=row["reason"],
        at=Coords(row["topic"], row["partition"], row["offset"]),
    )
