"""A policy edit (`experiment start|stop`) is computed from the policy in force under the
tenant's policy lock, so two changes at once never both start from the same policy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from paywatch.db import create_pool
from paywatch.recovery.tenant_policy import TenantPolicy
from paywatch.settings import Settings
from paywatch.tenants import policy_store
from paywatch.tenants.ops_audit import audited_policy_change
from paywatch.tenants.policy_log import open_policy_log
from paywatch.tenants.store import create_tenant
from tests.kafka_helpers import eventually

pytestmark = pytest.mark.integration

WAITING = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = $1"


async def test_an_edit_sees_the_change_committed_while_it_waited_for_the_lock(
    test_settings: Settings, pg_dsn: str, unique: str
) -> None:
    now = datetime.now(UTC)
    pool = await create_pool(pg_dsn, min_size=2, max_size=2)  # the codecs paywatch sets
    holder, editor = await pool.acquire(), await pool.acquire()
    try:
        await create_tenant(holder, unique)
        seen: list[int] = []

        def edit(policy: TenantPolicy) -> TenantPolicy:
            seen.append(policy.window_days)
            return policy.model_copy(update={"window_days": policy.window_days + 1})

        async with open_policy_log(test_settings, str(test_settings.kafka_bootstrap)) as log:
            other = holder.transaction()
            await other.start()  # another change holds the tenant's policy lock
            await holder.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"tenant-policy/{unique}"
            )
            task = asyncio.create_task(
                audited_policy_change(
                    editor, log, None, unique, edit, changed_by="test", reason=None, now=now
                )
            )
            pid = editor.get_server_pid()

            async def blocked() -> bool:
                assert not task.done(), task
                return bool(await holder.fetchval(WAITING, pid))

            await eventually(blocked, timeout=30, what="the edit waiting for the policy lock")
            await policy_store.change_policy(
                holder, log, unique, TenantPolicy().model_copy(update={"window_days": 21}),
                changed_by="other", reason=None, now=now,
            )  # fmt: skip
            await other.commit()
            change = await asyncio.wait_for(task, 30)
        assert seen == [21]  # the policy in force once it held the lock, not before
        stored = await policy_store.policy_in_force(holder, unique)
        assert stored.policy.window_days == 22 and change.revision == stored.revision
    finally:
        await pool.release(holder)
        await pool.release(editor)
        await pool.close()
