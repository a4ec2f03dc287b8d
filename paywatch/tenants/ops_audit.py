"""Operator and admin actions as events: ``OpsAudit`` records on ``ops.audit`` (key tenant).

One function, :func:`record_ops`, is what the CLI commands and the API routes call. The rule
that keeps the trail whole: **no action counts without its record**. Every audited action
is a Postgres change made in a transaction; the record is appended (acks=all, idempotent
producer) inside that transaction, after the change and before the commit. Kafka down means
``Retryable`` from :func:`record_ops`, the transaction rolls back and the caller refuses the
action (CLI exit 1, API 503): nothing changed. The one gap left is the commit failing after
the broker ack; then the trail names an action that did not happen, never the reverse.

A policy change is itself an event on ``recovery.policies`` that takes effect once acked,
so its audit record must go first: :func:`audited_policy_change` appends it before the
PolicyChanged record, under the tenant's policy lock, and skips both for a no-op.

Details carry names (key ids, secret names, revisions, providers), never a secret's value.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import OpsAudit
from paywatch.schemas.topics import OPS_AUDIT
from paywatch.settings import Settings
from paywatch.tenants import policy_store
from paywatch.tenants.policy_input import parse_policy
from paywatch.tenants.policy_log import PolicyLog
from paywatch.tenants.tenant_log import TenantLog, open_tenant_log

_POLICY_LOCK = "SELECT pg_advisory_xact_lock(hashtext($1))"


class OpsLog(TenantLog[OpsAudit]):
    """Where operator actions go: ``ops.audit``, keyed by tenant."""


@dataclass(frozen=True)
class OpsEntry:
    """What an action records: the action, its tenant and subject, and its details."""

    tenant: str
    action: str
    subject: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)


@asynccontextmanager
async def open_ops_log(settings: Settings, bootstrap: str) -> AsyncIterator[OpsLog]:
    """An OpsLog on its own idempotent producer (reconnecting while Kafka is down)."""
    async with open_tenant_log(OpsLog, settings, bootstrap, OPS_AUDIT, "paywatch-ops-audit") as log:
        yield log


async def record_ops(
    log: OpsLog | None, entry: OpsEntry, *, actor: str, now: datetime | None = None
) -> Coords | None:
    """Append the action's OpsAudit record; its coordinates once the broker acked it.

    ``log`` None is an API app built without Kafka (tests and embedding only:
    ``paywatch run api`` always has one), which audits nothing. Raises Retryable when Kafka
    did not take the record: the caller must then not let the action count.
    """
    if log is None:
        return None
    at = now or datetime.now(UTC)
    record = OpsAudit(
        audit_id=str(uuid.uuid4()),
        tenant=entry.tenant,
        actor=actor,
        action=entry.action,
        subject=entry.subject,
        at=at.replace(microsecond=at.microsecond // 1000 * 1000),  # timestamp-millis
        details=dict(entry.details),
    )
    return await log.append(record)


async def audited_policy_change(
    conn: asyncpg.Connection,
    policy_log: PolicyLog,
    ops_log: OpsLog | None,
    tenant: str,
    policy: TenantPolicy | Callable[[TenantPolicy], TenantPolicy],
    *,
    changed_by: str,
    reason: str | None,
    now: datetime,
    actor: str | None = None,
) -> policy_store.PolicyChange:
    """``change_policy`` with its ops.audit record appended first (none for a no-op).

    ``policy`` is the new policy, or a function of the policy in force that returns it
    (an edit, such as starting an experiment), called under the tenant's policy lock: two
    edits at once never both start from the same policy. What it raises rolls back and
    propagates. ``actor`` is who the audit names (default ``changed_by``): the CLI's
    PolicyChanged says ``cli`` as it always did, its audit record ``cli:<os user>``.
    """
    async with conn.transaction():
        # The lock change_policy takes too (advisory locks nest in one session): nobody
        # changes the policy between this read and the change.
        await conn.execute(_POLICY_LOCK, f"tenant-policy/{tenant}")
        await policy_store.require_tenant(conn, tenant)
        current = await policy_store.policy_in_force(conn, tenant)
        edited = policy(current.policy) if callable(policy) else policy
        policy = parse_policy(edited.model_dump(mode="json"))
        if current.revision != policy.revision:
            details = {"revision": policy.revision, "previous_revision": current.revision}
            if reason:
                details["reason"] = reason[:500]
            entry = OpsEntry(tenant, "policy.change", policy.revision, details)
            await record_ops(ops_log, entry, actor=actor or changed_by, now=now)
        return await policy_store.change_policy(
            conn, policy_log, tenant, policy, changed_by=changed_by, reason=reason, now=now
        )
