"""A tenant's policy changed from the command line (`policy set`, `experiment start|stop`).

One path for every CLI change: the change is appended to ``recovery.policies`` and stored,
its ``ops.audit`` record first (:func:`paywatch.tenants.ops_audit.audited_policy_change`),
the new policy computed from the one in force under the tenant's policy lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from paywatch.errors import InfraError, Retryable
from paywatch.ops.infra import resolve_endpoints
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.settings import Settings

Edit = Callable[[TenantPolicy], TenantPolicy]


def change_policy(
    settings: Settings, tenant: str, policy: TenantPolicy | Edit, reason: str | None
) -> Any:
    """Store `policy` (or `policy(policy in force)`) as the tenant's; its PolicyChange.

    InfraError when Kafka does not take it (then nothing changed)."""
    from paywatch.db import create_pool, migrate
    from paywatch.tenants.api_keys import cli_actor
    from paywatch.tenants.ops_audit import audited_policy_change, open_ops_log
    from paywatch.tenants.policy_log import open_policy_log

    ends = resolve_endpoints(settings)

    async def go() -> Any:
        pool = await create_pool(ends.dsn, min_size=1, max_size=1)
        try:
            async with (
                open_policy_log(settings, ends.bootstrap) as log,
                open_ops_log(settings, ends.bootstrap) as ops_log,
                pool.acquire() as conn,
            ):
                await migrate(conn)
                return await audited_policy_change(  # its ops.audit record first
                    conn, log, ops_log, tenant, policy,
                    changed_by="cli", reason=reason, now=datetime.now(UTC), actor=cli_actor(),
                )  # fmt: skip
        finally:
            await pool.close()

    try:
        return asyncio.run(go())
    except Retryable as exc:
        raise InfraError(
            f"Kafka at {ends.bootstrap} did not take the change ({exc}): the policy was not "
            "changed; is the stack running (`paywatch status`)?"
        ) from exc
